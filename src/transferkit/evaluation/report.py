"""The numbers of an evaluation report: calibration, an accuracy interval, the most confident mistakes, run facts,
and the warnings a person needs before trusting a model. Pure functions of arrays and the bundle's JSON, so each
is checked against scikit-learn / scipy in the tests; `report_html.py` draws and writes them.

Why these: accuracy alone hides whether 97% vs 98% on a few hundred images means anything (the interval),
whether the probabilities can be read as probabilities (calibration), and what the model gets wrong (mistakes);
and the warnings catch what people miss in a log: a fine-tuning stage that overfits, lopsided classes, a
validation set too small for the accuracy it claims, files silently dropped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import binomtest

from transferkit.evaluation.calibration import rescale
from transferkit.evaluation.metrics import Metrics, compute_metrics

__all__ = ["Calibration", "CalibrationBin", "Caution", "Mistake", "ReportData", "accuracy_interval", "build_report",
           "calibration", "confident_mistakes", "imbalance_caution", "images_for_half_width", "overfitting_cautions",
           "run_facts", "small_set_caution"]

CONFIDENCE = 0.95
NOISE_DRAWS = 200  # simulated perfectly calibrated models behind the ECE noise floor
CALIBRATION_BINS = 10
MISTAKES_SHOWN = 16
IMBALANCE_RATIO = 3.0  # largest class / smallest class at which accuracy starts to hide the small classes
MAX_HALF_WIDTH = 0.05  # a 95% interval wider than ±5 points: the set is too small for the accuracy it claims
TARGET_HALF_WIDTH = 0.025  # what the small-set warning says it would take to reach
OVERFIT_RISE = 0.05  # validation loss 5% above its stage minimum, two or more epochs later
VALIDATION_SPLIT = "the validation split"  # where a temperature is fitted unless the bundle says otherwise

@dataclass(frozen=True)
class CalibrationBin:
    lower: float
    upper: float
    count: int
    accuracy: float | None  # None for an empty bin
    confidence: float | None


@dataclass(frozen=True)
class Calibration:
    """Top-label calibration: is the model right 80% of the time when its top probability is 0.8?"""

    ece: float  # expected calibration error: sum over bins of (bin share) * |accuracy - mean confidence|
    bins: list[CalibrationBin]
    noise_floor: float  # the median ECE a perfectly calibrated model with these confidences shows on this many images


@dataclass(frozen=True)
class Mistake:
    path: str  # the file, or for a text where it came from ("FILE line N")
    true: str
    predicted: str
    probability: float  # of the predicted class
    true_probability: float
    text: str | None = None  # the text itself, for a text model


@dataclass(frozen=True)
class Caution:
    kind: str  # overfitting | imbalance | small-set | skipped | refitted
    message: str


@dataclass(frozen=True)
class ReportData:
    evaluated_on: str
    metrics: Metrics
    accuracy_ci: tuple[float, float]
    calibration: Calibration
    mistakes: list[Mistake]
    history: list[dict[str, Any]]  # EpochResult.to_json() per epoch, in training order
    facts: list[tuple[str, str]]
    cautions: list[Caution]
    skipped: list[str]  # files of the evaluated data that could not be read
    temperature: float = 1.0  # the bundle's calibration temperature (1: none)
    uncalibrated: Calibration | None = None  # the same probabilities before temperature scaling, when T != 1
    temperature_fitted_on: str = VALIDATION_SPLIT  # what the temperature was fitted on, in words
    unit: str = "images"  # what was evaluated: images, texts

    def to_json(self) -> dict[str, Any]:
        return {
            "evaluated_on": self.evaluated_on,
            **self.metrics.to_json(),
            "accuracy_ci95": list(self.accuracy_ci),
            "calibration": {"ece": self.calibration.ece, "bins": [asdict(b) for b in self.calibration.bins],
                            "ece_noise_floor": self.calibration.noise_floor,
                            "temperature": self.temperature, "temperature_fitted_on": self.temperature_fitted_on,
                            "ece_before_temperature": self.uncalibrated.ece if self.uncalibrated else None},
            "most_confident_mistakes": [asdict(m) for m in self.mistakes],
            "history": self.history,
            "facts": dict(self.facts),
            "warnings": [asdict(c) for c in self.cautions],
            "skipped": self.skipped,
        }


def accuracy_interval(correct: int, total: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval for a proportion: unlike the textbook p ± 1.96·se it stays inside [0, 1] and keeps
    its coverage at 100% or 0% accuracy, which small validation sets reach easily."""
    ci = binomtest(correct, total).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def images_for_half_width(accuracy: float, half_width: float = TARGET_HALF_WIDTH) -> int:
    """About how many images a set needs for a 95% interval of ±`half_width` at this accuracy (bisection on the
    Wilson interval itself, so it is right near 100% too, where p(1-p)/n would say a handful)."""
    low, high = 1, 1
    while _half_width(accuracy, high) > half_width:
        low, high = high, high * 2
    while low < high:
        mid = (low + high) // 2
        low, high = (mid + 1, high) if _half_width(accuracy, mid) > half_width else (low, mid)
    return high


