"""The learning-rate range test: a suggestion inside the range tried, stopping when the loss diverges, and the
learner put back bit for bit (weights, optimizer state, trainable flags, random states) afterwards."""

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


def test_the_suggestion_ignores_an_early_spike_and_sits_below_the_minimum() -> None:
    lrs = [10 ** (-6 + 6 * i / 99) for i in range(100)]
    losses = [2.0 - 1.5 * min(1.0, i / 70) for i in range(100)]
    losses[1] = 0.01  # a lucky first batch
    losses[80:] = [0.5 * 1.2 ** (i - 80) for i in range(80, 100)]
    suggestion = suggest(lrs, smooth(losses))
    assert lrs[2] < suggestion < lrs[80] / 5


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
    assert found.lrs[0] <= found.suggestion * 10 <= found.lrs[-1]
    assert found.lrs == sorted(found.lrs)


def test_a_diverging_loss_stops_the_test_early(learner: Learner) -> None:
    learner.model.freeze_base()
    found = lr_find(learner, start=1e-2, end=1e6, iterations=40)
    assert found.diverged and len(found.lrs) < 40
