"""The model bundle: weights as safetensors, everything else as JSON. Loading never unpickles anything.

A run folder holds `model.safetensors` and `model.json` (backbone, the weights it started from, preprocessing,
head, class names, training config, history, metrics, and the sha256 of the weights file). During training,
`checkpoint.safetensors` holds the best model so far as one self-contained file (the same JSON in its header),
rewritten atomically after each improvement, so an interrupted run always leaves a usable model.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from transferkit._version import __version__
from transferkit.backbones.registry import get_backbone
from transferkit.backbones.weights import WeightsInfo, build_network
from transferkit.data.preprocess import Preprocessing
from transferkit.errors import UserError
from transferkit.io.atomic import atomic_write_bytes, atomic_write_text
from transferkit.io.hashing import sha256_file
from transferkit.io.names import CHECKPOINT_FILE, META_FILE, WEIGHTS_FILE
from transferkit.model import Backbone, HeadConfig, TransferModel

__all__ = ["CHECKPOINT_FILE", "FORMAT", "FORMAT_VERSION", "META_FILE", "READABLE_VERSIONS", "WEIGHTS_FILE", "Bundle",
           "checked_temperature", "check_format", "load_bundle", "read_meta_and_weights",
           "save_bundle", "save_checkpoint"]

FORMAT = "transferkit.bundle"
FORMAT_VERSION = 2  # 2: the preprocessing names its modality ("kind": "image")
READABLE_VERSIONS = (1, 2)  # version 1 bundles are image bundles without the tag
_META_KEY = "transferkit"


def model_meta(model: TransferModel, extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "transferkit_version": __version__,
        "backbone": {
            "name": model.spec.name,
            "architecture": model.spec.architecture,
            "weights": {"source": model.weights_info.source, "sha256": model.weights_info.sha256},
        },
        "preprocessing": {"kind": "image", **model.preprocessing.to_json()},
        "head": model.head_cfg.to_json(),
        "layer": model.layer,
        "class_names": model.class_names,
        "temperature": model.temperature,
        **extra,
    }


def _weights_bytes(model: TransferModel, metadata: dict[str, str] | None) -> bytes:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return save(state, metadata=metadata)


@dataclass(frozen=True)
class Bundle:
    """A loaded bundle: the model, in inference mode, and everything its JSON says (training config, history,
    metrics, data summary)."""

    model: TransferModel
    meta: dict[str, Any]
    path: Path

    @property
    def history(self) -> list[dict[str, Any]]:
        return list(self.meta.get("history", []))


def save_bundle(model: TransferModel, run_dir: str | os.PathLike[str], extra: dict[str, Any]) -> Path:
    """Write the weights, then the JSON naming their sha256 (each atomically). Returns the JSON's path."""
    run_dir = Path(run_dir)
    weights_path = run_dir / WEIGHTS_FILE
    atomic_write_bytes(weights_path, _weights_bytes(model, None))
    meta = model_meta(model, extra) | {"weights_file": WEIGHTS_FILE, "weights_sha256": sha256_file(weights_path)}
    atomic_write_text(run_dir / META_FILE, json.dumps(meta, indent=2) + "\n")
    return run_dir / META_FILE


def save_checkpoint(model: TransferModel, path: Path, extra: dict[str, Any]) -> None:
    """One self-contained file: weights plus the bundle JSON in the safetensors header."""
    atomic_write_bytes(path, _weights_bytes(model, {_META_KEY: json.dumps(model_meta(model, extra))}))


