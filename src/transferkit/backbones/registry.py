"""The backbone table: one frozen spec per pretrained network, looked up by name or alias.

Adding a backbone is adding a row (in `transferkit/backbones/table.py`): the timm architecture that builds it,
where its weights can come from (with their sha256), the preprocessing it was trained with, its pooled feature
size, its parameter count and its named blocks from stem to top (the units that `unfreeze_top(k)` and
discriminative learning rates work on).
"""

from __future__ import annotations

from transferkit.backbones.spec import BackboneSpec, Block, PackagedWeights
from transferkit.backbones.table import BACKBONES
from transferkit.errors import UserError

__all__ = ["BACKBONES", "DEFAULT_BACKBONE", "BackboneSpec", "Block", "PackagedWeights", "get_backbone", "resolve_layer"]

DEFAULT_BACKBONE = "efficientnet_lite0"


def _key(name: str) -> str:
    return name.lower().replace("-", "_")


def _index(specs: tuple[BackboneSpec, ...]) -> dict[str, BackboneSpec]:
    """Every name and alias → its row; two rows answering to the same name is a bug in the table."""
    index: dict[str, BackboneSpec] = {}
    for spec in specs:
        for alias in (spec.name, *spec.aliases):
            other = index.setdefault(_key(alias), spec)
            if other is not spec:
                raise RuntimeError(f"backbone alias {alias!r} names both {other.name} and {spec.name}")
    return index


_BY_NAME = _index(BACKBONES)


def get_backbone(name: str) -> BackboneSpec:
    """Look a backbone up by name or alias, case-insensitively ('-' and '_' are the same)."""
    spec = _BY_NAME.get(_key(name))
    if spec is None:
        known = ", ".join(s.name for s in BACKBONES)
        raise UserError(f"unknown backbone {name!r}: choose one of {known}")
    return spec


DEPTHS = {"shallow": 0.25, "mid": 0.5}


def resolve_layer(spec: BackboneSpec, layer: str | None) -> int | None:
    """Index of the block whose output the head reads, or None for the full base ("deep", the default).

    `layer` is a block name of the spec, or `deep` / `mid` / `shallow` (the block a half / a quarter of the way
    up). The top block is the full base, so it also gives None.
    """
    if layer is None or layer == "deep":
        return None
    names = spec.block_names()
    if layer in DEPTHS:
        index = max(1, round((len(names) - 1) * DEPTHS[layer]))
    elif layer in names:
        index = names.index(layer)
    else:
        raise UserError(f"unknown layer {layer!r} for {spec.name}: use deep, mid, shallow or a block name "
                        f"({', '.join(names)})")
    return None if index == len(names) - 1 else index
