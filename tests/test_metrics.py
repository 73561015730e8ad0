"""Metric figures agree with scikit-learn's, class order is the model's, and top-k is ranked."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from transferkit.evaluation.metrics import compute_metrics, format_metrics
from transferkit.evaluation.predict import top_k


def test_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=200)
    probs = rng.dirichlet(np.ones(4), size=200)
    probs[np.arange(100), labels[:100]] += 1.0  # half of them right
    names = ["a", "b", "c", "d"]
    m = compute_metrics(labels, probs, names)
    predicted = probs.argmax(1)
    assert m.accuracy == pytest.approx(accuracy_score(labels, predicted))
    assert m.macro_f1 == pytest.approx(f1_score(labels, predicted, average="macro"))
    p, r, f, s = precision_recall_fscore_support(labels, predicted)
    for i, name in enumerate(names):
        assert m.per_class[name] == pytest.approx({"precision": p[i], "recall": r[i], "f1": f[i], "support": s[i]})
    assert m.confusion_matrix == confusion_matrix(labels, predicted).tolist()
    assert m.to_json()["confusion_matrix"]["labels"] == names


def test_class_absent_from_the_data_keeps_its_row() -> None:
    labels = np.array([0, 0, 1])
    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.1, 0.9, 0.0]])
    m = compute_metrics(labels, probs, ["x", "y", "z"])
    assert m.per_class["z"]["support"] == 0
    assert len(m.confusion_matrix) == 3 and m.confusion_matrix[0] == [1, 1, 0]
    text = format_metrics(m)
    assert "accuracy 0.6667" in text and text.count("\n") > 6


def test_top_k_is_ranked_and_named() -> None:
    probs = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]])
    rows = top_k(probs, ["a", "b", "c"], 2)
    assert rows == [[{"label": "b", "probability": 0.6}, {"label": "c", "probability": 0.3}],
                    [{"label": "a", "probability": 0.5}, {"label": "c", "probability": 0.3}]]
    assert len(top_k(probs, ["a", "b", "c"], 10)[0]) == 3
