"""A text run's ONNX graph, made once and found again without torch: what lets `transferkit serve RUN` serve a
text run on ONNX Runtime, as `bundle_graph` does for images.

The first time a text run is served on a CPU, it is exported exactly as `transferkit export` does (and checked
against PyTorch the same way; nothing is written if it differs) to `cache_dir()/onnx/text-bundles/`, under a
name made of the sha256 of the bundle's own bytes and the ONNX Runtime version, with its tokenizer beside it.
Since a graph is written only after it passed, a later start that finds the file loads it at once; a damaged
file is no graph, and the export runs again.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from transferkit.inference.bundle_graph import bundle_digest
from transferkit.inference.session import open_graph
from transferkit.inference.text_session import OnnxTextClassifier
from transferkit.io.locations import cache_dir

__all__ = ["cached_text_graph", "text_graph"]

log = logging.getLogger(__name__)


def _graph_path(run: str | os.PathLike[str]) -> Path:
    import onnxruntime

    name = f"{bundle_digest(run)[:40]}-ort{onnxruntime.__version__}.onnx"
    return cache_dir() / "onnx" / "text-bundles" / name


def _load(run: str | os.PathLike[str], graph: Path) -> OnnxTextClassifier:
    session, meta = open_graph(graph)
    classifier = OnnxTextClassifier.load(graph, session, meta)
    classifier.source = Path(run)
    return classifier


def cached_text_graph(run: str | os.PathLike[str]) -> OnnxTextClassifier | None:
    """The run's checked graph from the cache (no torch import), or None when absent or unusable."""
    try:
        graph = _graph_path(run)
        return _load(run, graph) if graph.is_file() else None
    except Exception as exc:  # an unreadable cache is no cache: the export runs again
        log.debug(f"the cached text graph of {run} could not be used ({type(exc).__name__}: {exc})")
        return None


def text_graph(run: str | os.PathLike[str]) -> OnnxTextClassifier:
    """Export and check the run's graph into the cache (`text.export.export_text_onnx`), then load it."""
    from transferkit.text.export import export_text_onnx

    graph = _graph_path(run)
    done = export_text_onnx(run, graph)
    log.info(f"text graph of {run} checked on {done.checked_on} "
             f"(max |Δp| {max(f.max_difference for f in done.parity):.1e}); cached in {graph.parent}")
    return _load(run, graph)
