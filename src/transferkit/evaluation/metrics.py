"""Classification metrics from predicted probabilities, computed with scikit-learn."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

__all__ = ["Metrics", "compute_metrics", "format_metrics"]


@dataclass(frozen=True)
class Metrics:
    accuracy: float
    macro_f1: float
    per_class: dict[str, dict[str, float]]
    confusion_matrix: list[list[int]]
    class_names: list[str]
    count: int

    def to_json(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "count": self.count,
            "per_class": self.per_class,
            "confusion_matrix": {"labels": self.class_names, "matrix": self.confusion_matrix},
        }


def compute_metrics(labels: np.ndarray, probs: np.ndarray, class_names: list[str]) -> Metrics:
    """Metrics over every class the model knows (a class absent from `labels` has support 0)."""
    predicted = probs.argmax(axis=1)
    order = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(labels, predicted, labels=order, zero_division=0)
    per_class = {
        name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
               "support": int(support[i])}
        for i, name in enumerate(class_names)
    }
    present = sorted(set(labels.tolist()) | set(predicted.tolist()))
    return Metrics(
        accuracy=float(accuracy_score(labels, predicted)),
        macro_f1=float(f1_score(labels, predicted, labels=present, average="macro", zero_division=0)),
        per_class=per_class,
        confusion_matrix=confusion_matrix(labels, predicted, labels=order).tolist(),
        class_names=list(class_names),
        count=int(len(labels)),
    )


def format_metrics(m: Metrics, unit: str = "images") -> str:
    """A readable table: overall figures, per-class precision/recall/F1/support, then the confusion matrix
    (`unit` names what was counted: images, texts)."""
    width = max(10, *(len(n) for n in m.class_names))
    lines = [f"accuracy {m.accuracy:.4f}   macro F1 {m.macro_f1:.4f}   {unit} {m.count}", "",
             f"{'class':<{width}}  precision  recall     f1  support"]
    for name, figures in m.per_class.items():
        lines.append(f"{name:<{width}}  {figures['precision']:9.3f}  {figures['recall']:6.3f}  "
                     f"{figures['f1']:5.3f}  {int(figures['support']):7d}")
    lines += ["", "confusion matrix (rows: true class, columns: predicted, same order as above)"]
    for name, counts in zip(m.class_names, m.confusion_matrix):
        lines.append(f"{name:<{width}}  " + " ".join(f"{v:4d}" for v in counts))
    return "\n".join(lines)
