"""The backbone table: one frozen spec per pretrained network, looked up by name or alias.

Adding a backbone is adding a row (in `transferkit/backbones/table.py`): the timm architecture that builds it,
where its weights can come from (with their sha256), the preprocessing it was trained with, its pooled feature
size, its parameter count and its named blocks from stem to top (the units that `unfreeze_top(k)` and
discriminative learning rates work on).
"""

from __future__ import annotations

import difflib
from typing import NamedTuple

from transferkit.backbones.spec import BackboneSpec
from transferkit.backbones.table import BACKBONES
from transferkit.errors import UserError

__all__ = ["DEFAULT_BACKBONE", "KERAS_WITHOUT_A_ROW", "get_backbone", "resolve_layer"]

DEFAULT_BACKBONE = "efficientnet_lite0"


def _key(name: str) -> str:
    return name.lower().replace("-", "_")


def _loose_key(name: str) -> str:
    """Keras spells `ResNet152V2` where timm-style names say `resnet152_v2`: both are the same request."""
    return _key(name).replace("_", "")


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


class Absent(NamedTuple):
    """A Keras application with no row: why not, and the rows nearest to it (smallest change first)."""

    why: str
    nearest: tuple[str, ...]


_NO_PORT = "has no pretrained PyTorch port in timm"
_NO_ROW = "has timm weights but no row here yet"

# Keras users ask for these by name: the answer says why there is no row rather than guessing at a typo.
KERAS_WITHOUT_A_ROW: dict[str, Absent] = {
    "NASNetMobile": Absent(_NO_PORT, ("mobilenet_v3_large", "efficientnet_lite0", "nasnet_large")),
    "ResNet152V2": Absent(_NO_PORT, ("resnet101_v2", "resnet152")),  # timm's resnetv2_152x* are BiT, not Keras's
    "ConvNeXtLarge": Absent(_NO_ROW, ("convnext_base",)),
    "ConvNeXtXLarge": Absent(_NO_ROW, ("convnext_base",)),
    "EfficientNetV2B0": Absent(_NO_ROW, ("efficientnet_b0", "efficientnet_v2_s")),
    "EfficientNetV2B1": Absent(_NO_ROW, ("efficientnet_b1", "efficientnet_v2_s")),
    "EfficientNetV2B2": Absent(_NO_ROW, ("efficientnet_b2", "efficientnet_v2_s")),
    "EfficientNetV2B3": Absent(_NO_ROW, ("efficientnet_b3", "efficientnet_v2_s")),
}
_ABSENT = {_loose_key(name): (name, absent) for name, absent in KERAS_WITHOUT_A_ROW.items()}
_ECHO_CHARS = 50


def get_backbone(name: str) -> BackboneSpec:
    """Look a backbone up by name or alias, case-insensitively ('-' and '_' are the same)."""
    spec = _BY_NAME.get(_key(name))
    if spec is None:
        raise UserError(_unknown_message(name))
    return spec


def _unknown_message(name: str) -> str:
    """One short line: why a Keras name has no row, else up to three close names; never the whole table (38
    rows, ~900 characters), and the received name cut short so a pasted paragraph does not come back whole."""
    if _loose_key(name) in _ABSENT:
        keras_name, absent = _ABSENT[_loose_key(name)]
        return f"backbone {keras_name} (Keras) {absent.why}; nearest available: {', '.join(absent.nearest)}"
    echo = repr(name)  # repr: control characters shown, not acted on
    echo = echo if len(echo) <= _ECHO_CHARS else echo[:_ECHO_CHARS - 1] + "…"
    close = _close_names(_key(name))
    if not close:
        return f"unknown backbone {echo}: see `transferkit models` for the list"
    return f"unknown backbone {echo}: did you mean {', '.join(close)}? (all: `transferkit models`)"


def _close_names(key: str, most: int = 3) -> list[str]:
    """Row names whose name or alias is spelled like `key`, closest first, each row once."""
    matches = difflib.get_close_matches(key, _BY_NAME, n=len(_BY_NAME), cutoff=0.6)
    return list(dict.fromkeys(_BY_NAME[m].name for m in matches))[:most]


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
