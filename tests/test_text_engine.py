"""The text engine: the sentence encoder in ONNX Runtime on a CPU, checked against PyTorch, rows in the order
given, a damaged cached graph exported again, and PyTorch when asked."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from transferkit.text.encoder import SentenceEncoder
from transferkit.text.engine import _SESSIONS, EXPORT_PAYS_OFF, PARITY_TOLERANCE, _graph_path, make_text_engine

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "transferkit" / "example_data" / "spam-assassin"


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return SentenceEncoder.load(max_tokens=64)


def sample_texts(count: int) -> list[str]:
    with open(SAMPLE / "test.csv", encoding="utf-8", newline="") as f:
        return [row["text"] for row in csv.DictReader(f)][:count]


def test_onnx_runtime_embeds_as_pytorch_does_in_the_order_given(encoder: SentenceEncoder) -> None:
    engine = make_text_engine(encoder)
    assert engine.name == "onnxruntime", engine.note
    texts = ["short", *sample_texts(11), ""]  # lengths from 1 token to the window, and an empty text
    ours = engine.embed(texts, batch_size=4)
    assert ours.shape == (len(texts), encoder.dim) and ours.dtype == np.float32
    assert np.abs(ours - encoder.embed(texts, batch_size=5)).max() <= PARITY_TOLERANCE


def test_a_damaged_cached_graph_is_exported_again(encoder: SentenceEncoder) -> None:
    make_text_engine(encoder)
    path = _graph_path(encoder)
    _SESSIONS.clear()
    path.write_bytes(b"not an onnx file")
    engine = make_text_engine(encoder)
    assert engine.name == "onnxruntime", engine.note
    assert path.stat().st_size > 1_000_000


def test_pytorch_when_asked_and_unknown_engines_refused(encoder: SentenceEncoder) -> None:
    assert make_text_engine(encoder, "torch").name == "pytorch"
    with pytest.raises(ValueError, match="engine must be one of"):
        make_text_engine(encoder, "tensorrt")


def test_the_cached_graph_has_onnx_runtimes_fused_attention(encoder: SentenceEncoder) -> None:
    import onnx

    make_text_engine(encoder)
    path = _graph_path(encoder)
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert {"Attention", "BiasGelu"} <= ops, sorted(ops)  # the eager-attention trace, fused
    assert "Softmax" not in ops


def test_a_few_texts_export_no_graph_but_use_one_that_is_cached(encoder: SentenceEncoder, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path))
    _SESSIONS.clear()
    few = make_text_engine(encoder, texts=EXPORT_PAYS_OFF - 1)
    assert few.name == "pytorch" and "costs more than it saves" in few.note
    assert not list(tmp_path.rglob("*.onnx"))
    assert make_text_engine(encoder, texts=EXPORT_PAYS_OFF).name == "onnxruntime"  # enough texts: exported
    assert make_text_engine(encoder, texts=3).name == "onnxruntime"  # now cached: used for a few texts too
