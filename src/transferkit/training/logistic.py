"""`auto`'s linear probe: multinomial logistic regression with an L2 penalty on standardised cached features,
fitted by scikit-learn's L-BFGS to convergence (no epochs, rate or batch to choose), then written into the
model's linear head, the standardisation folded into its weights, so the bundle is an ordinary model.

1. The penalty's inverse strength C is chosen from `C_GRID` by stratified k-fold cross-validation on the training
   split (a stratified sample of at most `CV_MOST` rows): the highest mean held-out accuracy, a tie going to the
   lower held-out log loss, then to the stronger penalty (`UNTESTED_C` when a class has a single training image).
2. Fitted with it on the training split: its probabilities on the validation split are the probe's validation
   score, held out like every other strategy's (what fine-tuning must beat, and what the temperature is fitted
   on).
3. Refitted with the same C on the training and validation images together: the head that is kept. Once the
   setting is chosen, the held-out images are more data for the same recipe (with 10 images per class, the
   2 per class held out are a fifth of it); its validation score is the held-out fit's. The held-out fit's
   head is returned too (`HeadFit.warm_start`): auto's fine-tuning starts from it, so its validation images
   stay held out.
4. The calibration temperature is fitted on every held-out probability the recipe made with that C: the
   cross-validation's out-of-fold ones on the training rows and the held-out fit's on the validation split,
   five times the images of the validation split alone (over 10 splits of the bundled sample, a mean ECE of
   0.021 on 2,000 test images against 0.025 with the 80 validation images alone; `benchmarks/temperature_source.py`).

On Fashion-MNIST this is what a tuned scikit-learn probe scores, where the head trained for `probe_epochs` on
the training split alone was 1.3 points below it at 10 images per class (`benchmarks/quality.py`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from transferkit.runtime import Runtime
from transferkit.selection.rank import stratified_rows
from transferkit.selection.scores import standardised_logistic
from transferkit.training.config import TrainConfig
from transferkit.training.head_fit import CalibrationSet, HeadFit
from transferkit.training.loop import EpochResult

__all__ = ["CV_MOST", "C_GRID", "FOLDS", "UNTESTED_C", "LogisticCV", "choose_c", "fit_logistic_head"]

log = logging.getLogger(__name__)

C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0)  # inverse penalty strength on standardised features: firm to light
FOLDS = 5  # at most: capped by the images of the smallest class
CV_MOST = 2000  # training rows the cross-validation looks at, at most (a stratified, seeded sample)
UNTESTED_C = 0.1  # where cross-validation is impossible (a class with one training image): the middle of the grid


@dataclass(frozen=True)
class LogisticCV:
    """Mean held-out accuracy and log loss for each C, over `folds` folds of `images` training images (no folds
    and no scores when a class had too few images to cross-validate)."""

    folds: int
    images: int
    accuracy: dict[float, float]
    loss: dict[float, float]
    chosen: float
    held_out: np.ndarray | None = None  # the chosen C's out-of-fold probabilities on the `images` rows
    labels: np.ndarray | None = None  # those rows' labels

    def to_json(self) -> dict[str, Any]:
        return {"folds": self.folds, "images": self.images, "chosen_c": self.chosen,
                "accuracy": {str(c): round(a, 4) for c, a in self.accuracy.items()},
                "loss": {str(c): round(v, 4) for c, v in self.loss.items()}}


def _classifier(c: float, balanced: bool) -> Any:
    return standardised_logistic(c, balanced, max_iter=2000)


def _log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.mean(np.log(np.maximum(probs[np.arange(len(labels)), labels], 1e-12))))


def choose_c(x: np.ndarray, y: np.ndarray, seed: int, balanced: bool = False) -> LogisticCV:
    """Each C's stratified k-fold held-out accuracy and log loss on (a sample of) the rows; the best C."""
    from sklearn.model_selection import StratifiedKFold

    rows = stratified_rows(y, CV_MOST, seed, per_class=2)
    x, y = x[rows], y[rows]
    smallest = int(np.bincount(y)[np.unique(y)].min())
    if smallest < 2:  # a class with one training image cannot be in a training and a held-out fold at once
        return LogisticCV(0, len(y), {}, {}, UNTESTED_C)
    k = min(FOLDS, smallest)
    folds = list(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(x, y))
    accuracy: dict[float, float] = {}
    loss: dict[float, float] = {}
    out_of_fold: dict[float, np.ndarray] = {}
    for c in C_GRID:
        probs = np.zeros((len(y), int(y.max()) + 1))
        for train, held_out in folds:
            probs[held_out] = _probabilities(_classifier(c, balanced).fit(x[train], y[train]), x[held_out],
                                             probs.shape[1])
        accuracy[c], loss[c], out_of_fold[c] = float(np.mean(probs.argmax(1) == y)), _log_loss(probs, y), probs
    chosen = min(C_GRID, key=lambda c: (-accuracy[c], loss[c], c))
    return LogisticCV(k, len(y), accuracy, loss, chosen, out_of_fold[chosen], y)


