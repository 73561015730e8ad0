"""A run's ONNX graph, found again without torch: what lets `transferkit serve RUN` start in about a second.

The first time a run is served on a CPU, its bundle is loaded with PyTorch and its graph made (or taken from the
cache) by the runner every command uses, which checks it against PyTorch (`runner.make_runner`). Once the graph
passes, an index entry is written under `cache_dir()/onnx/bundles/`, named by a sha256 of the bundle's own bytes
(a run folder's `model.json` and weights, or a checkpoint file), holding the graph's file name, the sha256 it had
when it passed, the ONNX Runtime version that ran the check, the figure, and the metadata a server needs (classes,
preprocessing, backbone, the bundle's sha256). Later starts hash the bundle, read the entry, hash the graph and
load it: the same bytes on the same runtime that were checked, so nothing needs torch. Any mismatch or damage
means no entry, and the slow path runs again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transferkit.inference.session import OnnxClassifier, cpu_session, metadata
from transferkit.io.atomic import atomic_write_text
from transferkit.io.hashing import sha256_file
from transferkit.io.locations import cache_dir
from transferkit.io.names import META_FILE

__all__ = ["Graph", "bundle_digest", "cached_classifier", "graph_classifier"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Graph:
    """A run's classifier on ONNX Runtime (None when its graph could not be used) and how it was found."""

    classifier: OnnxClassifier | None
    note: str


def bundle_digest(path: str | os.PathLike[str]) -> str:
    """sha256 of what makes the model: a run folder's model.json then the weights file it names (by the name
    model.json gives; `load_bundle` refuses anything else), or a checkpoint file."""
    path = Path(path)
    if not path.is_dir():
        return sha256_file(path)
    meta_path = path / META_FILE
    meta_bytes = meta_path.read_bytes()
    weights = json.loads(meta_bytes).get("weights_file", "model.safetensors")
    if not isinstance(weights, str) or Path(weights).name != weights:
        raise ValueError(f"{meta_path} names weights file {weights!r}, not a file name inside {path}")
    digest = hashlib.sha256(meta_bytes)
    digest.update(sha256_file(path / weights).encode())
    return digest.hexdigest()


def _entry_path(digest: str) -> Path:
    return cache_dir() / "onnx" / "bundles" / f"{digest}.json"


def _onnxruntime_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


def cached_classifier(path: str | os.PathLike[str]) -> Graph:
    """The run's checked graph from the cache, with no torch import; `classifier` None (and why) when absent,
    stale or damaged."""
    try:
        entry_path = _entry_path(bundle_digest(path))
        if not entry_path.is_file():
            return Graph(None, "no checked ONNX graph of this run in the cache yet")
        entry: dict[str, Any] = json.loads(entry_path.read_text(encoding="utf-8"))
        graph = entry_path.parent.parent / str(entry["graph"])
        if Path(str(entry["graph"])).name != entry["graph"]:
            return Graph(None, f"the cache entry {entry_path} is damaged")
        if entry["onnxruntime"] != _onnxruntime_version():
            return Graph(None, f"the cached graph was checked with ONNX Runtime {entry['onnxruntime']}")
        if not graph.is_file() or sha256_file(graph) != entry["graph_sha256"]:
            return Graph(None, "the cached graph is missing or changed since it was checked")
        meta = {str(k): str(v) for k, v in entry["meta"].items()}
        classifier = OnnxClassifier(cpu_session(graph), json.loads(meta["classes"]), meta, Path(path))
    except Exception as exc:  # an unreadable cache is no cache: the slow path rebuilds it
        return Graph(None, f"the cache could not be used ({type(exc).__name__}: {exc})")
    return Graph(classifier, f"ONNX Runtime, the cached graph (matched PyTorch to {entry['parity']:.1e} when "
                             f"it was checked)")


def graph_classifier(path: str | os.PathLike[str]) -> Graph:
    """Load the run with PyTorch, have the runner make and check its graph, and record it for `cached_classifier`.
    `classifier` is None (the runner's reason in `note`) when the graph cannot be used."""
    import torch

    from transferkit.inference.runner import make_runner
    from transferkit.io.bundle import load_bundle
    from transferkit.runtime import Runtime

    bundle = load_bundle(path)
    model, p = bundle.model, bundle.model.preprocessing
    runner = make_runner(model, p, Runtime(torch.device("cpu")), prefer="onnx", classes=tuple(model.class_names))
    if runner.classifier is None:
        return Graph(None, runner.note)
    assert runner.graph is not None and runner.parity is not None
    meta = metadata(bundle.meta, p)
    entry = {"graph": runner.graph.name, "graph_sha256": sha256_file(runner.graph),
             "onnxruntime": _onnxruntime_version(), "parity": runner.parity, "meta": meta}
    try:
        atomic_write_text(_entry_path(bundle_digest(path)), json.dumps(entry, indent=1) + "\n")
    except OSError as exc:  # a read-only cache still serves; it only starts slowly next time
        log.warning(f"could not record the checked graph in the cache ({exc}); the next start loads PyTorch again")
    session = runner.classifier.session
    return Graph(OnnxClassifier(session, model.class_names, meta, Path(path)), runner.note)
