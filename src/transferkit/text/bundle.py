"""The text model bundle: the same files and format as an image bundle (`io.bundle`), its preprocessing of kind
"text" (the encoder, the token window, pooling, normalisation, prefix).

The head's weights are always in the safetensors file. The encoder's are there only when training changed them
(`TextModel.base_trained`); otherwise the JSON names the pretrained weights by their sha256, and loading checks
that the encoder installed here has exactly those (a bundle stays small: the head is a few kilobytes, the
encoder tens of megabytes). Loading never unpickles anything and never touches the network for the packaged
encoder.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save

from transferkit._version import __version__
from transferkit.errors import UserError
from transferkit.io.atomic import atomic_write_bytes, atomic_write_text
from transferkit.io.bundle import FORMAT, FORMAT_VERSION, check_format, checked_temperature, read_meta_and_weights
from transferkit.io.hashing import sha256_file
from transferkit.io.names import META_FILE, WEIGHTS_FILE
from transferkit.model import HeadConfig
from transferkit.text.encoder import SentenceEncoder
from transferkit.text.model import TextModel

__all__ = ["TextBundle", "load_text_bundle", "save_text_bundle", "text_model_meta"]


def text_model_meta(model: TextModel, extra: dict[str, Any]) -> dict[str, Any]:
    encoder = model.encoder
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "transferkit_version": __version__,
        "encoder": {"name": encoder.spec.name, "hub_id": encoder.spec.hub_id,
                    "weights": {"source": encoder.files.source, "sha256": encoder.files.sha256},
                    "in_bundle": model.base_trained},
        "preprocessing": encoder.preprocessing(),
        "head": model.head_cfg.to_json(),
        "class_names": model.class_names,
        "temperature": model.temperature,
        "embedding_scale": model.embedding_scale,
        **extra,
    }


def _weights(model: TextModel) -> dict[str, torch.Tensor]:
    prefixes = ("head.", "base.") if model.base_trained else ("head.",)
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k.startswith(prefixes)}


def save_text_bundle(model: TextModel, run_dir: str | os.PathLike[str], extra: dict[str, Any]) -> Path:
    """Write the weights, then the JSON naming their sha256 (each atomically). Returns the JSON's path."""
    run_dir = Path(run_dir)
    weights_path = run_dir / WEIGHTS_FILE
    atomic_write_bytes(weights_path, save(_weights(model)))
    meta = text_model_meta(model, extra) | {"weights_file": WEIGHTS_FILE, "weights_sha256": sha256_file(weights_path)}
    atomic_write_text(run_dir / META_FILE, json.dumps(meta, indent=2) + "\n")
    return run_dir / META_FILE


@dataclass(frozen=True)
class TextBundle:
    """A loaded text bundle: the model, in inference mode, and everything its JSON says."""

    model: TextModel
    meta: dict[str, Any]
    path: Path


def load_text_bundle(path: str | os.PathLike[str]) -> TextBundle:
    """Rebuild the text model from a run folder (or a checkpoint file): no pickle, no network for the packaged
    encoder."""
    path = Path(path)
    meta, weights = read_meta_and_weights(path)
    check_format(path, meta)
    pre = meta.get("preprocessing")
    if not isinstance(pre, dict) or pre.get("kind") != "text":
        raise UserError(f"{path} is not a text model bundle: pass the --out folder of `transferkit train` on texts")
    try:
        encoder = SentenceEncoder.load(meta["encoder"]["name"], int(pre["max_tokens"]))
        if encoder.preprocessing() != pre:
            raise ValueError(f"the encoder's preprocessing here is {encoder.preprocessing()}, the bundle's {pre}")
        expected = meta["encoder"]["weights"]["sha256"]
        if not meta["encoder"]["in_bundle"] and encoder.files.sha256 != expected:
            raise UserError(f"{path} was trained on {encoder.spec.name} weights with sha256 {expected[:12]}…, but "
                            f"{encoder.files.source} here has {encoder.files.sha256[:12]}…: install the weights it "
                            f"was trained with, or retrain")
        model = TextModel(encoder, list(meta["class_names"]), HeadConfig(**meta["head"]))
        model.base_trained = bool(meta["encoder"]["in_bundle"])
        model.load_state_dict(weights, strict=model.base_trained)
        if not model.base_trained and set(weights) != {k for k in model.state_dict() if k.startswith("head.")}:
            raise ValueError(f"the weights file holds {sorted(weights)[:3]}…, expected the head's only")
        model.temperature = checked_temperature(meta.get("temperature", 1.0))
        model.embedding_scale = float(meta.get("embedding_scale", 1.0))  # bundles from before the scale: 1
        if not math.isfinite(model.embedding_scale) or model.embedding_scale <= 0:
            raise ValueError(f"embedding_scale {model.embedding_scale} is not a positive number")
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise UserError(f"bundle {path} is incomplete or does not match its description ({exc}); retrain") from None
    model.eval()
    return TextBundle(model, meta, path)
