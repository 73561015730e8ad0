"""The transferability scores against their definitions: LogME against a dense, textbook computation of the
evidence (Bishop, PRML 3.5), and each score ranking informative features above uninformative ones."""

from __future__ import annotations

import math

import numpy as np
import pytest

from transferkit.selection.scores import knn_accuracy, logme, probe_accuracy


def _dense_logme(f: np.ndarray, labels: np.ndarray) -> float:
    """The same fixed point written with the full D x D matrices: A = alpha I + beta F^T F, m = beta A^-1 F^T y."""
    n, d = f.shape
    gram = f.T @ f
    eigen = np.linalg.eigvalsh(gram)
    out = []
    for c in np.unique(labels):
        y = (labels == c).astype(np.float64)
        alpha, beta = 1.0, 1.0
        for _ in range(100):
            a = alpha * np.eye(d) + beta * gram
            m = beta * np.linalg.solve(a, f.T @ y)
            gamma = float(np.sum(beta * eigen / (alpha + beta * eigen)))
            new_alpha, new_beta = gamma / (m @ m), (n - gamma) / np.sum((f @ m - y) ** 2)
            done = abs(new_alpha - alpha) <= 1e-4 * alpha and abs(new_beta - beta) <= 1e-4 * beta
            alpha, beta = new_alpha, new_beta
            if done:
                break
        a = alpha * np.eye(d) + beta * gram
        m = beta * np.linalg.solve(a, f.T @ y)
        error = beta / 2 * np.sum((f @ m - y) ** 2) + alpha / 2 * (m @ m)
        evidence = d / 2 * math.log(alpha) + n / 2 * math.log(beta) - error - np.linalg.slogdet(a)[1] / 2 \
            - n / 2 * math.log(2 * math.pi)
        out.append(evidence / n)
    return float(np.mean(out))


@pytest.mark.parametrize("n, d", [(60, 8), (20, 50)])  # more samples than dimensions, and fewer
def test_logme_equals_the_dense_evidence(n: int, d: int) -> None:
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 3
    f = rng.normal(size=(n, d)) + labels[:, None] * rng.normal(size=d)
    assert logme(f, labels) == pytest.approx(_dense_logme(f, labels), rel=1e-6, abs=1e-8)


def _informative_and_noise(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(4), 25)
    centres = rng.normal(size=(4, 16)) * 3
    informative = centres[labels] + rng.normal(size=(100, 16))
    noise = rng.normal(size=(100, 16))
    return informative, noise, labels


@pytest.mark.parametrize("score", [logme, knn_accuracy, probe_accuracy])
def test_scores_prefer_features_that_separate_the_classes(score: object) -> None:
    informative, noise, labels = _informative_and_noise()
    assert callable(score)
    assert score(informative, labels) > score(noise, labels)


def test_accuracies_are_near_chance_on_noise_and_near_one_when_separable() -> None:
    informative, noise, labels = _informative_and_noise(1)
    assert knn_accuracy(informative, labels) > 0.95 and probe_accuracy(informative, labels) > 0.95
    assert knn_accuracy(noise, labels) < 0.5 and probe_accuracy(noise, labels) < 0.5


def test_knn_leaves_each_image_out() -> None:
    """With k=1 and each image alone in its class the image itself would be its own nearest neighbour: leaving it
    out must give accuracy 0, not 1."""
    f = np.eye(4)
    assert knn_accuracy(f, np.arange(4), k=1) == 0.0