def _half_width(accuracy: float, n: int) -> float:
    lo, hi = accuracy_interval(round(accuracy * n), n)
    return (hi - lo) / 2


def calibration(labels: np.ndarray, probs: np.ndarray, n_bins: int = CALIBRATION_BINS) -> Calibration:
    """Bins of equal width over the top probability, with scikit-learn's edges (`calibration_curve`:
    a bin holds (lower, upper], the first also 0)."""
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.searchsorted(edges[1:-1], confidence)
    bins: list[CalibrationBin] = []
    for b in range(n_bins):
        inside = which == b
        count = int(inside.sum())
        if count == 0:
            bins.append(CalibrationBin(float(edges[b]), float(edges[b + 1]), 0, None, None))
            continue
        bins.append(CalibrationBin(float(edges[b]), float(edges[b + 1]), count, float(correct[inside].mean()),
                                   float(confidence[inside].mean())))
    return Calibration(_ece(which, confidence, correct, n_bins), bins, _noise_floor(which, confidence, n_bins))


def _ece(which: np.ndarray, confidence: np.ndarray, correct: np.ndarray, n_bins: int) -> float:
    """Sum over bins of (bin share) * |accuracy - mean confidence| = sum over bins of |sum(correct - conf)| / N."""
    gap = np.bincount(which, weights=correct - confidence, minlength=n_bins)
    return float(np.abs(gap).sum() / len(confidence))


def _noise_floor(which: np.ndarray, confidence: np.ndarray, n_bins: int, draws: int = NOISE_DRAWS) -> float:
    """ECE measures sampling noise too: a perfectly calibrated model (right with probability equal to its
    confidence) still shows a positive ECE on a finite set, about 0.05 on 200 images. This is the median ECE of
    `draws` such models with the same confidences (seeded, so a report is reproducible): an ECE near it says the
    set is too small to see any miscalibration, not that there is none."""
    rng = np.random.default_rng(0)
    floors = [_ece(which, confidence, (rng.random(len(confidence)) < confidence).astype(np.float64), n_bins)
              for _ in range(draws)]
    return float(np.median(floors))


def confident_mistakes(labels: np.ndarray, probs: np.ndarray, paths: list[Path] | list[str], class_names: list[str],
                       count: int = MISTAKES_SHOWN, texts: list[str] | None = None) -> list[Mistake]:
    """The wrong predictions the model was surest of, surest first: mislabelled files and the confusions that
    matter show up here (fastai's `plot_top_losses` idea; ranked by the wrong class's probability). With `texts`
    (a text model) each mistake carries its text."""
    predicted = probs.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    order = wrong[np.argsort(-probs[wrong, predicted[wrong]], kind="stable")][:count]
    return [Mistake(str(paths[i]), class_names[labels[i]], class_names[predicted[i]],
                    float(probs[i, predicted[i]]), float(probs[i, labels[i]]),
                    texts[i] if texts is not None else None) for i in order]


