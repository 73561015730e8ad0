"""`transferkit export` for a text model: one ONNX graph from token ids to class probabilities, the tokenizer's
file beside it, checked against PyTorch before anything is written.

The graph reads `input_ids` and `attention_mask` (int64, dynamic batch and sequence axes) and holds the encoder,
its pooling and normalisation, the head, the calibration temperature and the softmax. The tokenizer is written
as `<stem>.tokenizer.json`, set to cut at the bundle's window and not to pad, so ONNX Runtime and `tokenizers`
alone reproduce `transferkit predict` (`inference.text_session`). The metadata holds the classes, the modality,
the encoder, the window, the preprocessing, the bundle's sha256 and the transferkit version. The check runs real
texts of different lengths at batch sizes 1, 3 and 8 against the PyTorch path of `predict`; a graph that differs
(max |Δp| > 1e-4 or any top-1 disagreement) is refused and nothing is written.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from transferkit._version import __version__
from transferkit.errors import UserError
from transferkit.inference.checked import CHECK_BATCHES, Parity, describe_parity, parity_at, with_metadata
from transferkit.inference.graph import PARITY_TOLERANCE
from transferkit.inference.onnx import OPSET
from transferkit.inference.session import BUNDLE_SHA256, CLASSES, PREPROCESSING, VERSION, cpu_session
from transferkit.inference.text_session import (
    ENCODER,
    INPUTS,
    MAX_TOKENS,
    MODALITY,
    PAD_ID,
    TOKENIZER_FILE,
    OnnxTextClassifier,
    tokenizer_path,
)
from transferkit.io.atomic import atomic_write_bytes, atomic_write_text
from transferkit.text.bundle import TextBundle, load_text_bundle
from transferkit.text.model import TextModel

__all__ = ["CHECK_SENTENCES", "TextExport", "TextProbabilities", "check_texts", "export_text_onnx", "text_metadata"]

log = logging.getLogger(__name__)

CHECK_TEXTS = 64  # at most this many check texts (spread evenly over what is given)
# used when neither --check nor the bundle's data is there: short, long, and one cut at any window
CHECK_SENTENCES = (
    "ok",
    "Can we move tomorrow's meeting to 3pm?",
    "WIN a FREE iPhone now!!! Click the link to claim your prize",
    "The quarterly report is attached; the numbers for March are final, and the forecast for the second half "
    "follows next week once finance has signed it off.",
    "Cheap meds online, no prescription needed",
    "URGENT: a transfer fee is needed to release your inheritance of $4.5 million. " * 3,
    "Thanks for lunch yesterday!",
    "I pushed a fix for the off-by-one bug in the parser; the tests pass on the release branch again.",
    "Limited offer: refinance your mortgage at the lowest rate ever. Act now, reply STOP to opt out.",
    "please read the attached minutes of the meeting " * 80,
    "Reminder: the library books are due back on Friday",
    "Congratulations! Your email address won the international lottery, send your bank details to claim it",
)


class TextProbabilities(nn.Module):
    """A text model's calibrated class probabilities from token ids: what the exported graph computes."""

    def __init__(self, model: TextModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, attention_mask).softmax(dim=1)


@dataclass(frozen=True)
class TextExport:
    """What `export_text_onnx` wrote and measured."""

    path: Path
    tokenizer: Path
    size_bytes: int
    checked_on: str  # which texts the parity check used
    texts: int
    parity: list[Parity]


def text_metadata(bundle: TextBundle, tokenizer_name: str) -> dict[str, str]:
    """A text bundle's description as string metadata: everything needed to feed the graph, without transferkit."""
    encoder = bundle.model.encoder
    return {
        MODALITY: "text",
        CLASSES: json.dumps(list(bundle.meta["class_names"])),
        ENCODER: encoder.spec.name,
        MAX_TOKENS: str(encoder.max_tokens),
        PAD_ID: str(encoder.pad_id),
        PREPROCESSING: json.dumps({**encoder.preprocessing(), "input": "int64 input_ids and attention_mask (N, L); "
                                   "tokenize with the .tokenizer.json beside the graph, prefix first"}),
        TOKENIZER_FILE: tokenizer_name,
        BUNDLE_SHA256: str(bundle.meta.get("weights_sha256", "")),
        VERSION: __version__,
    }


