"""Transferability scores: how well frozen features of a candidate (backbone, layer) suit a labelled data set,
computed from the features alone, before any training.

- `logme`: the log marginal evidence of a Bayesian linear model on the features, per sample, averaged over
  the one-hot label columns (You et al., "LogME: Practical Assessment of Pre-trained Models for Transfer
  Learning", ICML 2021, Algorithm 1). Higher is better; no hyper-parameter is chosen by hand: the prior
  precision alpha and noise precision beta are fitted by the paper's fixed-point iteration.
- `knn_accuracy`: leave-one-out k-nearest-neighbour accuracy (cosine distance).
- `probe_accuracy`: stratified k-fold cross-validated accuracy of a logistic regression (the linear probe);
  `probe_accuracy_with_views` the same without and with an augmented view of each training image added (one set
  of views per augmentation), on the same folds: what each augmentation does to the probe.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["knn_accuracy", "logme", "probe_accuracy", "probe_accuracy_with_views", "standardised_logistic"]

_MAX_ITERATIONS = 100
_TOLERANCE = 1e-4  # relative change of alpha/beta at which the fixed point is reached


def logme(features: np.ndarray, labels: np.ndarray) -> float:
    """LogME of `features` (N x D) for integer `labels` (N,): mean over classes of the maximised log evidence
    per sample. Works for D > N too: the D - N directions outside the features' span have zero singular value
    and only add `log alpha` terms to the determinant."""
    f = np.asarray(features, dtype=np.float64)
    n, d = f.shape
    u, sigma, _ = np.linalg.svd(f, full_matrices=False)
    s2 = sigma**2
    k = s2.size
    evidences = []
    for c in np.unique(labels):
        y = (labels == c).astype(np.float64)
        uy = u.T @ y  # y in the basis of the features' left singular vectors
        outside = float(y @ y - uy @ uy)  # the part of y no linear map of the features can reach
        z = sigma * uy  # F^T y in the right singular basis
        alpha, beta = 1.0, 1.0
        for _ in range(_MAX_ITERATIONS):
            denominator = alpha + beta * s2
            m = beta * z / denominator  # posterior mean of the weights, in the right singular basis
            gamma = float(np.sum(beta * s2 / denominator))  # effective number of well-determined weights
            mm = float(m @ m)
            residual = outside + float(np.sum((sigma * m - uy) ** 2))
            new_alpha = gamma / max(mm, 1e-12)
            new_beta = (n - gamma) / max(residual, 1e-12)
            done = abs(new_alpha - alpha) <= _TOLERANCE * alpha and abs(new_beta - beta) <= _TOLERANCE * beta
            alpha, beta = new_alpha, new_beta
            if done:
                break
        denominator = alpha + beta * s2
        m = beta * z / denominator
        mm = float(m @ m)
        residual = outside + float(np.sum((sigma * m - uy) ** 2))
        log_det = float(np.sum(np.log(denominator))) + (d - k) * math.log(alpha)
        evidence = (n * math.log(beta) + d * math.log(alpha) - n * math.log(2 * math.pi)
                    - beta * residual - alpha * mm - log_det) / 2
        evidences.append(evidence / n)
    return float(np.mean(evidences))


def knn_accuracy(features: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """Leave-one-out accuracy of a k-nearest-neighbour vote under cosine similarity (ties: the nearer wins)."""
    f = np.asarray(features, dtype=np.float64)
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    similarity = f @ f.T
    np.fill_diagonal(similarity, -np.inf)  # leave the image itself out
    k = min(k, len(f) - 1)
    nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    n_classes = int(labels.max()) + 1
    votes = np.zeros((len(f), n_classes))
    weights = 1.0 + 1e-6 * np.arange(k, 0, -1)  # one vote each; the nearer neighbour breaks a tie
    np.add.at(votes, (np.repeat(np.arange(len(f)), k), labels[nearest].ravel()), np.tile(weights, len(f)))
    return float(np.mean(votes.argmax(axis=1) == labels))


def standardised_logistic(c: float = 0.1, balanced: bool = False, max_iter: int = 1000) -> Any:
    """The probe every score here fits (and auto's probe, `training.logistic`): standardised features, then an
    L2 logistic regression with inverse penalty `c` (classes weighted by inverse frequency if `balanced`)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter,
                                                              class_weight="balanced" if balanced else None))


def _folds(labels: np.ndarray, folds: int, seed: int) -> object:
    from sklearn.model_selection import StratifiedKFold

    return StratifiedKFold(n_splits=max(2, min(folds, int(np.bincount(labels).min()))), shuffle=True,
                           random_state=seed)


def probe_accuracy(features: np.ndarray, labels: np.ndarray, folds: int = 5, seed: int = 0) -> float:
    """Stratified k-fold accuracy of a standardised logistic regression (folds capped by the smallest class)."""
    from sklearn.model_selection import cross_val_score

    return float(np.mean(cross_val_score(standardised_logistic(), features, labels, cv=_folds(labels, folds, seed))))


def probe_accuracy_with_views(features: np.ndarray, views: Mapping[str, np.ndarray], labels: np.ndarray,
                              folds: int = 5, seed: int = 0) -> tuple[float, dict[str, float]]:
    """k-fold probe accuracy (as `probe_accuracy`) trained on the plain features alone, and for each named set of
    views, with `views[name][i]` (an augmented view of image i) added as one more example of its class; all
    tested on the plain features of the held-out fold, on the same folds."""
    without: list[float] = []
    with_views: dict[str, list[float]] = {name: [] for name in views}
    for train, test in _folds(labels, folds, seed).split(features, labels):  # type: ignore[attr-defined]
        runs = [(features[train], labels[train], without)]
        runs += [(np.concatenate([features[train], extra[train]]), np.concatenate([labels[train], labels[train]]),
                  with_views[name]) for name, extra in views.items()]
        for x, y, scores in runs:
            probe = standardised_logistic().fit(x, y)
            scores.append(float(np.mean(probe.predict(features[test]) == labels[test])))
    return float(np.mean(without)), {name: float(np.mean(v)) for name, v in with_views.items()}
