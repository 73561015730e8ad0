"""A pretrained base without its top, plus a new head: the model every workflow trains.

Freezing only flips `requires_grad`; the parameter groups (one per named block of the base, then the head)
are made once from the backbone spec. BatchNorm policy: a BatchNorm layer of the base runs in inference mode
(its running mean/var untouched) whenever its block is frozen, and also when unfrozen unless `train_bn` is set
(Keras' advice for fine-tuning on small data).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from timm.models import create_feature_extractor
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from transferkit.backbones import BackboneSpec, Block, get_backbone, resolve_layer
from transferkit.errors import UserError
from transferkit.preprocess import Preprocessing
from transferkit.weights import WeightsInfo, build_network

__all__ = ["HeadConfig", "LayerFeatures", "ParamGroup", "TransferModel"]


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


class TransferModel(nn.Module):
    """`base` maps normalised images to pooled features; `head` maps features to class logits.

    `net` is the timm network without its classifier; `layer` (a block name, or deep/mid/shallow) cuts it after
    that block, and only the blocks up to it take part in freezing and parameter groups."""

    def __init__(self, spec: BackboneSpec, net: nn.Module, class_names: list[str], head_cfg: HeadConfig,
                 preprocessing: Preprocessing, weights_info: WeightsInfo, layer: str | None = None) -> None:
        super().__init__()
        self.spec = spec
        index = resolve_layer(spec, layer)
        self.layer = None if index is None else spec.blocks[index].name
        if index is None:
            self.base, blocks, self.feature_dim = net, spec.blocks, spec.feature_dim
        else:
            cut = LayerFeatures(net, spec.blocks[index].prefixes[-1], preprocessing.input_size)
            self.base, blocks, self.feature_dim = cut, spec.blocks[:index + 1], cut.feature_dim
        self.head = build_head(self.feature_dim, len(class_names), head_cfg)
        self.class_names = list(class_names)
        self.head_cfg = head_cfg
        self.preprocessing = preprocessing
        self.weights_info = weights_info
        self.train_bn = False
        self._block_params = self._group_base_params(blocks)

    @classmethod
    def from_pretrained(cls, backbone: str, class_names: list[str], head: HeadConfig = HeadConfig(),
                        weights: str | None = None, layer: str | None = None) -> TransferModel:
        """The Keras `include_top=False` base with its pretrained weights, frozen, and a fresh head reading the
        pooled output of the whole base or of `layer`."""
        spec = get_backbone(backbone)
        net, info = build_network(spec, weights)
        net.reset_classifier(0)  # type: ignore[operator]  # every timm model has it
        model = cls(spec, net, class_names, head, spec.preprocessing, info, layer)
        model.freeze_base()
        return model

    def _group_base_params(self, blocks: tuple[Block, ...]) -> dict[str, tuple[nn.Parameter, ...]]:
        groups: dict[str, list[nn.Parameter]] = {b.name: [] for b in blocks}
        body = self.base.body if isinstance(self.base, LayerFeatures) else self.base  # timm's parameter names
        for name, param in body.named_parameters():
            owners = [b.name for b in blocks if b.owns(name)]
            if len(owners) != 1:
                raise RuntimeError(f"backbone spec {self.spec.name}: parameter {name} belongs to blocks {owners}")
            groups[owners[0]].append(param)
        return {name: tuple(params) for name, params in groups.items()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.base(x))

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
            raise UserError(f"--unfreeze-blocks must be 0 or more, got {blocks}")
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
