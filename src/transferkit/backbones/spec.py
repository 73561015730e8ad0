"""The types a backbone row is made of: the spec, its named blocks and where packaged weights live.
"""

from __future__ import annotations

from dataclasses import dataclass

from transferkit.data.preprocess import Preprocessing

__all__ = ["BackboneSpec", "Block", "PackagedWeights"]


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
    """One pretrained network.

    `feature_dim` is the size of the pooled features the base outputs once its classifier is removed (timm's
    `head_hidden_size`: 4096 for VGG, whose fc6/fc7 stay in the base, 1024/1280 for MobileNetV3's conv head).
    `params` counts the whole timm network including its 1000-class classifier, as Keras and timm report it.
    `hub_id` is timm's pretrained tag (`architecture.tag`), which names where timm would fetch the weights.
    """

    name: str
    architecture: str
    aliases: tuple[str, ...]
    preprocessing: Preprocessing
    feature_dim: int
    blocks: tuple[Block, ...]
    params: int
    hub_id: str | None = None
    packaged_weights: PackagedWeights | None = None

    def block_names(self) -> list[str]:
        return [b.name for b in self.blocks]
