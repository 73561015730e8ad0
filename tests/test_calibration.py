"""Temperature scaling: the fit recovers a known temperature, never changes a prediction, lowers the calibration
error of an over-confident model; the trained bundle stores its temperature and every prediction applies it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.special import softmax

from transferkit.errors import UserError
from transferkit.evaluation.calibration import MIN_IMAGES, fit_temperature, rescale
from transferkit.evaluation.report import calibration
from transferkit.io.bundle import META_FILE, load_bundle
from transferkit.training.run import TrainResult


def _overconfident(true_temperature: float, n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities softmax(z) of a model whose labels really follow softmax(z / true_temperature)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=4.0, size=(n, 5))
    truth = softmax(logits / true_temperature, axis=1)
    labels = np.array([rng.choice(5, p=row) for row in truth])
    return softmax(logits, axis=1), labels


def test_the_fit_recovers_the_temperature_the_labels_were_drawn_at() -> None:
    probs, labels = _overconfident(2.5)
    assert fit_temperature(probs, labels) == pytest.approx(2.5, rel=0.1)
    probs, labels = _overconfident(0.5, seed=1)  # an under-confident model is sharpened
    assert fit_temperature(probs, labels) == pytest.approx(0.5, rel=0.1)


def test_scaling_keeps_every_prediction_and_lowers_the_calibration_error() -> None:
    probs, labels = _overconfident(2.5)
    t = fit_temperature(probs, labels)
    scaled = rescale(probs, t)
    assert np.array_equal(scaled.argmax(1), probs.argmax(1))
    np.testing.assert_allclose(scaled.sum(1), 1.0, atol=1e-9)
    before, after = calibration(labels, probs).ece, calibration(labels, scaled).ece
    assert before > 0.1 and after < 0.03
    np.testing.assert_allclose(rescale(scaled, 1 / t), probs, atol=1e-9)  # and it can be undone exactly


def test_the_prior_pulls_a_fit_on_few_images_toward_one_and_fades_with_more() -> None:
    for n, most in ((40, 0.8), (4000, 0.02)):  # how much of log T the prior may take away
        probs, labels = _overconfident(2.5, n=n, seed=3)
        plain, shrunk = fit_temperature(probs, labels, prior_sd=float("inf")), fit_temperature(probs, labels)
        assert 1.0 < shrunk < plain
        assert np.log(plain) - np.log(shrunk) < most * np.log(plain)
    probs, labels = _overconfident(2.5, n=40, seed=3)
    assert np.log(fit_temperature(probs, labels, float("inf"))) - np.log(fit_temperature(probs, labels)) > 0.05


def test_too_few_images_keep_the_network_as_it_is() -> None:
    probs, labels = _overconfident(2.5, n=MIN_IMAGES - 1)
    assert fit_temperature(probs, labels) == 1.0


def test_the_trained_bundle_stores_its_temperature_and_predictions_apply_it(trained_run: TrainResult) -> None:
    meta = json.loads((trained_run.run_dir / META_FILE).read_text())
    bundle = load_bundle(trained_run.run_dir)
    assert meta["temperature"] == bundle.model.temperature == trained_run.model.temperature
    assert 0.05 <= bundle.model.temperature <= 20
    model = bundle.model
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        raw = model.head(model.base(x))
        torch.testing.assert_close(model(x), raw / model.temperature)


def test_a_bad_temperature_in_a_bundle_is_refused_in_one_line(trained_run: TrainResult, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(trained_run.run_dir, tmp_path / "copy"))
    for bad in (0, -1.0, "2", None, True):
        meta = json.loads((copy / META_FILE).read_text())
        meta["temperature"] = bad
        (copy / META_FILE).write_text(json.dumps(meta))
        with pytest.raises(UserError, match="temperature must be a positive number"):
            load_bundle(copy)


def test_the_report_shows_the_calibration_error_before_and_after() -> None:
    from transferkit.evaluation.report import build_report

    probs, labels = _overconfident(2.5, n=500)
    t = fit_temperature(probs, labels)
    meta = {"class_names": list("abcde"), "temperature": t}
    paths = [Path(f"{i}.png") for i in range(len(labels))]
    report = build_report(meta, labels, rescale(probs, t), paths, [], "test data").to_json()["calibration"]
    assert report["temperature"] == t
    assert report["ece_before_temperature"] == pytest.approx(calibration(labels, probs).ece)
    assert report["ece"] < report["ece_before_temperature"]
    plain = build_report({"class_names": list("abcde")}, labels, probs, paths, [], "test data").to_json()
    assert plain["calibration"]["temperature"] == 1.0 and plain["calibration"]["ece_before_temperature"] is None
