"""The evaluation report as one self-contained HTML file (figures as PNG, thumbnails as JPEG, both inline as
base64: it opens offline, mails as one attachment) plus `metrics.json` with the same numbers beside it.

Figures are matplotlib drawn on the Agg canvas directly (`Figure` + `FigureCanvasAgg`, no pyplot), so making a
report neither needs a display nor changes the caller's matplotlib backend or global state.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from transferkit.data.files import LabelledFiles
from transferkit.data.images import BadImage, load_image
from transferkit.errors import UserError
from transferkit.evaluation.predict import score
from transferkit.evaluation.report import Calibration, ReportData, build_report
from transferkit.io.atomic import atomic_write_text
from transferkit.model import TransferModel
from transferkit.runtime import Runtime

__all__ = ["METRICS_FILE", "SECTIONS", "render_html", "write_report"]

METRICS_FILE = "metrics.json"
SECTIONS = ("warnings", "summary", "facts", "curves", "confusion", "per-class", "mistakes", "calibration")
THUMBNAIL = 128
_TRAIN, _VAL = "#1f77b4", "#d62728"


def write_report(model: TransferModel, meta: dict[str, Any], files: LabelledFiles | str | os.PathLike[str],
                 out: str | os.PathLike[str], evaluated_on: str, on_validation_split: bool = False,
                 runtime: Runtime | None = None) -> ReportData:
    """Score `files` once, build every number, write `out` (HTML) and `metrics.json` beside it, atomically."""
    out = Path(out)
    if out.is_dir():
        raise UserError(f"the report path {out} is a folder: give the report's file name, such as "
                        f"{out / 'report.html'}")
    scored = score(model, files, runtime)
    report = build_report(meta, scored.labels, scored.probs, scored.paths, scored.skipped, evaluated_on,
                          on_validation_split)
    atomic_write_text(out, render_html(report, title=f"transferkit report: {meta.get('backbone', {}).get('name')}"
                                                     f" on {evaluated_on}"))
    atomic_write_text(out.parent / METRICS_FILE, json.dumps(report.to_json(), indent=2) + "\n")
    return report


def render_html(report: ReportData, title: str) -> str:
    m = report.metrics
    lo, hi = report.accuracy_ci
    warnings = "".join(f'<li class="warning {_e(c.kind)}">{_e(c.message)}</li>' for c in report.cautions)
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{_e(title)}</h1>",
        f"<p class='when'>written {time.strftime('%Y-%m-%d %H:%M')}</p>",
        "<section id='warnings'><h2>Warnings</h2>"
        + (f"<ul>{warnings}</ul>" if warnings else "<p class='ok'>none</p>") + "</section>",
        f"<section id='summary'><h2>Accuracy</h2><p class='headline'>{m.accuracy:.1%} "
        f"<span class='ci'>95% interval {lo:.1%} – {hi:.1%}</span></p>"
        f"<p>on {m.count} {report.unit} of {_e(report.evaluated_on)}; macro F1 {m.macro_f1:.3f}; expected calibration "
        f"error {report.calibration.ece:.3f}. The interval (Wilson) is where the true accuracy on images like "
        f"these lies, 19 times in 20: two models whose intervals overlap widely are not shown to differ.</p>"
        "</section>",
        "<section id='facts'><h2>Run</h2><table>" + "".join(
            f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in report.facts) + "</table></section>",
        "<section id='curves'><h2>Training curves</h2>" + (
            _img(_curves(report.history), "training and validation loss and accuracy per epoch")
            if report.history else "<p>no training history in this bundle</p>") + "</section>",
        "<section id='confusion'><h2>Confusion matrix</h2>"
        + _img(_confusion(np.array(m.confusion_matrix), m.class_names), "confusion matrix") + "</section>",
        "<section id='per-class'><h2>Per class</h2>" + _per_class_table(report) + "</section>",
        "<section id='mistakes'><h2>Most confident mistakes</h2>" + _gallery(report) + "</section>",
        "<section id='calibration'><h2>Calibration</h2>"
        + _img(_reliability(report.calibration), "reliability diagram")
        + f"<p>Expected calibration error {report.calibration.ece:.3f}: on average the top probability is that far "
          f"from how often the model is right at that probability (0 is perfect). Even a perfectly calibrated "
          f"model shows about {report.calibration.noise_floor:.3f} on {report.metrics.count} images (sampling "
          f"noise), so a figure near that one cannot tell calibration errors apart.</p>" + _temperature_note(report)
        + "</section>",
        "</body></html>",
    ]
    return "\n".join(parts)


def _temperature_note(report: ReportData) -> str:
    if report.uncalibrated is None:
        return "<p>No temperature scaling: the bundle's probabilities are the network's own.</p>"
    return (f"<p>Temperature scaling: the logits are divided by T = {report.temperature:.3f}, fitted on "
            f"{_e(report.temperature_fitted_on)} after training; without it the expected calibration error here would "
            f"be {report.uncalibrated.ece:.3f}. It never changes the predicted class.</p>")


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _img(fig: Figure, alt: str) -> str:
    buffer = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buffer)
    return f"<img alt='{_e(alt)}' src='data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}'>"


def _curves(history: list[dict[str, Any]]) -> Figure:
    """Loss and accuracy, train vs validation, over every epoch of every stage; fine-tuning's start marked."""
    fig = Figure(figsize=(10, 3.8), dpi=100, layout="constrained")
    x = np.arange(1, len(history) + 1)
    stages = [h["stage"] for h in history]
    best = min(range(len(history)), key=lambda i: history[i]["val_loss"])
    for ax, key, label in ((fig.add_subplot(1, 2, 1), "loss", "loss"),
                           (fig.add_subplot(1, 2, 2), "accuracy", "accuracy")):
        ax.plot(x, [h[f"train_{key}"] for h in history], "o-", color=_TRAIN, label="train")
        ax.plot(x, [h[f"val_{key}"] for h in history], "s-", color=_VAL, label="validation")
        ax.plot(x[best], history[best][f"val_{key}"], "*", color="black", markersize=13,
                label="best weights (lowest validation loss)")
        if "fine-tune" in stages:
            ax.axvline(stages.index("fine-tune") + 0.5, color="grey", linestyle="--", label="fine-tuning starts")
        ax.set_xticks(x, [f"{s}\n{h['epoch']}" for s, h in zip(stages, history)], fontsize=7)
        ax.set_ylabel(label)
        ax.set_xlabel("stage / epoch")
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=8)
    return fig