def _probabilities(fitted: Any, x: np.ndarray, num_classes: int) -> np.ndarray:
    """(rows, num_classes) probabilities; a class the fit never saw gets 0."""
    out = np.zeros((len(x), num_classes))
    out[:, fitted.classes_] = fitted.predict_proba(x)
    return out


def _into_linear(fitted: Any, linear: nn.Linear) -> None:
    """Write the standardisation and the regression into one linear layer: logits = W (x - mean) / scale + b."""
    scaler, regression = fitted[0], fitted[-1]
    weight = regression.coef_ / scaler.scale_
    bias = regression.intercept_ - weight @ scaler.mean_
    if len(regression.classes_) == 2 and weight.shape[0] == 1:  # scikit-learn keeps one row for two classes
        weight, bias = np.concatenate([-weight / 2, weight / 2]), np.array([-bias[0] / 2, bias[0] / 2])
    full_weight = np.zeros((linear.out_features, linear.in_features))
    full_bias = np.full(linear.out_features, float(bias.min()) - 30.0)  # a class the fit never saw: never chosen
    full_weight[regression.classes_], full_bias[regression.classes_] = weight, bias
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(full_weight))
        linear.bias.copy_(torch.from_numpy(full_bias))


def fit_logistic_head(head: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor,
                      y_val: torch.Tensor, num_classes: int, cfg: TrainConfig, runtime: Runtime) -> HeadFit:
    """C by cross-validation, the held-out fit's validation probabilities, and the head refitted on every image
    (`head` must end in its only linear layer, as a probe's does; it stays on the CPU until the caller moves it)."""
    assert isinstance(head, nn.Sequential) and isinstance(head[-1], nn.Linear)
    assert not any(isinstance(m, nn.Linear) for m in head[:-1]), "a head with a hidden layer is not a linear probe"
    start = time.perf_counter()
    xt, yt, xv, yv = (t.cpu().numpy() for t in (x_train, y_train, x_val, y_val))
    cv = choose_c(xt, yt, cfg.seed, cfg.class_weights)
    how = (f"C by {cv.folds}-fold cross-validation on {cv.images} training images: "
           + ", ".join(f"{c:g} {a:.3f}" for c, a in cv.accuracy.items()) + f"; chose {cv.chosen:g}" if cv.folds else
           f"C {cv.chosen:g} (a class has one training image: too few to cross-validate)")
    log.info(f"linear probe: logistic regression, {how}; scored on the {len(yv)} validation images, then refitted "
             f"on all {len(yt) + len(yv)}")
    held_out = _classifier(cv.chosen, cfg.class_weights).fit(xt, yt)
    train_probs = _probabilities(held_out, xt, num_classes)
    val_probs = _probabilities(held_out, xv, num_classes)
    _into_linear(held_out, head[-1])
    warm_start = {name: tensor.detach().clone() for name, tensor in head.state_dict().items()}
    every = _classifier(cv.chosen, cfg.class_weights).fit(np.concatenate([xt, xv]), np.concatenate([yt, yv]))
    _into_linear(every, head[-1])
    head.eval()
    result = EpochResult("extract", 1, _log_loss(train_probs, yt), float(np.mean(train_probs.argmax(1) == yt)),
                         _log_loss(val_probs, yv), float(np.mean(val_probs.argmax(1) == yv)), 0.0,
                         time.perf_counter() - start)
    details: dict[str, Any] = {"solver": "logistic regression (L2, L-BFGS) on standardised features",
                               "cv": cv.to_json(), "refit_images": len(yt) + len(yv)}
    calibration = None
    if cv.held_out is not None and cv.labels is not None:
        out_of_fold = np.pad(cv.held_out, ((0, 0), (0, num_classes - cv.held_out.shape[1])))  # classes never seen
        calibration = CalibrationSet(np.concatenate([out_of_fold, val_probs]), np.concatenate([cv.labels, yv]),
                                     f"{len(cv.labels) + len(yv)} held-out images ({len(cv.labels)} out-of-fold in "
                                     f"the cross-validation, {len(yv)} validation)")
        details["temperature_fitted_on"] = calibration.what
    return HeadFit([result], f"logistic regression, C={cv.chosen:g}", val_probs.astype(np.float32), yv, details,
                   calibration, warm_start)
