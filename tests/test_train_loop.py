"""The training loop's pure parts and its promises: schedule, discriminative rates, exact micro-batching,
frozen BatchNorm statistics, and "fine-tuning never leaves a worse model than stage 1 had"."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from transferkit.data.split import load_images
from transferkit.model import TransferModel
from transferkit.runtime import Runtime
from transferkit.training.learner import Learner
from transferkit.training.loop import Callback, LoopState, Stage, train_one_epoch
from transferkit.training.schedule import class_weights, group_lrs, lr_at


def test_lr_at_warms_up_then_decays_to_zero() -> None:
    values = [lr_at(s, total_steps=100, warmup_steps=10) for s in range(101)]
    assert values[0] < values[5] < values[9] <= 1.0
    assert max(values) == pytest.approx(1.0, abs=0.01)
    assert all(a >= b for a, b in zip(values[10:], values[11:]))
    assert values[100] == pytest.approx(0.0, abs=1e-9)
    assert lr_at(55, 100, 10) == pytest.approx(0.5, abs=1e-9)  # cosine midpoint


def test_group_lrs_spread_geometrically_below_the_head() -> None:
    names = ["stem", "b0", "b1", "top", "head"]
    rates = group_lrs(names, head_lr=1e-3, base_lr=1e-4, spread=10.0)
    assert rates["head"] == 1e-3 and rates["top"] == pytest.approx(1e-4) and rates["stem"] == pytest.approx(1e-5)
    assert rates["stem"] < rates["b0"] < rates["b1"] < rates["top"] < rates["head"]
    assert rates["b0"] / rates["stem"] == pytest.approx(rates["top"] / rates["b1"])


def test_class_weights_are_balanced_inverse_frequency() -> None:
    w = class_weights([0, 0, 0, 1], num_classes=3)
    assert w.tolist() == pytest.approx([4 / 9, 4 / 3, 1.0])


def test_micro_batches_give_the_full_batch_gradient() -> None:
    torch.manual_seed(0)
    model = TransferModel.from_pretrained("efficientnet_lite0", ["a", "b", "c"])
    model.unfreeze_top(2)
    model.train()
    model.head[0].p = 0.0  # no dropout: the two passes must see the same function
    x, y = torch.randn(8, 3, 96, 96), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    loss_fn = torch.nn.CrossEntropyLoss()
    loss_fn(model(x), y).backward()
    full = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    model.zero_grad()
    for xs, ys in zip(x.split(3), y.split(3)):
        (loss_fn(model(xs), ys) * len(ys) / len(y)).backward()
    sliced = [p.grad for p in model.parameters() if p.requires_grad]
    for a, b in zip(full, sliced):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def _bn_stats(model: TransferModel) -> dict[str, torch.Tensor]:
    return {f"{n}.{k}": v.clone() for n, m in model.base.named_modules() if isinstance(m, _BatchNorm)
            for k, v in (("mean", m.running_mean), ("var", m.running_var))}


def test_stage_one_changes_only_the_head_and_stage_two_cannot_make_it_worse(photo_data: Path) -> None:
    torch.manual_seed(0)
    data = load_images(photo_data, val_split=0.25, seed=0)
    model = TransferModel.from_pretrained("efficientnet_lite0", list(data.classes))
    base_before = {k: v.clone() for k, v in model.base.state_dict().items()}
    learner = Learner(model, data, batch_size=8, runtime=Runtime.detect(workers=0))

    stage1 = learner.fit(epochs=1, lr=3e-3)
    for key, value in model.base.state_dict().items():  # weights *and* BatchNorm running mean/var untouched
        assert torch.equal(value, base_before[key]), key
    best_after_stage1 = learner.best.val_loss
    assert best_after_stage1 == min(r.val_loss for r in stage1)
    stage1_state = {k: v.clone() for k, v in model.state_dict().items()}
    stats = _bn_stats(model)

    # A destructive learning rate: every stage-2 epoch is worse, so the stage-1 weights must come back.
    model.unfreeze_top(2)
    stage2 = learner.fit(epochs=2, lr=50.0, base_lr=50.0, warmup_epochs=0)
    assert all(r.val_loss > best_after_stage1 for r in stage2) or math.isnan(stage2[0].val_loss)
    assert learner.best.val_loss == best_after_stage1
    for key, value in model.state_dict().items():
        assert torch.equal(value, stage1_state[key]), key
    for key, value in _bn_stats(model).items():  # unfrozen BN stays in inference mode by default
        assert torch.equal(value, stats[key]), key


def test_fine_tune_uses_lower_rates_for_pretrained_groups(photo_data: Path) -> None:
    data = load_images(photo_data, val_split=0.25, seed=0)
    model = TransferModel.from_pretrained("efficientnet_lite0", list(data.classes))
    learner = Learner(model, data, batch_size=8, runtime=Runtime.detect(workers=0))
    groups_before = [id(g) for g in learner.optimizer.param_groups]
    model.unfreeze_top(3)
    learner.fit(epochs=1, lr=3e-4, base_lr=1e-4, warmup_epochs=0)
    assert [id(g) for g in learner.optimizer.param_groups] == groups_before  # groups made once
    rates = {g["name"]: g["lr"] for g in learner.optimizer.param_groups}
    assert rates["head"] > rates["conv_head"] > rates["blocks.6"] > rates["blocks.5"] > rates["stem"] > 0


def test_early_stopping_stops_after_patience(photo_data: Path) -> None:
    data = load_images(photo_data, val_split=0.25, seed=0)
    model = TransferModel.from_pretrained("efficientnet_lite0", list(data.classes))
    learner = Learner(model, data, batch_size=8, runtime=Runtime.detect(workers=0))
    learner.fit(epochs=1, lr=3e-3)
    results = learner.fit(epochs=6, lr=80.0, patience=2, warmup_epochs=0)  # only gets worse
    assert len(results) == 2


def test_probe_fits_the_head_on_frozen_features_only(photo_data: Path) -> None:
    torch.manual_seed(0)
    data = load_images(photo_data, val_split=0.25, seed=0)
    model = TransferModel.from_pretrained("efficientnet_lite0", list(data.classes))
    base_before = {k: v.clone() for k, v in model.base.state_dict().items()}
    head_before = [p.clone() for p in model.head.parameters()]
    learner = Learner(model, data, batch_size=8, runtime=Runtime.detect(workers=0))
    result = learner.probe(epochs=20, lr=3e-3)
    assert result.stage == "probe" and learner.best.where == "probe epoch 1"
    assert result.train_accuracy > 0.9  # three distinct photos: linearly separable in ImageNet features
    for key, value in model.base.state_dict().items():
        assert torch.equal(value, base_before[key]), key
    assert not any(torch.equal(a, b) for a, b in zip(head_before, model.head.parameters()))
    model.unfreeze_top(1)
    with pytest.raises(ValueError, match="base frozen"):
        learner.probe()


def _one_batch_gradient(loss_fn: torch.nn.Module, micro_batch: int) -> list[torch.Tensor]:
    """The gradient the loop leaves after one imbalanced batch of 16, run in slices of `micro_batch`."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 3))
    x = torch.randn(16, 6, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0] * 11 + [1] * 4 + [2])
    optimizer = torch.optim.SGD([{"params": list(model.parameters()), "name": "head"}], lr=0.0)
    stage = Stage("check", 1, [(x, y)], lambda: (0.0, 0.0), optimizer, {"head": 0.0}, micro_batch, 0.0)
    train_one_epoch(model, stage, loss_fn, Runtime(torch.device("cpu")), 0, [])
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_micro_batches_are_exact_with_class_weights(smoothing: float) -> None:
    """A class-weighted mean divides by the sum of the weights: each slice must count by its share of that sum
    (counting slices by their size was 31% off on such a batch)."""
    weighted = torch.nn.CrossEntropyLoss(weight=class_weights([0] * 11 + [1] * 4 + [2], 3), label_smoothing=smoothing)
    whole = _one_batch_gradient(weighted, micro_batch=16)
    for micro in (3, 5, 8):
        for a, b in zip(whole, _one_batch_gradient(weighted, micro_batch=micro)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_a_second_fit_with_the_same_stage_name_trains_again(photo_data: Path) -> None:
    data = load_images(photo_data, val_split=0.25, seed=0)
    model = TransferModel.from_pretrained("efficientnet_lite0", list(data.classes))
    learner = Learner(model, data, batch_size=8, runtime=Runtime.detect(workers=0))
    assert len(learner.fit(epochs=1, lr=3e-3, name="head")) == 1
    again = learner.fit(epochs=1, lr=3e-3, warmup_epochs=0, name="head")  # used to train 0 epochs
    assert [(r.stage, r.epoch) for r in again] == [("head", 1)]
    assert [r.stage for r in learner.history] == ["head", "head"]


class _HeadAtStart(Callback):
    """Records the head's weights as each stage starts."""

    def __init__(self, model: TransferModel) -> None:
        self.model = model
        self.at_start: dict[str, dict[str, torch.Tensor]] = {}

    def before_fit(self, stage: Stage, state: LoopState) -> None:
        self.at_start[stage.name] = {k: v.clone() for k, v in self.model.head.state_dict().items()}


def test_a_fitted_head_skips_stage_one_and_fine_tuning_starts_from_it(photo_data: Path) -> None:
    torch.manual_seed(0)
    data = load_images(photo_data, val_split=0.25, seed=0)
    model = TransferModel.from_pretrained("efficientnet_lite0", list(data.classes))
    with torch.no_grad():  # a head "fitted" elsewhere: any weights that are not the fresh initialisation
        for p in model.head.parameters():
            p.mul_(-2.0).add_(0.01)
    fitted = {k: v.clone() for k, v in model.head.state_dict().items()}
    recorder = _HeadAtStart(model)
    learner = Learner(model, data, batch_size=8, runtime=Runtime.detect(workers=0), callbacks=[recorder])
    history = learner.fine_tune(epochs=2, fine_tune_epochs=1, unfreeze_blocks=1, head_fitted=True)
    assert [r.stage for r in history] == ["fine-tune"]  # no probe, no head epochs: no pass of the base for them
    assert list(recorder.at_start) == ["fine-tune"]
    for key, value in recorder.at_start["fine-tune"].items():
        assert torch.equal(value, fitted[key]), key
    assert model.trainable_blocks() == ["conv_head"]


def test_a_fitted_head_still_gets_stage_one_when_nothing_is_fine_tuned(photo_data: Path) -> None:
    data = load_images(photo_data, val_split=0.25, seed=0)
    model = TransferModel.from_pretrained("efficientnet_lite0", list(data.classes))
    learner = Learner(model, data, batch_size=8, runtime=Runtime.detect(workers=0))
    history = learner.fine_tune(epochs=1, fine_tune_epochs=0, probe_epochs=0, head_fitted=True)
    assert [r.stage for r in history] == ["head"]  # the stage that trains something, not an empty run