def overfitting_cautions(history: list[dict[str, Any]]) -> list[Caution]:
    """Per training stage: validation loss ended ≥5% above its minimum, two or more epochs after it, while the
    training loss fell over the same epochs — the classic picture the Keras guide's own fine-tuning run shows."""
    cautions = []
    for stage in dict.fromkeys(h["stage"] for h in history):
        epochs = [h for h in history if h["stage"] == stage]
        best = min(range(len(epochs)), key=lambda i: epochs[i]["val_loss"])
        first, last = epochs[best], epochs[-1]
        if (len(epochs) - 1 - best >= 2 and last["val_loss"] > first["val_loss"] * (1 + OVERFIT_RISE)
                and last["train_loss"] < first["train_loss"]):
            cautions.append(Caution("overfitting", (
                f"overfitting in the {stage} stage: validation loss rose from {first['val_loss']:.3f} (epoch "
                f"{first['epoch']}) to {last['val_loss']:.3f} (epoch {last['epoch']}) while training loss fell from "
                f"{first['train_loss']:.3f} to {last['train_loss']:.3f}; the best weights were kept, so more epochs "
                f"would not help — use fewer epochs, more images or stronger augmentation")))
    return cautions


def imbalance_caution(counts: dict[str, int], where: str, hint: str) -> Caution | None:
    """Largest class ≥ `IMBALANCE_RATIO` × smallest: overall accuracy then mostly measures the large classes."""
    if len(counts) < 2:
        return None
    small, large = min(counts, key=lambda c: counts[c]), max(counts, key=lambda c: counts[c])
    if counts[large] < IMBALANCE_RATIO * counts[small]:
        return None
    ratio = f"{counts[large] / counts[small]:.1f}x" if counts[small] else "no images of the smallest"
    return Caution("imbalance", f"class imbalance in the {where}: {large!r} has {counts[large]} images, {small!r} "
                                f"{counts[small]} ({ratio}); {hint}")


def small_set_caution(accuracy: float, total: int, where: str) -> Caution | None:
    """A 95% interval wider than ±5 points: two models that differ by less cannot be told apart on this set."""
    lo, hi = accuracy_interval(round(accuracy * total), total)
    if (hi - lo) / 2 <= MAX_HALF_WIDTH:
        return None
    return Caution("small-set", (
        f"the {where} has only {total} images: accuracy {accuracy:.3f} has a 95% interval of {lo:.3f}–{hi:.3f}, "
        f"so differences of a few points between models mean nothing here; about "
        f"{images_for_half_width(accuracy)} images would narrow it to ±{TARGET_HALF_WIDTH * 100:g} points"))


def _skipped_caution(files: list[str], where: str) -> Caution | None:
    if not files:
        return None
    shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
    return Caution("skipped", f"{len(files)} unreadable file(s) in the {where} were skipped: {shown}")


def _strategy(meta: dict[str, Any]) -> str:
    """The strategy the run used, in words: issue 4's `strategy` field when the bundle has it, else told from
    the stages it actually went through."""
    config = meta.get("train_config") or {}
    named = {"extract": "feature extraction (frozen base, classifier on its features)",
             "frozen": "frozen base, trained head", "finetune": "frozen base + head, then fine-tuning",
             "contrastive": "contrastive encoder tune (SetFit-style), then a head on its embeddings"}
    strategy = config.get("strategy")
    chosen = (meta.get("auto") or {}).get("chosen")  # what `auto` chose (images: the bundle is the chosen run's)
    if chosen and strategy in ("auto", chosen):
        return f"auto: {named.get(chosen, str(chosen))}"
    if strategy:
        return named.get(strategy, str(strategy))
    stages = list(dict.fromkeys(h["stage"] for h in meta.get("history") or []))
    words = {"probe": "linear-probe warm start", "head": "head on the frozen base",
             "fine-tune": f"fine-tuning the top {config.get('unfreeze_blocks', 'all') or 'all'} blocks"}
    return ", then ".join(words.get(s, s) for s in stages) or "unknown"


def _probe(meta: dict[str, Any]) -> dict[str, Any]:
    """How auto's logistic probe was fitted (`logistic.py`), or {} for any other model."""
    return meta.get("probe") or {}


