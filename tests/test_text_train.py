"""Text training from Python: the embedding cache (reused by text, rebuilt when damaged), the text bundle (the
head alone, or the encoder too once it was trained; the pretrained weights checked by hash), and repeats set aside
before the split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from text_corpus import HAM, SPAM, write_csv

from transferkit.errors import UserError
from transferkit.text.bundle import load_text_bundle, save_text_bundle
from transferkit.text.cache import embed_cached, load_text_features
from transferkit.text.data import read_texts
from transferkit.text.train import TextTrainResult, train_text
from transferkit.training.config import TrainConfig


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TextTrainResult:
    root = tmp_path_factory.mktemp("train")
    data = write_csv(root / "mail.csv", spam=[*SPAM, SPAM[0]], ham=[*HAM, SPAM[1]])  # a duplicate and a leak
    test = write_csv(root / "test.csv", spam=["Claim your FREE gift card now, limited offer!!!"],
                     ham=["Are we still on for the code review at 2pm?"], bad=True)
    return train_text(data, root / "run", TrainConfig(strategy="extract", probe_epochs=40, seed=1), test=test)


def test_test_data_is_evaluated_and_recorded(trained: TextTrainResult) -> None:
    assert trained.test_metrics is not None and trained.test_metrics.count == 2
    meta = json.loads((trained.run_dir / "model.json").read_text())
    assert meta["metrics"]["test"]["count"] == 2
    assert "skipped (test)" in (trained.run_dir / "train.log").read_text()


def test_repeats_are_left_out_before_the_split(trained: TextTrainResult) -> None:
    reasons = [row.reason for row in trained.data.bad]
    assert len(reasons) == 2
    assert any("a duplicate; kept once" in r for r in reasons) and any("a leak between classes" in r for r in reasons)
    assert len(trained.data) == len(SPAM) + len(HAM)
    log = (trained.run_dir / "train.log").read_text()
    assert "1 of them repeat a text of another class" in log


def test_bundle_round_trip(trained: TextTrainResult) -> None:
    again = load_text_bundle(trained.run_dir).model
    texts = [SPAM[2], HAM[3], "a brand new sentence about lunch"]
    expected = trained.model.probabilities(texts).probs
    np.testing.assert_allclose(again.probabilities(texts).probs, expected, atol=1e-6)
    assert again.temperature == trained.model.temperature and again.class_names == ["ham", "spam"]


def test_bundle_names_the_encoder_weights_by_hash(trained: TextTrainResult, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for name in ("model.json", "model.safetensors"):
        (run / name).write_bytes((trained.run_dir / name).read_bytes())
    meta = json.loads((run / "model.json").read_text())
    meta["encoder"]["weights"]["sha256"] = "f" * 64
    (run / "model.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="was trained on all-MiniLM-L6-v2 weights with sha256 ffffffffffff"):
        load_text_bundle(run)


def test_a_trained_encoder_is_saved_in_the_bundle(trained: TextTrainResult, tmp_path: Path) -> None:
    model = load_text_bundle(trained.run_dir).model
    with torch.no_grad():
        model.base.transformer.embeddings.word_embeddings.weight[:] *= 1.5  # as a fine-tune would change it
    model.base_trained = True
    save_text_bundle(model, tmp_path / "tuned", {})
    again = load_text_bundle(tmp_path / "tuned").model
    assert again.base_trained
    np.testing.assert_allclose(again.probabilities([SPAM[0]]).probs, model.probabilities([SPAM[0]]).probs,
                               atol=1e-6)
    assert (tmp_path / "tuned" / "model.safetensors").stat().st_size > 50_000_000


def test_cache_reuses_by_text_and_rebuilds_when_damaged(trained: TextTrainResult, tmp_path: Path) -> None:
    encoder = trained.model.encoder
    data = read_texts(write_csv(tmp_path / "a.csv"))
    first = embed_cached(encoder, data, tmp_path / "cache")
    assert (first.computed, first.reused) == (len(data), 0)
    relabelled = read_texts(write_csv(tmp_path / "b.csv", spam=HAM, ham=SPAM))  # same texts, other labels
    second = embed_cached(encoder, relabelled, tmp_path / "cache")
    assert (second.computed, second.reused) == (0, len(data))
    order = [relabelled.texts.index(t) for t in data.texts]
    np.testing.assert_array_equal(np.asarray(second.features)[order], np.asarray(first.features))
    assert load_text_features(tmp_path / "cache").labels.tolist() == relabelled.labels.tolist()
    with open(tmp_path / "cache" / "features.npy", "r+b") as f:  # a flipped byte: the checksum fails
        f.seek(-1, 2)
        f.write(b"\x00" if f.read(1) != b"\x00" else b"\x01")
    assert load_text_features(tmp_path / "cache") is None
    third = embed_cached(encoder, relabelled, tmp_path / "cache")
    assert third.computed == len(data)
    np.testing.assert_allclose(np.asarray(third.features), np.asarray(second.features), atol=1e-6)
