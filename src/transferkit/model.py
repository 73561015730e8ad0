"""A pretrained base without its top, plus a new head: the model every workflow trains.

Freezing only flips `requires_grad`; the parameter groups (one per named block of the base, then the head)
are made once from the backbone spec. BatchNorm policy: a BatchNorm layer of the base runs in inference mode
(its running mean/var untouched) whenever its block is frozen, and also when unfrozen unless `train_bn` is set
(Keras' advice for fine-tuning on small data).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from timm.models import create_feature_extractor, get_pretrained_cfg
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from transferkit.backbones.registry import get_backbone, resolve_layer
from transferkit.backbones.spec import BackboneSpec
from transferkit.backbones.weights import WeightsInfo, build_network
from transferkit.data.preprocess import Preprocessing
from transferkit.errors import UserError

__all__ = ["Backbone", "HeadConfig", "LayerFeatures", "ParamGroup", "TransferModel", "fixed_input_size"]


@dataclass(frozen=True)
class HeadConfig:
    """Global-average-pooled features → [Linear(hidden) → ReLU] → Dropout → Linear(classes)."""

    hidden: int = 0
    dropout: float = 0.2

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ParamGroup:
    name: str
    params: tuple[nn.Parameter, ...]


def build_head(feature_dim: int, num_classes: int, cfg: HeadConfig) -> nn.Sequential:
    if cfg.hidden > 0:
        return nn.Sequential(nn.Linear(feature_dim, cfg.hidden), nn.ReLU(), nn.Dropout(cfg.dropout),
                             nn.Linear(cfg.hidden, num_classes))
    return nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(feature_dim, num_classes))


class LayerFeatures(nn.Module):
    """The base cut after one block ("mid-layer" features): the FX graph of the network up to that block's
    output, so nothing above it is computed or kept, then global average pooling (over tokens for ViTs)."""

    def __init__(self, net: nn.Module, node: str, input_size: int) -> None:
        super().__init__()
        self.body = create_feature_extractor(net, return_nodes={node: "out"})
        was_training = self.body.training
        self.body.eval()  # the probe forward below must not touch BatchNorm statistics
        with torch.no_grad():
            self.feature_dim = int(self(torch.zeros(1, 3, input_size, input_size)).shape[1])
        self.body.train(was_training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)["out"]
        return out.mean(dim=(2, 3)) if out.ndim == 4 else out.mean(dim=1)


def fixed_input_size(spec: BackboneSpec) -> bool:
    """Whether the network takes images of its own input size only (timm says so of a ViT, whose position
    embeddings are made for one grid of patches)."""
    cfg = get_pretrained_cfg(spec.hub_id) if spec.hub_id is not None else None
    return bool(cfg is not None and cfg.fixed_input_size)


class Backbone:
    """A pretrained base without its top (Keras' `include_top=False`), with the preprocessing it was trained with
    and where it is cut: `backbone(images)` gives pooled features of size `feature_dim`.

    `net` is the timm network without its classifier; `layer` (a block name, or deep/mid/shallow) cuts it after
    that block, and only the blocks up to it take part in freezing and parameter groups. Usable alone, e.g. for
    `extract_features`; a `TransferModel` puts a head on one."""

    def __init__(self, spec: BackboneSpec, net: nn.Module, preprocessing: Preprocessing, weights_info: WeightsInfo,
                 layer: str | None = None) -> None:
        self.spec = spec
        self.preprocessing = preprocessing
        self.weights_info = weights_info
        index = resolve_layer(spec, layer)
        self.layer = None if index is None else spec.blocks[index].name
        self.module: nn.Module
        if index is None:
            self.module, self.blocks, self.feature_dim = net, spec.blocks, spec.feature_dim
        else:
            cut = LayerFeatures(net, spec.blocks[index].prefixes[-1], preprocessing.input_size)
            self.module, self.blocks, self.feature_dim = cut, spec.blocks[:index + 1], cut.feature_dim

    @classmethod
    def from_pretrained(cls, name: str, weights: str | None = None, layer: str | None = None,
                        input_size: int | None = None) -> Backbone:
        """The base of backbone `name` with its pretrained weights (or `weights`: a file, or "random"), fed
        images of `input_size` pixels instead of the size it was trained at, if given (a smaller one for small
        source images: the same weights, a fraction of the work)."""
        spec = get_backbone(name)
        own = spec.preprocessing.input_size
        if input_size not in (None, own) and fixed_input_size(spec):
            raise UserError(f"backbone {spec.name} takes {own} px images only (its position embeddings are made for "
                            f"that size): drop --input-size {input_size}, or choose a convolutional backbone")
        net, info = build_network(spec, weights)
        net.reset_classifier(0)  # type: ignore[operator]  # every timm model has it
        preprocessing = spec.preprocessing if input_size is None else replace(spec.preprocessing,
                                                                              input_size=input_size)
        return cls(spec, net, preprocessing, info, layer)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.module(images)

    def block_params(self) -> dict[str, tuple[nn.Parameter, ...]]:
        """Each block's parameters, stem first: every parameter of the base in exactly one block."""
        groups: dict[str, list[nn.Parameter]] = {b.name: [] for b in self.blocks}
        body = self.module.body if isinstance(self.module, LayerFeatures) else self.module  # timm's names
        for name, param in body.named_parameters():
            owners = [b.name for b in self.blocks if b.owns(name)]
            if len(owners) != 1:
                raise RuntimeError(f"backbone spec {self.spec.name}: parameter {name} belongs to blocks {owners}")
            groups[owners[0]].append(param)
        return {name: tuple(params) for name, params in groups.items()}


class TransferModel(nn.Module):
    """`base` maps normalised images to pooled features (the backbone's module); `head` maps features to class
    logits. The state dict is `base.*` and `head.*`, as saved in every bundle."""

    def __init__(self, backbone: Backbone, class_names: Sequence[str], head_cfg: HeadConfig = HeadConfig()) -> None:
        super().__init__()
        self.backbone = backbone
        self.base = backbone.module
        self.head = build_head(backbone.feature_dim, len(class_names), head_cfg)
        self.class_names = list(class_names)
        self.head_cfg = head_cfg
        self.train_bn = False
        self.temperature = 1.0  # divides the logits: fitted on the validation split after training (calibration)
        self._block_params = backbone.block_params()

    @property
    def spec(self) -> BackboneSpec:
        return self.backbone.spec

    @property
    def layer(self) -> str | None:
        return self.backbone.layer

    @property
    def preprocessing(self) -> Preprocessing:
        return self.backbone.preprocessing

    @property
    def weights_info(self) -> WeightsInfo:
        return self.backbone.weights_info

    @property
    def feature_dim(self) -> int:
        return self.backbone.feature_dim

    @classmethod
    def from_pretrained(cls, backbone: str, class_names: Sequence[str], head: HeadConfig = HeadConfig(),
                        weights: str | None = None, layer: str | None = None,
                        input_size: int | None = None) -> TransferModel:
        """The Keras `include_top=False` base with its pretrained weights, frozen, and a fresh head reading the
        pooled output of the whole base or of `layer` (at `input_size` pixels: see `Backbone.from_pretrained`)."""
        model = cls(Backbone.from_pretrained(backbone, weights, layer, input_size), class_names, head)
        model.freeze_base()
        return model

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write this model as a bundle in `folder` (see `transferkit.io.bundle`); returns the folder."""
        from transferkit.io.bundle import save_bundle

        save_bundle(self, Path(folder), {})
        return Path(folder)

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> TransferModel:
        """A model saved with `save` (or trained by `transferkit train`), in inference mode."""
        from transferkit.io.bundle import load_bundle

        return load_bundle(folder).model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits, divided by the calibration temperature (1 while training), so every consumer of the
        model (predict, evaluate, the ONNX export, the server) gives calibrated probabilities."""
        logits = self.head(self.base(x))
        return logits if self.temperature == 1.0 else logits / self.temperature

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x)

    def param_groups(self) -> list[ParamGroup]:
        """One group per base block, stem first, then the head: every parameter exactly once."""
        groups = [ParamGroup(name, params) for name, params in self._block_params.items()]
        return [*groups, ParamGroup("head", tuple(self.head.parameters()))]

    def freeze_base(self) -> None:
        self.unfreeze_top(0)

    def unfreeze_top(self, blocks: int | None) -> None:
        """Make the top `blocks` blocks of the base trainable (None or too many: all); freeze the rest."""
        names = list(self._block_params)
        if blocks is not None and blocks < 0:
            raise ValueError(f"unfreeze_top takes 0 or more blocks (None: all), got {blocks}")
        count = len(names) if blocks is None else min(blocks, len(names))
        trainable = set(names[len(names) - count:])
        for name, params in self._block_params.items():
            for p in params:
                p.requires_grad_(name in trainable)
        self.train(self.training)

    def trainable_blocks(self) -> list[str]:
        return [name for name, params in self._block_params.items() if any(p.requires_grad for p in params)]

    def train(self, mode: bool = True) -> TransferModel:
        super().train(mode)
        if mode:
            for module in self.base.modules():
                if isinstance(module, _BatchNorm):
                    frozen = not any(p.requires_grad for p in module.parameters(recurse=False))
                    if frozen or not self.train_bn:
                        module.eval()
        return self