def read_meta_and_weights(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    if path.is_dir():
        meta_path = path / META_FILE
        if not meta_path.is_file():
            hint = (f"; training did not finish, but {path / CHECKPOINT_FILE} holds its best model so far"
                    if (path / CHECKPOINT_FILE).is_file() else "; pass the --out folder of `transferkit train`")
            raise UserError(f"no model bundle in {path}: {META_FILE} is missing{hint}")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UserError(f"cannot read {meta_path}: {exc} — the bundle is damaged; retrain or restore it") from None
        weights_path = _inside_bundle(path, meta_path, meta.get("weights_file", WEIGHTS_FILE))
        if not weights_path.is_file():
            raise UserError(f"bundle {path} has no weights file {weights_path.name}: copy the whole run folder")
        if sha256_file(weights_path) != meta.get("weights_sha256"):
            raise UserError(f"{weights_path} does not match the sha256 in {meta_path}: the bundle is damaged or "
                            f"was partly overwritten; copy it again or retrain")
        return meta, _load_safetensors(weights_path)[1]
    if path.is_file() and path.suffix == ".safetensors":
        header, weights = _load_safetensors(path)
        if _META_KEY not in header:
            raise UserError(f"{path} is not a transferkit checkpoint (no transferkit metadata in its header)")
        return json.loads(header[_META_KEY]), weights
    raise UserError(f"model bundle not found: {path} — pass a run folder made by `transferkit train` "
                    f"or a checkpoint.safetensors file")


def _inside_bundle(folder: Path, meta_path: Path, name: object) -> Path:
    """The weights file a bundle's JSON names: a plain file name in the bundle's own folder, nothing else (a
    copied bundle must not be able to read files elsewhere on the machine)."""
    if not isinstance(name, str) or not name or Path(name).name != name or name in {".", ".."} or "\\" in name:
        raise UserError(f"{meta_path} names weights file {name!r}, which is not a file name inside {folder}: "
                        f"the bundle is damaged or not trustworthy; retrain or restore it")
    return folder / name


def _load_safetensors(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """The header's metadata and every tensor of a safetensors file."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}, {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"cannot read weights {path}: {exc} — the file is damaged or not safetensors") from None


def checked_temperature(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise ValueError(f"temperature must be a positive number, got {value!r}")
    return float(value)


def check_format(path: Path, meta: dict[str, Any]) -> None:
    if meta.get("format") != FORMAT or meta.get("format_version") not in READABLE_VERSIONS:
        raise UserError(f"{path} is a bundle of format {meta.get('format')!r} version {meta.get('format_version')!r}; "
                        f"this transferkit ({__version__}) reads {FORMAT!r} version {FORMAT_VERSION}: "
                        f"use a matching transferkit version")


def _kind(meta: dict[str, Any]) -> str | None:
    preprocessing = meta.get("preprocessing")
    return preprocessing.get("kind", "image") if isinstance(preprocessing, dict) else None


def load_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Rebuild the model from a run folder (or a checkpoint file) with no pickle and no network access."""
    path = Path(path)
    meta, weights = read_meta_and_weights(path)
    check_format(path, meta)
    kind = _kind(meta)
    if kind == "text":
        raise UserError(f"{path} is a text model: `transferkit evaluate`, `predict` and `report` read it; this "
                        f"command reads image models only so far")
    if kind != "image":
        raise UserError(f"{path} is a bundle of modality {kind!r}; this transferkit ({__version__}) reads image "
                        f"and text bundles: use a transferkit version that knows {kind!r} models")
    try:
        spec = get_backbone(meta["backbone"]["name"])
        net, _ = build_network(spec, "random")
        net.reset_classifier(0)  # type: ignore[operator]  # every timm model has it
        info = WeightsInfo(meta["backbone"]["weights"]["source"], meta["backbone"]["weights"]["sha256"], False)
        image = Preprocessing.from_json({k: v for k, v in meta["preprocessing"].items() if k != "kind"})
        backbone = Backbone(spec, net, image, info, meta.get("layer"))
        model = TransferModel(backbone, list(meta["class_names"]), HeadConfig(**meta["head"]))
        model.load_state_dict(weights)
        model.temperature = checked_temperature(meta.get("temperature", 1.0))  # bundles before calibration: 1
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise UserError(f"bundle {path} is incomplete or does not match its description ({exc}); retrain") from None
    model.eval()
    return Bundle(model, meta, path)
