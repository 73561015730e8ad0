"""The paired test `auto` decides with on small validation splits: exact one-sided McNemar (a sign test on the
images exactly one of two models gets right), checked on counts whose answers are known by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from transferkit.evaluation.paired import ALPHA, PairedTest, paired_test, sign_test_p


@pytest.mark.parametrize(("wins", "losses", "p"), [
    (0, 0, 1.0),  # no image tells them apart
    (1, 0, 0.5),  # one image more: a coin toss
    (4, 0, 1 / 16),  # not enough at 0.05
    (5, 0, 1 / 32),  # the fewest clean wins that are
    (6, 1, 8 / 128),  # P(X >= 6), X ~ Bin(7, 1/2): (7 + 1) / 128
    (10, 2, (math.comb(12, 10) + math.comb(12, 11) + 1) / 4096),
    (0, 3, 1.0),  # the challenger lost every one
])
def test_sign_test_p_values(wins: int, losses: int, p: float) -> None:
    assert sign_test_p(wins, losses) == pytest.approx(p)


def test_the_challenger_needs_a_win_beyond_noise() -> None:
    assert not PairedTest(80, 1, 0).challenger_wins  # better by one image: kept out
    assert not PairedTest(80, 4, 0).challenger_wins and PairedTest(80, 5, 0).challenger_wins
    assert not PairedTest(80, 9, 3).challenger_wins  # p = 0.073: three points of accuracy on 80 images is noise
    assert PairedTest(80, 10, 2).challenger_wins  # p = 0.019
    assert not PairedTest(80, 0, 9).challenger_wins  # worse is never kept
    assert PairedTest(80, 5, 0).to_json() == {"images": 80, "only_finetune_right": 5, "only_probe_right": 0,
                                              "p_value": 0.0312, "alpha": ALPHA, "finetune_wins": True}


def test_paired_test_counts_the_discordant_images() -> None:
    probe = np.array([1, 1, 0, 0, 1, 0], dtype=bool)
    tuned = np.array([1, 0, 1, 1, 1, 0], dtype=bool)
    test = paired_test(probe, tuned)
    assert (test.images, test.only_challenger, test.only_incumbent) == (6, 2, 1)
    assert test.p_value == pytest.approx(0.5)  # P(X >= 2), X ~ Bin(3, 1/2)
    with pytest.raises(ValueError, match="same images"):
        paired_test(probe, tuned[:5])
    with pytest.raises(ValueError, match="0 or more"):
        sign_test_p(-1, 2)
