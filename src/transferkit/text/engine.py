"""The fastest way to run a sentence encoder here: ONNX Runtime on a CPU, PyTorch on a GPU or when asked.

As for the image feature engine (`transferkit.features.engine`), the encoder's module (token ids and mask in,
pooled and maybe normalised embedding out) is exported once to ONNX, cached under a key made of its weights' hash
and the software versions, and run by ONNX Runtime with every graph optimisation on. Each time an engine is made,
its embeddings are checked against PyTorch on a fixed batch of texts of different lengths (padding included);
if they differ by more than `PARITY_TOLERANCE`, or ONNX Runtime is missing or the export fails, the engine is
PyTorch and `TextEngine.note` says why. Texts are embedded shortest first, so each batch is padded only to its
own longest text, and the rows come back in the order given.

The export uses torch's TorchScript exporter (`dynamo=False`): it traces this module in about 18 s here, the
dynamo exporter in about 80 s, to the same graph (parity 2e-7 both). It traces the module with transformers'
"eager" attention, whose plain MatMul/Softmax graph ONNX Runtime's transformer optimizer recognises and fuses
(`Attention`, `EmbedLayerNormalization`, `BiasGelu`, `LayerNormalization`); the PyTorch module keeps its own
attention. On all-MiniLM-L6-v2 the fused graph embeds SpamAssassin e-mails about 1.25x as fast as the unfused
one, to the same vectors (3.5e-7). If the optimizer is missing or fails, the unfused graph is used.

A first export costs about 20 s here, once per weights (then the graph is read from the cache). For a few
texts that is more than ONNX Runtime saves, so `make_text_engine(encoder, texts=N)` stays with PyTorch when no
graph is cached yet and N is under `EXPORT_PAYS_OFF`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transferkit._version import __version__
from transferkit.features.engine import module_sha256
from transferkit.inference.onnx import OPSET
from transferkit.inference.session import cpu_session
from transferkit.io.atomic import atomic_writer
from transferkit.io.locations import cache_dir
from transferkit.text.encoder import SentenceEncoder

__all__ = ["EXPORT_PAYS_OFF", "PARITY_TOLERANCE", "TEXT_ENGINES", "TextEngine", "make_text_engine"]

log = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-4  # max absolute difference of an embedding coordinate, ONNX Runtime vs PyTorch
TEXT_ENGINES = ("auto", "torch")
# texts: below this, a first export (about 20 s on a 2-core CPU) costs more than ONNX Runtime saves (~0.03 s a text)
EXPORT_PAYS_OFF = 1000
# texts of very different lengths, so the check covers padding and a text cut at the window
PARITY_TEXTS = ("ok", "The meeting moved to Friday at noon; bring the slides.", "free money " * 300)


@dataclass
class TextEngine:
    """Embeddings of token ids (`SentenceEncoder.encode_ids`) as float32 rows, by ONNX Runtime or PyTorch."""

    encoder: SentenceEncoder
    name: str  # "onnxruntime" or "pytorch"
    note: str  # why this engine (shown in logs)
    _session: object | None = None

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        return self.embed_ids(self.encoder.encode_ids(texts)[0], batch_size)

    def embed_ids(self, ids: Sequence[Sequence[int]], batch_size: int = 64) -> np.ndarray:
        if self._session is None:
            return self.encoder.embed_ids(ids, batch_size)
        out = np.zeros((len(ids), self.encoder.dim), dtype=np.float32)
        order = np.argsort([len(row) for row in ids], kind="stable")
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            out[chosen] = _run(self._session, *self.encoder.pad([ids[i] for i in chosen]))
        return out


def _run(session: object, input_ids: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    feeds = {"input_ids": input_ids.numpy(), "attention_mask": mask.numpy()}
    return np.asarray(session.run(None, feeds)[0], dtype=np.float32)  # type: ignore[attr-defined]


def make_text_engine(encoder: SentenceEncoder, prefer: str = "auto", texts: int | None = None) -> TextEngine:
    """An engine for `encoder` as it is now (its weights, tuned or not). `prefer`: auto (ONNX Runtime when the
    module is on the CPU, ONNX Runtime is installed and it matches PyTorch, else PyTorch) or torch. `texts`: how
    many texts it will embed, if known: under `EXPORT_PAYS_OFF`, auto exports no graph that is not cached yet."""
    if prefer not in TEXT_ENGINES:
        raise ValueError(f"engine must be one of {TEXT_ENGINES}, got {prefer!r}")
    device = next(encoder.module.parameters()).device
    if prefer == "torch" or device.type != "cpu":
        return TextEngine(encoder, "pytorch", f"PyTorch ({'asked for' if prefer == 'torch' else f'on {device.type}'})")
    try:
        path = _graph_path(encoder)  # hashes every weight: once per engine
    except ImportError as exc:  # no ONNX Runtime installed: the engine that always works
        return TextEngine(encoder, "pytorch", f"PyTorch (ONNX Runtime unavailable: {type(exc).__name__}: {exc})")
    if texts is not None and texts < EXPORT_PAYS_OFF and not path.is_file():
        return TextEngine(encoder, "pytorch", f"PyTorch (no ONNX graph of these weights cached yet: exporting one "
                                              f"costs more than it saves on {texts} texts)")
    try:
        session, worst = _onnx_session(encoder, path)
    except Exception as exc:  # any failure to export or run falls back to the engine that always works
        first = str(exc).splitlines()[0] if str(exc) else ""
        return TextEngine(encoder, "pytorch", f"PyTorch (ONNX Runtime unavailable: {type(exc).__name__}: {first})")
    if worst > PARITY_TOLERANCE:
        return TextEngine(encoder, "pytorch", f"PyTorch (ONNX Runtime differs by {worst:.2g} > {PARITY_TOLERANCE})")
    return TextEngine(encoder, "onnxruntime", f"ONNX Runtime (matches PyTorch to {worst:.1e})", session)


_SESSIONS: dict[Path, tuple[object, float]] = {}  # this process's sessions and their parity, by model file


def _graph_path(encoder: SentenceEncoder) -> Path:
    """Where the graph of the encoder's module, with its weights as they are now, is cached."""
    import onnxruntime  # optional at import time: a missing runtime means the PyTorch engine

    key = hashlib.sha256(f"text|{module_sha256(encoder.module)}|{encoder.spec.pooling}|{encoder.spec.normalize}|"
                         f"torch {torch.__version__}|opset {OPSET}|ort {onnxruntime.__version__}|fused|"
                         f"transferkit {__version__}".encode()).hexdigest()
    return cache_dir() / "onnx" / f"text-{key[:32]}.onnx"


