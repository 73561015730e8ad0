"""The learning-rate range test: a suggestion half-way down the loss's descent that early spikes do not move,
stopping when the loss diverges, and the learner put back bit for bit (weights, optimizer state, trainable flags,
random states) afterwards."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from transferkit.data.split import load_images
from transferkit.model import TransferModel
from transferkit.runtime import Runtime
from transferkit.training.learner import Learner
from transferkit.training.lr_find import lr_find, smooth, suggest

LRS = [10 ** (-6 + 6 * i / 99) for i in range(100)]


def _range_test_curve() -> list[float]:
    """Flat for 30 steps, falling until step 70, level, then diverging from step 80: a range test's shape."""
    losses = [2.0 - 1.5 * min(1.0, max(0, i - 30) / 40) for i in range(100)]
    losses[80:] = [0.5 * 1.2 ** (i - 80) for i in range(80, 100)]
    return losses


def test_the_suggestion_is_inside_the_descent_well_below_the_minimum() -> None:
    suggestion = suggest(LRS, _range_test_curve())
    assert suggestion in LRS
    assert LRS[30] < suggestion < LRS[70]
    assert suggestion < LRS[int(np.argmin(smooth(_range_test_curve())))] / 10


@pytest.mark.parametrize("value", [0.01, 20.0])  # a lucky batch, a bad one
def test_nothing_in_the_skipped_first_steps_moves_the_suggestion(value: float) -> None:
    clean = suggest(LRS, _range_test_curve())
    for step in range(10):
        losses = _range_test_curve()
        losses[step] = value
        assert suggest(LRS, losses) == clean


@pytest.fixture(scope="module")
def learner(photo_data: Path) -> Learner:
    data = load_images(photo_data, 0.25, 0, workers=0)
    torch.manual_seed(0)
    model = TransferModel.from_pretrained("efficientnet_lite0", list(data.classes), layer="shallow")
    return Learner(model, data, batch_size=6, runtime=Runtime.detect(workers=0))


def test_the_range_test_changes_nothing_a_later_fit_sees(learner: Learner) -> None:
    model = learner.model
    model.unfreeze_top(1)
    learner.optimizer.zero_grad()
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    before = ({k: v.clone() for k, v in model.state_dict().items()}, learner.optimizer.state_dict(),
              [p.requires_grad for p in model.parameters()], learner.sampler.epoch)
    draws_before = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(5), np.random.seed(5), random.seed(5)

    found = lr_find(learner, iterations=12)

    draws_after = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(draws_before[0], draws_after[0]) and np.array_equal(draws_before[1], draws_after[1])
    assert draws_before[2] == draws_after[2]
    state, opt, flags, epoch = before
    after = model.state_dict()
    assert all(torch.equal(state[k], after[k]) for k in state)
    assert learner.optimizer.state_dict()["state"] == opt["state"] == {}
    assert [g["lr"] for g in learner.optimizer.state_dict()["param_groups"]] == [g["lr"] for g in opt["param_groups"]]
    assert [p.requires_grad for p in model.parameters()] == flags and learner.sampler.epoch == epoch
    assert found.stage == "fine-tune" and 2 <= len(found.lrs) <= 12
    assert found.suggestion in found.lrs
    assert found.lrs == sorted(found.lrs)


def test_a_diverging_loss_stops_the_test_early(learner: Learner) -> None:
    learner.model.freeze_base()
    found = lr_find(learner, start=1e-2, end=1e6, iterations=40)
    assert found.diverged and len(found.lrs) < 40