def _confusion(matrix: np.ndarray, names: list[str]) -> Figure:
    """Counts, rows true classes, columns predictions; each cell shaded by its share of the row (recall), so a
    small class's confusions are as visible as a large one's."""
    k = len(names)
    side = min(4 + 0.45 * k, 16)
    fig = Figure(figsize=(side + 1.5, side), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="share of the true class", shrink=0.8)
    ax.set_xticks(range(k), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 30:
        for i in range(k):
            for j in range(k):
                if matrix[i, j]:
                    ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if share[i, j] > 0.5 else "black")
    return fig


def _reliability(cal: Calibration) -> Figure:
    """Accuracy per confidence bin against the diagonal (perfect calibration), with how many images each bin
    holds underneath: a bin of three images says little."""
    fig = Figure(figsize=(5.5, 5.5), dpi=100, layout="constrained")
    top, bottom = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    filled = [b for b in cal.bins if b.count]
    width = cal.bins[0].upper - cal.bins[0].lower
    top.bar([b.lower for b in filled], [b.accuracy or 0.0 for b in filled], width=width, align="edge",
            color=_TRAIN, edgecolor="black", alpha=0.8, label="accuracy in bin")
    top.plot([b.confidence for b in filled], [b.accuracy for b in filled], "o", color=_VAL,
             label="(mean confidence, accuracy)")
    top.plot([0, 1], [0, 1], "--", color="grey", label="perfectly calibrated")
    top.set_ylabel("accuracy")
    top.set_title(f"reliability diagram, ECE {cal.ece:.3f}")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.legend(fontsize=8, loc="upper left")
    bottom.bar([b.lower for b in cal.bins], [b.count for b in cal.bins], width=width, align="edge",
               color="grey", edgecolor="black")
    bottom.set_xlabel("top-class probability")
    bottom.set_ylabel("images")
    return fig


