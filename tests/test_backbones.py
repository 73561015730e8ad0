"""Backbone basics on the default row: lookup by name/alias, block unfreezing, BatchNorm policy, head shapes.
(The same contracts over every row of the table: tests/test_registry.py.)"""

from __future__ import annotations

import dataclasses

import pytest
from torch.nn.modules.batchnorm import _BatchNorm

from transferkit.backbones.registry import KERAS_WITHOUT_A_ROW, _index, get_backbone
from transferkit.backbones.table import BACKBONES
from transferkit.backbones.weights import build_network
from transferkit.errors import UserError
from transferkit.model import Backbone, HeadConfig, TransferModel
from transferkit.training.config import TrainConfig


@pytest.mark.parametrize("name", ["efficientnet_lite0", "EfficientNet-Lite0", "EFFICIENTNETLITE0",
                                  "tf_efficientnet_lite0"])
def test_aliases_are_case_insensitive(name: str) -> None:
    assert get_backbone(name).name == "efficientnet_lite0"


# Every name in keras.applications (Keras 3): each has a row or an entry saying why not.
KERAS_APPLICATIONS = (
    "ConvNeXtBase", "ConvNeXtLarge", "ConvNeXtSmall", "ConvNeXtTiny", "ConvNeXtXLarge", "DenseNet121",
    "DenseNet169", "DenseNet201", *(f"EfficientNetB{i}" for i in range(8)), "EfficientNetV2B0", "EfficientNetV2B1",
    "EfficientNetV2B2", "EfficientNetV2B3", "EfficientNetV2L", "EfficientNetV2M", "EfficientNetV2S",
    "InceptionResNetV2", "InceptionV3", "MobileNet", "MobileNetV2", "MobileNetV3Large", "MobileNetV3Small",
    "NASNetLarge", "NASNetMobile", "ResNet101", "ResNet101V2", "ResNet152", "ResNet152V2", "ResNet50", "ResNet50V2",
    "VGG16", "VGG19", "Xception",
)
WRONG_NAMES = ("resnet9000", "resnt50", "EficientNetB0", "vit_b32", "qqqqqq", "", "NASNetMobile", "resnet152-v2",
               "ConvNeXtXLarge", "efficientnetv2b0", "x" * 200, "\x00\n" * 100, "é" * 200,
               "\U000e0001" * 200)
CANONICAL = {spec.name for spec in BACKBONES}


def _message(name: str) -> str:
    with pytest.raises(UserError) as error:
        get_backbone(name)
    return str(error.value)


@pytest.mark.parametrize("name", WRONG_NAMES, ids=lambda n: repr(n[:12]))
def test_unknown_backbone_message_is_one_short_line(name: str) -> None:
    message = _message(name)
    assert len(message) < 300 and "\n" not in message, message


@pytest.mark.parametrize(("name", "first"), [("resnet9000", "resnet50"), ("resnt50", "resnet50"),
                                             ("EficientNetB0", "efficientnet_b0"), ("vit_b32", "vit_b16")])
def test_a_near_miss_gets_up_to_three_canonical_names(name: str, first: str) -> None:
    """Aliases are matched too, but the suggestion is always the row's own name, each once."""
    message = _message(name)
    assert message.startswith(f"unknown backbone {name!r}: did you mean {first}"), message
    suggested = message.split("did you mean ", 1)[1].split("?")[0].split(", ")
    assert 1 <= len(suggested) <= 3 and len(set(suggested)) == len(suggested)
    assert set(suggested) <= CANONICAL, suggested


def test_nothing_close_points_to_the_list() -> None:
    assert _message("qqqqqq") == "unknown backbone 'qqqqqq': see `transferkit models` for the list"


def test_a_long_name_is_echoed_truncated() -> None:
    message = _message("x" * 200)
    assert "x" * 40 in message and "x" * 60 not in message and "…" in message


@pytest.mark.parametrize(("name", "nearest"), [("NASNetMobile", "mobilenet_v3_large"),
                                               ("resnet152-v2", "resnet152"), ("ResNet152V2", "resnet101_v2")])
def test_keras_names_without_a_pytorch_port_say_so(name: str, nearest: str) -> None:
    message = _message(name)
    assert "no pretrained PyTorch port in timm" in message and nearest in message, message


def test_every_keras_application_has_a_row_or_says_why_not() -> None:
    absent = {key.lower() for key in KERAS_WITHOUT_A_ROW}
    for name in KERAS_APPLICATIONS:
        has_row = name.lower() in {alias.lower() for spec in BACKBONES for alias in (spec.name, *spec.aliases)}
        assert has_row != (name.lower() in absent), f"{name}: a row and an entry, or neither"
    for entry in KERAS_WITHOUT_A_ROW.values():
        assert entry.nearest and all(get_backbone(n).name == n for n in entry.nearest), entry


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
