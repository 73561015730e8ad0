"""The report's numbers: calibration against scikit-learn's `calibration_curve`, the Wilson interval against its
formula, per-class figures against `classification_report`, and each warning firing when, and only when, its
condition holds."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix

from transferkit.evaluation.report import (
    accuracy_interval,
    build_report,
    calibration,
    confident_mistakes,
    images_for_half_width,
    imbalance_caution,
    overfitting_cautions,
    small_set_caution,
)


def _predictions(n: int = 500, classes: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Over-confident probabilities: right about 70% of the time, sure of itself far more often."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n)
    logits = rng.normal(size=(n, classes)) * 2
    right = rng.random(n) < 0.7
    logits[right, labels[right]] += 4
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return labels, probs


def test_calibration_matches_sklearn_calibration_curve() -> None:
    labels, probs = _predictions()
    cal = calibration(labels, probs, n_bins=10)
    confidence, correct = probs.max(axis=1), (probs.argmax(axis=1) == labels).astype(int)
    prob_true, prob_pred = calibration_curve(correct, confidence, n_bins=10, strategy="uniform")
    filled = [b for b in cal.bins if b.count]
    assert [b.accuracy for b in filled] == pytest.approx(prob_true)
    assert [b.confidence for b in filled] == pytest.approx(prob_pred)
    assert sum(b.count for b in cal.bins) == len(labels)
    # ECE from sklearn's per-bin figures, weighted by bin size (bins hold (lower, upper] like sklearn's)
    counts = np.bincount(np.digitize(confidence, np.linspace(0, 1, 11)[1:-1], right=True), minlength=10)
    expected = float(np.sum(counts[counts > 0] / len(labels) * np.abs(prob_true - prob_pred)))
    assert cal.ece == pytest.approx(expected)
    assert cal.ece > 0.05  # the generator is over-confident, and ECE sees it


def test_perfectly_calibrated_predictions_have_ece_near_zero() -> None:
    rng = np.random.default_rng(1)
    n = 20000
    confidence = rng.uniform(0.5, 1.0, size=n)
    labels = (rng.random(n) >= confidence).astype(int)  # class 0 is right with probability `confidence`
    probs = np.stack([confidence, 1 - confidence], axis=1)
    assert calibration(labels, probs).ece < 0.02


@pytest.mark.parametrize(("n", "low", "high"), [(200, 0.03, 0.08), (20000, 0.0, 0.01)])
def test_the_noise_floor_is_what_a_perfectly_calibrated_model_shows_at_that_size(n: int, low: float,
                                                                                   high: float) -> None:
    """On 200 images even a perfectly calibrated model shows an ECE near 0.05; on 20,000 almost none. The floor
    is the median over simulated such models, so about half of real perfectly calibrated sets fall below it."""
    rng = np.random.default_rng(2)
    confidence = rng.uniform(0.5, 1.0, size=n)
    observed = []
    for _ in range(100):
        labels = (rng.random(n) >= confidence).astype(int)
        observed.append(calibration(labels, np.stack([confidence, 1 - confidence], axis=1)).ece)
    floor = calibration(labels, np.stack([confidence, 1 - confidence], axis=1)).noise_floor
    assert low < floor < high
    assert 0.3 < np.mean(np.array(observed) < floor) < 0.7


def test_a_miscalibrated_model_is_well_above_the_noise_floor() -> None:
    rng = np.random.default_rng(3)
    confidence = rng.uniform(0.7, 1.0, size=500)
    labels = (rng.random(500) >= confidence - 0.2).astype(int)  # right 20 points less often than it claims
    cal = calibration(labels, np.stack([confidence, 1 - confidence], axis=1))
    assert cal.ece > 3 * cal.noise_floor


def test_wilson_interval_matches_its_formula() -> None:
    z = 1.959963984540054
    for k, n in [(388, 400), (12, 12), (0, 7), (81, 263), (1, 2)]:
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        assert accuracy_interval(k, n) == pytest.approx((centre - half, centre + half), abs=1e-9)


def test_97_vs_98_percent_on_400_images_is_not_a_difference() -> None:
    lo97, hi97 = accuracy_interval(388, 400)
    lo98, hi98 = accuracy_interval(392, 400)
    assert lo98 < 0.97 < hi98 and lo97 < 0.98 < hi97  # each interval holds the other model's accuracy


def test_images_for_half_width_reaches_the_target() -> None:
    for accuracy in (0.5, 0.81, 0.98, 1.0):
        n = images_for_half_width(accuracy, 0.025)
        lo, hi = accuracy_interval(round(accuracy * n), n)
        assert (hi - lo) / 2 <= 0.025
        fewer = int(n * 0.9)
        lo, hi = accuracy_interval(round(accuracy * fewer), fewer)
        assert (hi - lo) / 2 > 0.025
    assert 900 < images_for_half_width(0.81) < 1000  # 1.96² · 0.81 · 0.19 / 0.025² ≈ 946


def test_confident_mistakes_are_the_surest_wrong_predictions() -> None:
    labels, probs = _predictions(200)
    paths = [Path(f"img{i}.png") for i in range(200)]
    mistakes = confident_mistakes(labels, probs, paths, ["a", "b", "c", "d"], count=5)
    predicted = probs.argmax(axis=1)
    wrong = [i for i in range(200) if predicted[i] != labels[i]]
    surest = sorted(wrong, key=lambda i: -probs[i].max())[:5]
    assert [m.path for m in mistakes] == [str(paths[i]) for i in surest]
    for m, i in zip(mistakes, surest):
        assert m.true == "abcd"[labels[i]] and m.predicted == "abcd"[predicted[i]] != m.true
        assert m.probability == pytest.approx(probs[i].max())
        assert m.true_probability == pytest.approx(probs[i, labels[i]])


def _epoch(stage: str, epoch: int, train_loss: float, val_loss: float) -> dict[str, object]:
    return {"stage": stage, "epoch": epoch, "train_loss": train_loss, "train_accuracy": 0.9, "val_loss": val_loss,
            "val_accuracy": 0.8, "lr": 1e-3, "seconds": 1.0}


def test_overfitting_is_flagged_in_the_stage_where_validation_loss_rises_as_training_loss_falls() -> None:
    head = [_epoch("head", e, t, v) for e, t, v in [(1, 0.9, 0.60), (2, 0.7, 0.50), (3, 0.6, 0.48)]]
    fine = [_epoch("fine-tune", e, t, v) for e, t, v in
            [(1, 0.5, 0.45), (2, 0.4, 0.44), (3, 0.3, 0.47), (4, 0.2, 0.52), (5, 0.15, 0.60)]]
    cautions = overfitting_cautions(head + fine)
    assert len(cautions) == 1 and cautions[0].kind == "overfitting"
    message = cautions[0].message
    assert "fine-tune stage" in message and "0.440 (epoch 2)" in message and "0.600 (epoch 5)" in message


@pytest.mark.parametrize("rows", [
    [(1, 0.5, 0.45), (2, 0.4, 0.44), (3, 0.3, 0.45), (4, 0.2, 0.45)],  # validation flat: within 5%
    [(1, 0.5, 0.45), (2, 0.4, 0.44), (3, 0.3, 0.60)],  # one epoch after the best is not a trend
    [(1, 0.5, 0.45), (2, 0.4, 0.44), (3, 0.5, 0.52), (4, 0.6, 0.60)],  # both rise: diverging, not overfitting
])
def test_no_overfitting_warning_without_the_pattern(rows: list[tuple[int, float, float]]) -> None:
    assert overfitting_cautions([_epoch("fine-tune", e, t, v) for e, t, v in rows]) == []


def test_imbalance_and_small_set_thresholds() -> None:
    assert imbalance_caution({"a": 30, "b": 10, "c": 20}, "training data", "hint") is not None
    assert imbalance_caution({"a": 29, "b": 10}, "training data", "hint") is None
    assert "'a' has 30 images, 'b' 10 (3.0x)" in imbalance_caution({"a": 30, "b": 10}, "x", "hint").message  # type: ignore[union-attr]
    assert small_set_caution(0.9, 12, "test data") is not None
    assert small_set_caution(0.9, 2000, "test data") is None


def test_build_report_per_class_figures_match_sklearn_and_warnings_collect() -> None:
    labels, probs = _predictions(120, classes=3, seed=2)
    names = ["ant", "bee", "cat"]
    meta = {
        "class_names": names,
        "backbone": {"name": "efficientnet_lite0", "weights": {"source": "package:x"}},
        "train_config": {"unfreeze_blocks": 2, "class_weights": False},
        "history": [_epoch("head", 1, 0.9, 0.6), _epoch("fine-tune", 1, 0.5, 0.5)],
        "data": {"train": 100, "validation": 25, "skipped": [["/data/bad.jpg", "not an image"]],
                 "class_counts": {"train": {"ant": 60, "bee": 20, "cat": 20}}},
        "metrics": {"validation": {"accuracy": 0.8, "count": 25}},
        "seconds": 42.0,
    }
    paths = [Path(f"{i}.png") for i in range(120)]
    report = build_report(meta, labels, probs, paths, [Path("/test/broken.png")], "test data")
    predicted = probs.argmax(axis=1)
    expected = classification_report(labels, predicted, target_names=names, output_dict=True, zero_division=0)
    for name in names:
        row = report.metrics.per_class[name]
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx(
            (expected[name]["precision"], expected[name]["recall"], expected[name]["f1-score"]))
        assert row["support"] == expected[name]["support"]
    assert report.metrics.accuracy == pytest.approx(accuracy_score(labels, predicted))
    assert report.metrics.confusion_matrix == confusion_matrix(labels, predicted).tolist()
    lo, hi = report.accuracy_ci
    assert lo < report.metrics.accuracy < hi
    kinds = [c.kind for c in report.cautions]
    assert kinds.count("skipped") == 2 and "imbalance" in kinds and "small-set" in kinds
    facts = dict(report.facts)
    assert facts["strategy"] == "head on the frozen base, then fine-tuning the top 2 blocks"
    assert facts["training time"] == "42 s" and facts["evaluated on"] == "test data (120 images)"
    as_json = report.to_json()
    assert as_json["accuracy_ci95"] == [lo, hi] and len(as_json["warnings"]) == len(report.cautions)
    assert build_report(meta | {"train_config": {"strategy": "extract"}}, labels, probs, paths, [], "t").facts[2][1] \
        .startswith("feature extraction")


def test_a_refitted_probe_is_flagged_when_reported_on_the_validation_split() -> None:
    labels, probs = _predictions(25, classes=3, seed=3)
    meta = {"class_names": ["ant", "bee", "cat"], "backbone": {"name": "efficientnet_lite0"},
            "best": "logistic regression, C=0.1", "probe": {"refit_images": 125},
            "data": {"train": 100, "validation": 25}, "metrics": {"validation": {"accuracy": 0.76, "count": 25}}}
    paths = [Path(f"{i}.png") for i in range(25)]
    on_validation = build_report(meta, labels, probs, paths, [], "validation split", on_validation_split=True)
    (refitted,) = [c for c in on_validation.cautions if c.kind == "refitted"]
    assert "refitted on all 125 images" in refitted.message and "held out, it scored 0.760" in refitted.message
    assert dict(on_validation.facts)["best weights from"] == "logistic regression, C=0.1, refitted on all 125 images"
    on_test = build_report(meta, labels, probs, paths, [], "test data")
    assert "refitted" not in [c.kind for c in on_test.cautions]
