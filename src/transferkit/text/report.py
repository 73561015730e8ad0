"""The evaluation report of a text model: the same HTML and `metrics.json` as for images (`evaluation.html`),
from one pass of the model over labelled texts; the most confident mistakes show their text, HTML-escaped."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from transferkit.errors import UserError
from transferkit.evaluation.html import METRICS_FILE, render_html
from transferkit.evaluation.report import ReportData, build_report
from transferkit.io.atomic import atomic_write_text
from transferkit.text.config import TextConfig
from transferkit.text.data import LabelledTexts
from transferkit.text.evaluate import score_texts
from transferkit.text.model import TextModel

__all__ = ["write_text_report"]


def write_text_report(model: TextModel, meta: dict[str, Any], data: LabelledTexts | str | os.PathLike[str],
                      out: str | os.PathLike[str], evaluated_on: str, cfg: TextConfig = TextConfig(),
                      on_validation_split: bool = False) -> ReportData:
    """Score the labelled texts once, build every number, write `out` (HTML) and `metrics.json` beside it."""
    out = Path(out)
    if out.is_dir():
        raise UserError(f"the report path {out} is a folder: give the report's file name, such as "
                        f"{out / 'report.html'}")
    scored = score_texts(model, data, cfg)
    report = build_report(meta, scored.labels, scored.probs, scored.origins, [row.where() for row in scored.bad],
                          evaluated_on, on_validation_split, texts=scored.texts)
    title = f"transferkit report: {model.encoder.spec.name} on {evaluated_on}"
    atomic_write_text(out, render_html(report, title=title))
    atomic_write_text(out.parent / METRICS_FILE, json.dumps(report.to_json(), indent=2) + "\n")
    return report