def _thumbnail(path: str) -> str:
    try:
        image = load_image(Path(path), min_size=THUMBNAIL)
    except (BadImage, OSError):
        return "<div class='missing'>image unavailable</div>"
    image.thumbnail((THUMBNAIL, THUMBNAIL))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return f"<img alt='{_e(Path(path).name)}' src='data:image/jpeg;base64,{encoded}'>"


def _gallery(report: ReportData) -> str:
    if not report.mistakes:
        return "<p class='ok'>no mistakes on this data</p>"
    if report.mistakes[0].text is not None:
        return _text_mistakes(report)
    cards = "".join(
        f"<figure class='mistake'>{_thumbnail(m.path)}<figcaption><b>true</b> {_e(m.true)}<br>"
        f"<b>predicted</b> {_e(m.predicted)} ({m.probability:.2f})<br><span title='{_e(m.path)}'>"
        f"{_e(Path(m.path).name)}</span></figcaption></figure>" for m in report.mistakes)
    total = report.metrics.count - int(np.trace(np.array(report.metrics.confusion_matrix)))
    return (f"<p>The {len(report.mistakes)} wrong predictions (of {total}) the model was surest of, with the "
            f"probability it gave the wrong class. Look for mislabelled files and classes that look alike.</p>"
            f"<div class='gallery'>{cards}</div>")


def _text_mistakes(report: ReportData) -> str:
    """A text model's mistakes as a table: the text (escaped, long ones cut), where it came from, true and
    predicted class."""
    rows = "".join(
        f"<tr><td class='text'>{_e(_cut(m.text or ''))}</td><td>{_e(m.true)}</td><td>{_e(m.predicted)} "
        f"({m.probability:.2f})</td><td class='origin'>{_e(m.path)}</td></tr>" for m in report.mistakes)
    total = report.metrics.count - int(np.trace(np.array(report.metrics.confusion_matrix)))
    return (f"<p>The {len(report.mistakes)} wrong predictions (of {total}) the model was surest of, with the "
            f"probability it gave the wrong class. Look for mislabelled texts and classes that read alike.</p>"
            f"<table class='mistakes'><tr><th>text</th><th>true</th><th>predicted</th><th>from</th></tr>{rows}"
            f"</table>")


def _cut(text: str, chars: int = 600) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= chars else flat[:chars - 1] + "…"


def _per_class_table(report: ReportData) -> str:
    rows = "".join(
        f"<tr><td>{_e(name)}</td><td>{v['precision']:.3f}</td><td>{v['recall']:.3f}</td><td>{v['f1']:.3f}</td>"
        f"<td>{int(v['support'])}</td></tr>" for name, v in report.metrics.per_class.items())
    return ("<table class='numbers'><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th>"
            f"</tr>{rows}<tr class='total'><td>macro average</td><td></td><td></td>"
            f"<td>{report.metrics.macro_f1:.3f}</td><td>{report.metrics.count}</td></tr></table>")


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.6em; }
.when { color: #777; margin-top: -.8em; }
#warnings ul { padding: 0; list-style: none; }
.warning { background: #fff4e5; border-left: 5px solid #f0a020; padding: .6em .8em; margin: .4em 0; }
.warning.overfitting, .warning.small-set { border-left-color: #d62728; background: #fdecea; }
.ok { color: #2a7a2a; }
.headline { font-size: 2.2em; font-weight: 600; margin: .2em 0; }
.ci { font-size: .45em; font-weight: 400; color: #555; margin-left: .6em; }
table { border-collapse: collapse; } th, td { padding: .25em .8em; text-align: left; border-bottom: 1px solid #eee; }
table.numbers td:not(:first-child) { text-align: right; font-variant-numeric: tabular-nums; }
tr.total td { font-weight: 600; border-top: 2px solid #ccc; }
img { max-width: 100%; }
.gallery { display: flex; flex-wrap: wrap; gap: .8em; }
.mistake { margin: 0; width: 150px; font-size: .8em; }
.mistake img { width: 128px; height: 128px; object-fit: contain; background: #f4f4f4; display: block; }
.mistake span { color: #777; word-break: break-all; }
table.mistakes td.text { max-width: 640px; white-space: pre-wrap; }
table.mistakes td.origin { color: #777; font-size: .8em; word-break: break-all; }
.missing { width: 128px; height: 128px; background: #eee; color: #999; display: flex; align-items: center; }
"""
