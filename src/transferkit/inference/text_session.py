"""`OnnxTextClassifier`: an exported text model run by ONNX Runtime and the `tokenizers` library, nothing else (no
torch, no transformers): what serves a text `.onnx` file and what a deployment without transferkit would do.

The graph (`text.export`) reads token ids and the attention mask (int64, (N, L), any N and L) and returns class
probabilities; pooling, normalisation, the head, the temperature and the softmax are inside. The tokenizer it
was trained with is the file beside it (`tokenizer_path`), already set to cut texts at the window and not to pad;
the metadata says the prefix some encoders want before each text and the id that pads a batch.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from transferkit._version import __version__
from transferkit.inference.session import BUNDLE_SHA256, CLASSES, PREPROCESSING, VERSION

__all__ = ["ENCODER", "MAX_TOKENS", "MODALITY", "PAD_ID", "TOKENIZER_FILE", "OnnxTextClassifier", "pad_rows",
           "tokenizer_path"]

MODALITY, ENCODER, MAX_TOKENS, PAD_ID, TOKENIZER_FILE = "modality", "encoder", "max_tokens", "pad_id", "tokenizer"
INPUTS = ("input_ids", "attention_mask")


def tokenizer_path(graph: str | os.PathLike[str]) -> Path:
    """Where the tokenizer of an exported text graph lives: `model.onnx` → `model.tokenizer.json`."""
    graph = Path(graph)
    return graph.with_name(f"{graph.stem}.tokenizer.json")


def pad_rows(rows: Sequence[Sequence[int] | np.ndarray], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """int64 token ids padded to the longest row with `pad_id`, and the attention mask (1 for real tokens)."""
    length = max((len(row) for row in rows), default=0)
    ids = np.full((len(rows), length), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), length), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, :len(row)], mask[i, :len(row)] = row, 1
    return ids, mask


class OnnxTextClassifier:
    """`tokenize(texts)` → token id rows (and which were cut); `predict(rows)` → probabilities (N, classes), the
    rows padded per call to their own longest."""

    modality = "text"

    def __init__(self, session: Any, tokenizer: Any, meta: dict[str, str], source: Path | None = None) -> None:
        self.session, self.tokenizer, self.meta, self.source = session, tokenizer, dict(meta), source
        self.classes: list[str] = [str(c) for c in json.loads(meta[CLASSES])]
        self.preprocessing: dict[str, Any] = json.loads(meta[PREPROCESSING])
        self.max_tokens = int(meta[MAX_TOKENS])
        self.pad_id = int(meta[PAD_ID])
        self.prefix = str(self.preprocessing.get("prefix", ""))

    @classmethod
    def load(cls, path: str | os.PathLike[str], session: Any, meta: dict[str, str]) -> OnnxTextClassifier:
        """The text graph at `path` (its session and metadata already read) with the tokenizer beside it."""
        from tokenizers import Tokenizer

        from transferkit.errors import UserError

        path = Path(path)
        words = tokenizer_path(path)
        if not words.is_file():
            raise UserError(f"{path} is a text model but its tokenizer {words} is missing: keep the files "
                            f"`transferkit export` wrote together")
        try:
            return cls(session, Tokenizer.from_file(str(words)), meta, path)
        except Exception as exc:  # tokenizers and a bad metadata raise their own types
            raise UserError(f"{path} or {words} is unusable ({type(exc).__name__}: {str(exc).splitlines()[0]}): "
                            f"export the model again with `transferkit export`") from None

    def info(self) -> dict[str, Any]:
        """What the server's `GET /info` shows."""
        import onnxruntime

        return {
            "model": str(self.source) if self.source is not None else None,
            "modality": "text",
            "engine": "onnxruntime",
            "classes": self.classes,
            "encoder": {"name": self.meta.get(ENCODER)},
            "preprocessing": self.preprocessing,
            "bundle_sha256": self.meta.get(BUNDLE_SHA256),
            "versions": {"transferkit": __version__, "bundle_transferkit": self.meta.get(VERSION),
                         "onnxruntime": onnxruntime.__version__, "python": platform.python_version()},
        }

    def tokenize(self, texts: Sequence[str]) -> tuple[list[np.ndarray], list[bool]]:
        """Each text's token ids (the prefix first, cut at the window) and whether it was cut."""
        encodings = self.tokenizer.encode_batch([self.prefix + t for t in texts])
        return [np.asarray(e.ids, dtype=np.int64) for e in encodings], [bool(e.overflowing) for e in encodings]

    def predict(self, rows: Sequence[np.ndarray]) -> np.ndarray:
        """Class probabilities (N, classes) of token id rows (`tokenize`), padded here to their longest."""
        ids, mask = pad_rows(rows, self.pad_id)
        out = self.session.run(None, {INPUTS[0]: ids, INPUTS[1]: mask})[0]
        return np.asarray(out, dtype=np.float32)