def export_text_onnx(run: str | os.PathLike[str], out: str | os.PathLike[str],
                     check: str | os.PathLike[str] | None = None) -> TextExport:
    """Write the text bundle in `run` to `out` (and its tokenizer beside it, `tokenizer_path(out)`) after checking
    the graph against PyTorch on `check_texts(...)`. Raises `UserError` (nothing written) if it does not match."""
    out = Path(out)
    bundle = load_text_bundle(run)
    model = bundle.model.cpu().eval()
    texts, checked_on = check_texts(bundle.meta, check)
    meta = text_metadata(bundle, tokenizer_path(out).name)
    graph = with_metadata(_graph(model), meta)
    words = model.encoder.tokenizer.to_str()  # cut at the window, no padding: as `predict` tokenises
    reference = model.probabilities(texts, engine="torch").probs  # the graph is checked against PyTorch
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "check.tokenizer.json").write_text(words, encoding="utf-8")
        classifier = OnnxTextClassifier.load(Path(tmp) / "check.onnx", cpu_session(graph), meta)
    rows, _ = classifier.tokenize(texts)
    figures = [parity_at(size, np.concatenate([classifier.predict(rows[i:i + size])
                                               for i in range(0, len(rows), size)]), reference)
               for size in CHECK_BATCHES]
    bad = [f for f in figures if not f.ok]
    if bad:
        raise UserError(f"the ONNX graph of {run} does not match PyTorch on {checked_on} ({describe_parity(bad)}; "
                        f"limits {PARITY_TOLERANCE:g}, 100%): not written; report this with the bundle's encoder")
    atomic_write_text(tokenizer_path(out), words)
    atomic_write_bytes(out, graph)
    log.debug(f"exported {run} to {out}")
    return TextExport(out, tokenizer_path(out), out.stat().st_size, checked_on, len(texts), figures)


def _graph(model: TextModel) -> bytes:
    """The ONNX bytes of `TextProbabilities(model)`, traced on two texts of different lengths with dynamic batch
    and sequence axes (torch's TorchScript exporter: it traces this module far faster than the dynamo one)."""
    encoder = model.encoder
    example = encoder.pad(encoder.encode_ids(CHECK_SENTENCES[1:3])[0])
    dynamic = {name: {0: "batch", 1: "tokens"} for name in INPUTS} | {"probabilities": {0: "batch"}}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = Path(tmp) / "model.onnx"
        torch.onnx.export(TextProbabilities(model).eval(), example, str(path), input_names=list(INPUTS),
                          output_names=["probabilities"], dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)
        return path.read_bytes()


def check_texts(meta: dict[str, Any], given: str | os.PathLike[str] | None) -> tuple[list[str], str]:
    """Texts for the parity check and a phrase saying what they are: from `given` (a CSV or JSON Lines file with a
    text column, a file of texts one per line, or a folder of class folders), else the bundle's data if it still
    exists, else `CHECK_SENTENCES`."""
    from transferkit.text.data import read_texts, read_unlabelled

    if given is not None:
        given = Path(given)
        texts = read_texts(given).texts if given.is_dir() else read_unlabelled(given)[0]  # a label is not needed
        if not texts:
            raise UserError(f"no usable text in {given}: pass a CSV or JSON Lines file, or a file of texts")
        return _spread(texts), f"{len(_spread(texts))} texts from {given}"
    recorded = (meta.get("data") or {}).get("source")
    if recorded and Path(recorded).exists():
        try:
            texts = _spread(read_texts(recorded).texts)
            return texts + list(CHECK_SENTENCES[-3:]), f"{len(texts)} texts of {recorded} and 3 fixed sentences"
        except UserError:
            pass
    return list(CHECK_SENTENCES), f"{len(CHECK_SENTENCES)} fixed sentences (pass --check DATA for your own texts)"


def _spread(texts: Sequence[str]) -> list[str]:
    if len(texts) <= CHECK_TEXTS:
        return list(texts)
    return [texts[i] for i in np.linspace(0, len(texts) - 1, CHECK_TEXTS).round().astype(int)]
