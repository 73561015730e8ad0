"""A text model on texts: scores of labelled texts (what `evaluate` summarises and a report shows), metrics in the
same JSON as for images, and top-k predictions for unlabelled texts."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from transferkit.errors import UserError
from transferkit.evaluation.metrics import Metrics, compute_metrics
from transferkit.evaluation.predict import top_k
from transferkit.text.config import TextConfig
from transferkit.text.data import BadRow, LabelledTexts, read_texts
from transferkit.text.model import TextModel

__all__ = ["TextEvaluation", "TextPrediction", "TextScored", "evaluate_texts", "predict_texts", "score_texts"]


@dataclass(frozen=True)
class TextScored:
    """One pass of the model over labelled texts: true labels as indices into the model's classes."""

    texts: list[str]
    origins: list[str]
    labels: np.ndarray
    probs: np.ndarray
    bad: list[BadRow]
    truncated: int


@dataclass(frozen=True)
class TextEvaluation:
    metrics: Metrics
    bad: list[BadRow]
    truncated: int


def _labelled(data: LabelledTexts | str | os.PathLike[str], cfg: TextConfig) -> LabelledTexts:
    if isinstance(data, LabelledTexts):
        return data
    return read_texts(data, cfg.text_column, cfg.label_column, cfg.replace_invalid_utf8)


def score_texts(model: TextModel, data: LabelledTexts | str | os.PathLike[str], cfg: TextConfig = TextConfig(),
                batch_size: int = 64) -> TextScored:
    """Class probabilities of `model` for every usable labelled text (its classes must be among the model's)."""
    texts = _labelled(data, cfg)
    unknown = [c for c in texts.classes if c not in model.class_names]
    if unknown:
        raise UserError(f"{texts.source} has classes the model was not trained on: {', '.join(unknown)}; "
                        f"the model knows {', '.join(model.class_names)}")
    to_model = np.array([model.class_names.index(c) for c in texts.classes], dtype=np.int64)
    scores = model.probabilities(texts.texts, batch_size)
    return TextScored(texts.texts, texts.origins, to_model[texts.labels], scores.probs, texts.bad, scores.truncated)


def evaluate_texts(model: TextModel, data: LabelledTexts | str | os.PathLike[str], cfg: TextConfig = TextConfig(),
                   batch_size: int = 64) -> TextEvaluation:
    """Metrics of `model` on labelled texts, the rows left out, and how many texts were truncated."""
    scored = score_texts(model, data, cfg, batch_size)
    return TextEvaluation(compute_metrics(scored.labels, scored.probs, model.class_names), scored.bad,
                          scored.truncated)


@dataclass(frozen=True)
class TextPrediction:
    text: str
    origin: str
    predictions: list[dict[str, float | str]]  # {"label", "probability"}, most probable first

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "origin": self.origin, "predictions": self.predictions}


def predict_texts(model: TextModel, texts: Sequence[str], origins: Sequence[str] | None = None, top: int = 3,
                  batch_size: int = 64) -> list[TextPrediction]:
    """The `top` most probable classes of each text, in the order given."""
    if not texts:
        return []
    probs = model.probabilities(texts, batch_size).probs
    where = list(origins) if origins is not None else [f"argument {i + 1}" for i in range(len(texts))]
    return [TextPrediction(t, o, row) for t, o, row in zip(texts, where, top_k(probs, model.class_names, top))]
