"""Features from any depth ("deep-layer" vs "mid-layer" extraction): the base cut after a named block."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

import transferkit
from transferkit.backbones.registry import get_backbone, resolve_layer
from transferkit.backbones.weights import build_network
from transferkit.cli.main import main
from transferkit.errors import UserError
from transferkit.model import Backbone, HeadConfig, LayerFeatures, TransferModel


def test_resolve_layer_names_and_depths() -> None:
    spec = get_backbone("efficientnet_lite0")  # stem, blocks.0 … blocks.6, conv_head
    assert resolve_layer(spec, None) is None and resolve_layer(spec, "deep") is None
    assert spec.block_names()[resolve_layer(spec, "mid")] == "blocks.3"
    assert spec.block_names()[resolve_layer(spec, "shallow")] == "blocks.1"
    assert resolve_layer(spec, "blocks.4") == 5
    assert resolve_layer(spec, "conv_head") is None  # the top block is the whole base
    with pytest.raises(UserError, match=r"unknown layer 'block9'.*deep, mid, shallow.*blocks\.3"):
        resolve_layer(spec, "block9")


@pytest.mark.parametrize("name,layer,channels", [
    ("efficientnet_lite0", "blocks.3", 80), ("resnet50", "layer2", 512), ("densenet121", "denseblock2", 256),
    ("inception_v3", "mid", None), ("convnext_tiny", "stages.1", 192), ("vit_b16", "mid", 768),
])
def test_cut_base_contract(name: str, layer: str, channels: int | None) -> None:
    spec = get_backbone(name)
    net, info = build_network(spec, "random")
    net.reset_classifier(0)
    bn_before = {n: m.running_mean.clone() for n, m in net.named_modules() if isinstance(m, _BatchNorm)}
    model = TransferModel(Backbone(spec, net, spec.preprocessing, info, layer), ["a", "b", "c"], HeadConfig())
    assert isinstance(model.base, LayerFeatures) and model.layer is not None
    if channels is not None:
        assert model.feature_dim == channels
    size = spec.preprocessing.input_size if name == "vit_b16" else 96
    with torch.no_grad():
        model.eval()
        assert model.features(torch.randn(2, 3, size, size)).shape == (2, model.feature_dim)
        assert model(torch.randn(2, 3, size, size)).shape == (2, 3)
    # only the blocks up to the cut exist and every remaining parameter is in exactly one group
    names = spec.block_names()
    used = names[:names.index(model.layer) + 1]
    groups = model.param_groups()
    assert [g.name for g in groups] == [*used, "head"]
    ids = [id(p) for g in groups for p in g.params]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert len(list(model.base.parameters())) < len(list(net.parameters()))
    model.unfreeze_top(1)
    assert model.trainable_blocks() == [model.layer]
    for n, m in model.base.body.named_modules():  # building the cut ran no BatchNorm update
        if isinstance(m, _BatchNorm):
            assert torch.equal(m.running_mean, bn_before[n]), n


def test_train_with_a_mid_layer_round_trips_through_the_bundle(
        photo_data: Path, photo_test_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["train", str(photo_data), "--out", str(out), "--layer", "mid", "--strategy", "finetune",
                 "--epochs", "1", "--fine-tune-epochs", "1", "--batch-size", "8"]) == 0
    assert "features from block blocks.3" in capsys.readouterr().out
    meta = json.loads((out / "model.json").read_text())
    assert meta["layer"] == "blocks.3" and meta["train_config"]["layer"] == "mid"
    assert main(["evaluate", str(out), str(photo_test_data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] >= 0.75
    assert main(["predict", str(out), str(photo_test_data / "cat"), "--json", "--top", "1"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sum(r["predictions"][0]["label"] == "cat" for r in rows) >= 3


def _private_imports(source: Path) -> list[str]:
    """Modules named in `source`'s imports that some library keeps private (a path part starting with `_`)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    ours = ("transferkit", "__future__")
    return [n for n in names if not n.startswith(ours) and any(p.startswith("_") for p in n.split("."))]


def test_the_package_imports_no_private_module_of_a_library() -> None:
    """Cutting the base uses timm's public `create_feature_extractor`: a private module (`timm.models._features_fx`)
    may move in any release, and the pinned range in pyproject.toml only vouches for the public API."""
    package = Path(transferkit.__file__).parent
    found = {str(p.relative_to(package)): _private_imports(p) for p in sorted(package.rglob("*.py"))}
    assert {file: names for file, names in found.items() if names} == {}
