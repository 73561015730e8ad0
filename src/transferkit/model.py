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
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from transferkit.backbones import BackboneSpec, Block, get_backbone
from transferkit.errors import UserError
from transferkit.preprocess import Preprocessing
from transferkit.weights import WeightsInfo, build_network

__all__ = ["HeadConfig", "ParamGroup", "TransferModel"]


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


class TransferModel(nn.Module):
    """`base` maps normalised images to pooled features; `head` maps features to class logits."""

    def __init__(self, spec: BackboneSpec, base: nn.Module, class_names: list[str], head_cfg: HeadConfig,
                 preprocessing: Preprocessing, weights_info: WeightsInfo) -> None:
        super().__init__()
        self.spec = spec
        self.base = base
        self.head = build_head(spec.feature_dim, len(class_names), head_cfg)
        self.class_names = list(class_names)
        self.head_cfg = head_cfg
        self.preprocessing = preprocessing
        self.weights_info = weights_info
        self.train_bn = False
        self._block_params = self._group_base_params(spec.blocks)

    @classmethod
    def from_pretrained(cls, backbone: str, class_names: list[str], head: HeadConfig = HeadConfig(),
                        weights: str | None = None) -> TransferModel:
        """The Keras `include_top=False` base with its pretrained weights, frozen, and a fresh head."""
        spec = get_backbone(backbone)
        net, info = build_network(spec, weights)
        net.reset_classifier(0)  # type: ignore[operator]  # every timm model has it
        model = cls(spec, net, class_names, head, spec.preprocessing, info)
        model.freeze_base()
        return model

    def _group_base_params(self, blocks: tuple[Block, ...]) -> dict[str, tuple[nn.Parameter, ...]]:
        groups: dict[str, list[nn.Parameter]] = {b.name: [] for b in blocks}
        for name, param in self.base.named_parameters():
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
