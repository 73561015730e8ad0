"""What a feature cache is computed from, told without building the network (no torch, no timm).

A cache's key (`extract.cache_key`) holds a hash of the built base's tensors: exact, but it needs torch, timm
and the network itself, seconds before anything is known. The *source key* names what those tensors are made
from instead: the backbone, the sha256 of the weights it loads (the packaged file's is in the backbone table;
a `--weights` file is hashed), the layer the base is cut at, the preprocessing, the views and their seed, and
the versions of timm and transferkit, which build the network from them. The command line records it in the
manifest beside the full key of a base it has just built from exactly these settings, so the next `extract`
with the same settings recognises an up-to-date cache in a fraction of a second. Random weights (different in
every run) and weights timm would fetch (found only through timm) have no source key: the full path decides.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
from pathlib import Path
from typing import Any

from transferkit._version import __version__
from transferkit.backbones.registry import get_backbone, resolve_layer
from transferkit.backbones.spec import BackboneSpec, PackagedWeights
from transferkit.data.preprocess import Augmentation
from transferkit.errors import UserError
from transferkit.io.hashing import sha256_file

__all__ = ["ENGINES", "source_key", "weights_id"]

ENGINES = ("auto", "torch")  # what may run the base: auto (ONNX Runtime on a CPU when it matches), or PyTorch


def _packaged_file(pw: PackagedWeights) -> Path | None:
    """The packaged weights file, found without importing its package (which may import torch)."""
    try:
        found = importlib.util.find_spec(pw.module)
    except (ImportError, ValueError):
        return None
    for folder in (found.submodule_search_locations or []) if found is not None else []:
        if (Path(folder) / pw.filename).is_file():
            return Path(folder) / pw.filename
    return None


def weights_id(spec: BackboneSpec, weights: str | None) -> str | None:
    """The weights `Backbone.from_pretrained(spec.name, weights)` loads, as "package:SHA256" or "file:SHA256";
    None when that cannot be told without timm (its downloaded weights) or means nothing (random weights)."""
    if weights is None:
        pw = spec.packaged_weights
        return f"package:{pw.sha256}" if pw is not None and _packaged_file(pw) is not None else None
    path = Path(weights)
    if weights == "random" or not path.is_file():
        return None
    return f"file:{sha256_file(path)}"


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def source_key(backbone: str, weights: str | None, layer: str | None, views: int,
               augmentation: Augmentation = Augmentation(), seed: int = 0) -> dict[str, Any] | None:
    """The source key of a cache made with `Backbone.from_pretrained(backbone, weights, layer)` and these views
    (see the module docstring), or None when there is none (a name or layer that does not exist included: the
    full path says what is wrong with it)."""
    try:
        spec = get_backbone(backbone)
        index = resolve_layer(spec, layer)
    except UserError:
        return None
    weights_key = weights_id(spec, weights)
    if weights_key is None:
        return None
    key = {
        "backbone": spec.name,
        "weights": weights_key,
        "layer": "deep" if index is None else spec.blocks[index].name,
        "preprocessing": spec.preprocessing.to_json(),
        "views": views,
        "augmentation": {**augmentation.__dict__, "seed": seed} if views else None,
        "versions": {"transferkit": __version__, "timm": _version("timm")},
    }
    return json.loads(json.dumps(key))  # as it reads back from the manifest (tuples become lists)
