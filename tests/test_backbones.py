"""Backbone basics on the default row: lookup by name/alias, block unfreezing, BatchNorm policy, head shapes.
(The same contracts over every row of the table: tests/test_registry.py.)"""

from __future__ import annotations

import dataclasses

import pytest
from torch.nn.modules.batchnorm import _BatchNorm

from transferkit.backbones.registry import _index, get_backbone
from transferkit.backbones.weights import build_network
from transferkit.errors import UserError
from transferkit.model import Backbone, HeadConfig, TransferModel
from transferkit.training.config import TrainConfig


@pytest.mark.parametrize("name", ["efficientnet_lite0", "EfficientNet-Lite0", "EFFICIENTNETLITE0",
                                  "tf_efficientnet_lite0"])
def test_aliases_are_case_insensitive(name: str) -> None:
    assert get_backbone(name).name == "efficientnet_lite0"


def test_unknown_backbone_names_the_choices() -> None:
    with pytest.raises(UserError, match=r"unknown backbone 'resnet9000'.*efficientnet_lite0"):
        get_backbone("resnet9000")


def _random_model(spec_name: str, classes: int = 4, head: HeadConfig = HeadConfig()) -> TransferModel:
    spec = get_backbone(spec_name)
    net, info = build_network(spec, "random")
    net.reset_classifier(0)
    return TransferModel(Backbone(spec, net, spec.preprocessing, info), [f"c{i}" for i in range(classes)], head)


def test_unfreeze_top_k_makes_exactly_those_blocks_trainable() -> None:
    model = _random_model("efficientnet_lite0")
    names = model.spec.block_names()
    for k in range(len(names) + 2):
        model.unfreeze_top(k)
        expected = names[len(names) - min(k, len(names)):]
        assert model.trainable_blocks() == expected
        assert all(p.requires_grad for p in model.head.parameters())
    model.unfreeze_top(None)
    assert model.trainable_blocks() == names
    model.freeze_base()
    assert model.trainable_blocks() == []
    assert not any(p.requires_grad for p in model.base.parameters())


def test_batchnorm_policy_frozen_blocks_stay_in_inference_mode() -> None:
    model = _random_model("efficientnet_lite0")
    model.unfreeze_top(2)
    model.train()
    for name, module in model.base.named_modules():
        if isinstance(module, _BatchNorm):
            assert not module.training, f"{name} should be in inference mode"
    model.train_bn = True
    model.train()
    trainable = {n for n, m in model.base.named_modules() if isinstance(m, _BatchNorm) and m.training}
    assert trainable and all(n.startswith(("blocks.6", "bn2")) for n in trainable)
    model.eval()
    assert not any(m.training for m in model.modules())


def test_head_shapes_follow_config() -> None:
    plain = _random_model("efficientnet_lite0", classes=3)
    hidden = _random_model("efficientnet_lite0", classes=3, head=HeadConfig(hidden=32, dropout=0.5))
    assert [type(m).__name__ for m in plain.head] == ["Dropout", "Linear"]
    assert [type(m).__name__ for m in hidden.head] == ["Linear", "ReLU", "Dropout", "Linear"]
    assert hidden.head[0].in_features == 1280 and hidden.head[-1].out_features == 3


def test_negative_unfreeze_is_a_programming_error() -> None:
    """Bad input from a user is caught where it enters (TrainConfig, the CLI); a negative count reaching the
    model is a caller's bug, so it is a ValueError, not a UserError."""
    with pytest.raises(ValueError, match="0 or more blocks"):
        _random_model("efficientnet_lite0").unfreeze_top(-1)
    with pytest.raises(UserError, match="unfreeze"):
        TrainConfig(unfreeze_blocks=-1)


def test_a_table_with_two_rows_answering_to_one_name_is_refused() -> None:
    spec = get_backbone("efficientnet_lite0")
    clash = dataclasses.replace(spec, name="other", aliases=("EFFICIENTNET-LITE0",))
    with pytest.raises(RuntimeError, match="'EFFICIENTNET-LITE0' names both efficientnet_lite0 and other"):
        _index((spec, clash))