def _onnx_session(encoder: SentenceEncoder, path: Path) -> tuple[object, float]:
    """A session for the encoder's module at `path` (`_graph_path`: exported on first use, then read from the
    cache) and its largest difference from PyTorch on `PARITY_TEXTS`."""
    if path in _SESSIONS and path.is_file():
        return _SESSIONS[path]
    if not path.is_file():
        _export(encoder, path)
    try:
        session = cpu_session(path)
    except Exception:  # a damaged cache file: export again once
        _export(encoder, path)
        session = cpu_session(path)
    _SESSIONS[path] = session, _parity(session, encoder)
    return _SESSIONS[path]


def _export(encoder: SentenceEncoder, path: Path) -> None:
    log.info(f"exporting text encoder {encoder.spec.name} to ONNX (once per weights; cached in {path.parent})")
    example = encoder.pad(encoder.encode_ids(PARITY_TEXTS[:2])[0])
    dynamic = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
               "embeddings": {0: "batch"}}
    module = encoder.module.eval()
    transformer: Any = module.transformer  # transformers' model: set_attn_implementation is not on nn.Module
    attention = transformer.config._attn_implementation
    with atomic_writer(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformer.set_attn_implementation("eager")
        try:
            torch.onnx.export(module, example, str(tmp), input_names=["input_ids", "attention_mask"],
                              output_names=["embeddings"], dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)
        finally:
            transformer.set_attn_implementation(attention)
        _fuse(tmp, transformer.config)


def _fuse(path: Path, config: object) -> None:
    """Rewrite the graph at `path` with ONNX Runtime's transformer fusions, or leave it as it is if they fail."""
    heads, hidden = getattr(config, "num_attention_heads", 0), getattr(config, "hidden_size", 0)
    quiet = io.StringIO()  # the optimizer prints and logs its shape-inference misses; they are not ours to show
    logging.disable(logging.WARNING)
    try:
        from onnxruntime.transformers.optimizer import optimize_model

        with contextlib.redirect_stdout(quiet):
            fused = optimize_model(str(path), model_type="bert", num_heads=heads, hidden_size=hidden)
            fused.save_model_to_file(str(path.with_suffix(".fused")))
        os.replace(path.with_suffix(".fused"), path)
    except Exception as exc:  # the unfused graph is correct, only slower
        path.with_suffix(".fused").unlink(missing_ok=True)
        log.debug(f"ONNX Runtime's transformer fusions failed ({type(exc).__name__}: {exc}); the graph stays unfused")
    finally:
        logging.disable(logging.NOTSET)


def _parity(session: object, encoder: SentenceEncoder) -> float:
    input_ids, mask = encoder.pad(encoder.encode_ids(PARITY_TEXTS)[0])
    encoder.module.eval()
    with torch.inference_mode():
        reference = encoder.module(input_ids, mask).float().numpy()
    return float(np.abs(_run(session, input_ids, mask) - reference).max())