def run_facts(meta: dict[str, Any], evaluated_on: str, evaluated: int, unit: str = "images") -> list[tuple[str, str]]:
    """What a reader needs to place the numbers: which network, which weights, how trained, on how much data."""
    data = meta.get("data") or {}
    if "encoder" in meta:  # a text model
        encoder = meta.get("encoder") or {}
        network = [("text encoder", f"{encoder.get('name', '?')} (texts cut at "
                                    f"{(meta.get('preprocessing') or {}).get('max_tokens', '?')} tokens)")]
        weights = encoder.get("weights") or {}
    else:
        backbone = meta.get("backbone") or {}
        network = [("backbone", str(backbone.get("name", "?")) + (f" (features from {meta['layer']})"
                                                                  if meta.get("layer") else ""))]
        weights = backbone.get("weights") or {}
    facts = [
        *network,
        ("weights", str(weights.get("source", "?"))),
        ("strategy", _strategy(meta)),
        ("classes", str(len(meta.get("class_names") or []))),
        (f"training {unit}", str(data.get("train", "?"))),
        (f"validation {unit}", str(data.get("validation", "?"))),
        ("skipped in training data", str(len(data.get("skipped") or []))),
        ("evaluated on", f"{evaluated_on} ({evaluated} {unit})"),
        ("best weights from", str(meta.get("best") or "?")
         + (f", refitted on all {_probe(meta)['refit_images']} {unit}" if _probe(meta).get("refit_images") else "")),
        ("training time", f"{meta['seconds']:.0f} s" if isinstance(meta.get("seconds"), (int, float)) else "?"),
        ("transferkit", str(meta.get("transferkit_version", "?"))),
    ]
    return facts


def build_report(meta: dict[str, Any], labels: np.ndarray, probs: np.ndarray, paths: list[Path] | list[str],
                 skipped: list[Path] | list[str], evaluated_on: str, on_validation_split: bool = False,
                 texts: list[str] | None = None) -> ReportData:
    """Every number and warning of the report from one inference pass (`predict.score`, or for a text model
    `text.evaluate.score_texts` with its `texts`) and the bundle JSON."""
    unit = "images" if texts is None else "texts"
    names = list(meta["class_names"])
    metrics = compute_metrics(labels, probs, names)
    temperature = float(meta.get("temperature", 1.0))
    correct = int((probs.argmax(axis=1) == labels).sum())
    history = list(meta.get("history") or [])
    data = meta.get("data") or {}
    config = meta.get("train_config") or {}
    cautions = overfitting_cautions(history)
    train_counts = (data.get("class_counts") or {}).get("train")
    weighting = ("--class-weights was on" if config.get("class_weights")
                 else "read per-class recall, and consider --class-weights or more images of the small classes")
    candidates = [
        imbalance_caution(train_counts, "training data", weighting) if train_counts else None,
        imbalance_caution({n: int(v["support"]) for n, v in metrics.per_class.items()}, "evaluated data",
                          "overall accuracy mostly measures the large classes; read macro F1 and per-class recall"),
        small_set_caution(metrics.accuracy, metrics.count, f"evaluated data ({evaluated_on})"),
    ]
    validation = (meta.get("metrics") or {}).get("validation")
    if validation and not on_validation_split:
        candidates.append(small_set_caution(float(validation["accuracy"]), int(validation["count"]),
                                            "validation split (which chose the best weights)"))
    refitted = _probe(meta).get("refit_images")
    if on_validation_split and refitted and validation:
        candidates.append(Caution("refitted", (
            f"the kept probe was refitted on all {refitted} images, these validation images among them, so its "
            f"scores on them are optimistic; held out, it scored {float(validation['accuracy']):.3f} on them")))
    candidates += [_skipped_caution([p for p, _ in data.get("skipped") or []], "training data"),
                   _skipped_caution([str(p) for p in skipped], "evaluated data")]
    cautions += [c for c in candidates if c is not None]
    return ReportData(
        evaluated_on=evaluated_on,
        metrics=metrics,
        accuracy_ci=accuracy_interval(correct, len(labels)),
        calibration=calibration(labels, probs),
        mistakes=confident_mistakes(labels, probs, paths, names, texts=texts),
        history=history,
        facts=run_facts(meta, evaluated_on, len(labels), unit),
        cautions=cautions,
        skipped=[str(p) for p in skipped],
        temperature=temperature,
        uncalibrated=calibration(labels, rescale(probs, 1 / temperature)) if temperature != 1.0 else None,
        temperature_fitted_on=_probe(meta).get("temperature_fitted_on") or VALIDATION_SPLIT,
        unit=unit,
    )

