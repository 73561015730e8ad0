"""The SetFit-style contrastive fine-tune: the pair sampler (O(n), balanced, never a text with itself) and short
real runs of the packaged all-MiniLM-L6-v2 on 16 e-mails of the bundled SpamAssassin sample."""

from __future__ import annotations

import copy
import csv
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from transferkit.errors import InputError
from transferkit.text.contrastive import (
    ContrastiveConfig,
    contrastive_fine_tune,
    fit_logistic_head,
    pair_loss,
    sample_pairs,
)
from transferkit.text.encoder import SentenceEncoder

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "transferkit" / "example_data" / "spam-assassin"
QUICK = ContrastiveConfig(epochs=2, batch_size=8, lr=1e-4, max_tokens=32, seed=0)


def test_pairs_are_linear_in_n_balanced_and_never_a_text_with_itself() -> None:
    labels = np.random.default_rng(0).integers(0, 3, size=3000)
    pairs = sample_pairs(labels, np.random.default_rng(1))
    assert len(pairs) == 2 * len(labels)  # one positive and one negative partner per text: O(n), not O(n²)
    positive = pairs.target == 1.0
    assert positive.sum() == len(labels) and (~positive).sum() == len(labels)
    assert np.all(labels[pairs.left[positive]] == labels[pairs.right[positive]])
    assert np.all(labels[pairs.left[~positive]] != labels[pairs.right[~positive]])
    assert np.all(pairs.left != pairs.right)
    assert np.array_equal(np.sort(pairs.left[positive]), np.arange(len(labels)))  # every text once on each side
    assert np.array_equal(np.sort(pairs.left[~positive]), np.arange(len(labels)))
    partners = pairs.right[positive]
    assert len(np.unique(partners)) > 0.5 * len(labels)  # partners are drawn, not one fixed text per class


def test_pairs_are_seeded_and_a_class_of_one_gets_no_positive() -> None:
    labels = np.array([0, 0, 0, 1])
    first, again = sample_pairs(labels, np.random.default_rng(5)), sample_pairs(labels, np.random.default_rng(5))
    assert np.array_equal(first.left, again.left) and np.array_equal(first.right, again.right)
    assert (first.target == 1.0).sum() == 3 and (first.target == 0.0).sum() == 4
    with pytest.raises(InputError, match="at least two classes"):
        sample_pairs(np.zeros(5, dtype=int), np.random.default_rng(0))


def test_bad_settings_are_refused_up_front() -> None:
    with pytest.raises(InputError, match="epochs must be at least 1, got 0"):
        ContrastiveConfig(epochs=0)


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return SentenceEncoder.load(max_tokens=64)  # a short window keeps these runs to seconds on two cores


@pytest.fixture(scope="module")
def emails() -> tuple[list[str], list[str]]:
    """8 ham and 8 spam e-mails of the bundled sample (the first of each in file order)."""
    with open(SAMPLE / "emails.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    chosen = [r for r in rows if r["label"] == "ham"][:8] + [r for r in rows if r["label"] == "spam"][:8]
    return [r["text"] for r in chosen], [r["label"] for r in chosen]


def test_a_short_real_run_lowers_the_pair_loss(encoder: SentenceEncoder, emails: tuple[list[str], list[str]]) -> None:
    texts, labels = emails
    tuned = copy.deepcopy(encoder)
    tuned.module.requires_grad_(False)  # as TextModel.from_pretrained leaves it: tuned anyway, frozen after
    codes = np.array([label == "spam" for label in labels], dtype=int)
    held = sample_pairs(codes, np.random.default_rng(123))  # the same pairs measured before and after
    before = pair_loss(tuned, texts, held, max_tokens=QUICK.max_tokens)
    result = contrastive_fine_tune(tuned, texts, labels, QUICK)
    after = pair_loss(tuned, texts, held, max_tokens=QUICK.max_tokens)
    assert after < 0.7 * before
    assert result.steps == 2 * 4 and len(result.epoch_losses) == 2  # 32 pairs an epoch, 8 a step
    assert not tuned.module.training
    assert not any(p.requires_grad for p in tuned.module.parameters())
    head = fit_logistic_head(tuned.embed(texts), labels)
    assert (head.predict(tuned.embed(texts)) == np.array(labels)).mean() == 1.0


def test_a_run_is_deterministic_under_its_seed(encoder: SentenceEncoder, emails: tuple[list[str], list[str]]) -> None:
    texts, labels = emails[0][4:12], emails[1][4:12]  # 4 ham, 4 spam
    config = ContrastiveConfig(epochs=1, batch_size=8, lr=1e-4, max_tokens=16, seed=7)
    runs = []
    for _ in range(2):
        tuned = copy.deepcopy(encoder)
        torch.manual_seed(999)  # the process's RNG state must not matter, nor be consumed
        state = torch.get_rng_state()
        result = contrastive_fine_tune(tuned, texts, labels, config)
        assert torch.equal(torch.get_rng_state(), state)
        runs.append((result.epoch_losses, tuned.embed(texts[:4])))
    assert runs[0][0] == runs[1][0]
    assert np.array_equal(runs[0][1], runs[1][1])
    other = copy.deepcopy(encoder)
    assert contrastive_fine_tune(other, texts, labels, replace(config, seed=8)).epoch_losses != runs[0][0]

