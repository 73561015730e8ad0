"""Is a challenger better than an incumbent on the same images, beyond the noise of a small validation set?

McNemar's exact test, one-sided: only the images exactly one of the two models gets right say anything about
which is better. Of those `b + c` images, `b` only the challenger gets right and `c` only the incumbent. If the
two were equally good, each would be a fair coin toss, so the p-value is the chance of `b` or more heads in
`b + c` tosses; the challenger wins only below `alpha`. One more image right is never enough (p = 0.5), and
with no mistakes by the challenger that the incumbent avoided it takes 5 (p = 1/32).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ALPHA", "PairedTest", "paired_test", "sign_test_p"]

ALPHA = 0.05  # the challenger must win at this one-sided level


def sign_test_p(wins: int, losses: int) -> float:
    """P(X >= wins) for X ~ Binomial(wins + losses, 1/2): the one-sided exact sign test (1.0 with no pairs)."""
    if wins < 0 or losses < 0:
        raise ValueError(f"wins and losses must be 0 or more, got {wins} and {losses}")
    n = wins + losses
    return sum(math.comb(n, k) for k in range(wins, n + 1)) / 2**n


@dataclass(frozen=True)
class PairedTest:
    """The counts on `images` images seen by both models, and what they decide."""

    images: int
    only_challenger: int  # images only the challenger gets right
    only_incumbent: int  # images only the incumbent gets right
    alpha: float = ALPHA

    @property
    def p_value(self) -> float:
        return sign_test_p(self.only_challenger, self.only_incumbent)

    @property
    def challenger_wins(self) -> bool:
        return self.p_value < self.alpha

    def to_json(self) -> dict[str, Any]:
        return {"images": self.images, "only_finetune_right": self.only_challenger,
                "only_probe_right": self.only_incumbent, "p_value": round(self.p_value, 4), "alpha": self.alpha,
                "finetune_wins": self.challenger_wins}


def paired_test(incumbent_right: np.ndarray, challenger_right: np.ndarray, alpha: float = ALPHA) -> PairedTest:
    """The test on two boolean vectors saying, image by image (the same images in the same order), whether each
    model got it right."""
    a, b = np.asarray(incumbent_right, dtype=bool), np.asarray(challenger_right, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"expected two vectors over the same images, got shapes {a.shape} and {b.shape}")
    return PairedTest(len(a), int(np.sum(b & ~a)), int(np.sum(a & ~b)), alpha)
