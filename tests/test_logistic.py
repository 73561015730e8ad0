"""auto's linear probe: the cross-validated logistic regression written into the model's linear head. The head
must give exactly scikit-learn's probabilities, C must be the cross-validation's best, the validation
probabilities must be the held-out fit's, and the kept head the fit on every image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from transferkit.model import HeadConfig, build_head
from transferkit.runtime import Runtime
from transferkit.training.config import TrainConfig
from transferkit.training.logistic import C_GRID, UNTESTED_C, choose_c, fit_logistic_head


def _blobs(n_per_class: int, classes: int, dim: int = 16, seed: int = 0,
           spread: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=spread, size=(classes, dim))
    labels = np.repeat(np.arange(classes), n_per_class)
    features = centres[labels] + rng.normal(size=(len(labels), dim)) + 5.0  # off-centre: the scaler matters
    return features.astype(np.float32), labels


def _fit(x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray, classes: int,
         cfg: TrainConfig = TrainConfig()) -> tuple[torch.nn.Sequential, object]:
    head = build_head(x.shape[1], classes, HeadConfig(0, 0.2))
    fitted = fit_logistic_head(head, torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(xv),
                               torch.from_numpy(yv), classes, cfg, Runtime.detect())
    return head, fitted


def _sklearn(x: np.ndarray, y: np.ndarray, c: float) -> object:
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000)).fit(x, y)


def test_the_head_gives_the_refit_on_every_image_and_validation_comes_from_the_held_out_fit() -> None:
    x, y = _blobs(30, 4)
    xv, yv = _blobs(10, 4, seed=1)
    head, fitted = _fit(x, y, xv, yv, 4)
    c = fitted.details["cv"]["chosen_c"]
    assert fitted.best == f"logistic regression, C={c:g}" and fitted.details["refit_images"] == 160
    every = _sklearn(np.concatenate([x, xv]), np.concatenate([y, yv]), c)
    with torch.no_grad():
        probs = head(torch.from_numpy(xv)).softmax(1).numpy()
    np.testing.assert_allclose(probs, every.predict_proba(xv), atol=1e-5)
    held_out = _sklearn(x, y, c).predict_proba(xv)
    np.testing.assert_allclose(fitted.val_probs, held_out, atol=1e-5)
    assert not np.allclose(fitted.val_probs, probs, atol=1e-3)  # the refit has seen these images
    (epoch,) = fitted.history
    assert epoch.val_accuracy == pytest.approx(np.mean(held_out.argmax(1) == yv))
    # The warm start for fine-tuning is the held-out fit: its validation images stay unseen.
    warm = build_head(x.shape[1], 4, HeadConfig(0, 0.2))
    warm.load_state_dict(fitted.warm_start)
    warm.eval()
    with torch.no_grad():
        np.testing.assert_allclose(warm(torch.from_numpy(xv)).softmax(1).numpy(), held_out, atol=1e-5)


def test_c_is_the_cross_validations_best() -> None:
    x, y = _blobs(12, 3, dim=40, spread=0.6)
    cv = choose_c(x, y, seed=0)
    assert cv.folds == 5 and cv.images == 36 and set(cv.accuracy) == set(C_GRID)
    best = max(cv.accuracy.values())
    tied = [c for c in C_GRID if cv.accuracy[c] == best]
    assert cv.chosen == min(tied, key=lambda c: cv.loss[c])
    assert len(set(cv.loss.values())) == len(C_GRID)  # each C really was fitted: the held-out losses differ


def test_two_classes_and_a_class_missing_from_training() -> None:
    x, y = _blobs(20, 2)
    head, _ = _fit(x, y, x[:4], y[:4], 3)  # a third class the data never shows
    with torch.no_grad():
        probs = head(torch.from_numpy(x)).softmax(1).numpy()
    expected = _sklearn(np.concatenate([x, x[:4]]), np.concatenate([y, y[:4]]),
                        choose_c(x, y, 0).chosen).predict_proba(x)
    np.testing.assert_allclose(probs[:, :2], expected, atol=1e-5)
    assert probs[:, 2].max() < 1e-9


def test_a_head_with_a_hidden_layer_is_refused() -> None:
    x, y = _blobs(10, 2)
    head = build_head(x.shape[1], 2, HeadConfig(8, 0.2))
    with pytest.raises(AssertionError, match="not a linear probe"):
        fit_logistic_head(head, torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(x),
                          torch.from_numpy(y), 2, TrainConfig(), Runtime.detect())


def test_a_class_with_one_training_image_gets_the_untested_c() -> None:
    x, y = _blobs(3, 3)
    x, y = x[2:], y[2:]  # class 0 keeps one image
    cv = choose_c(x, y, seed=0)
    assert (cv.folds, cv.chosen, cv.accuracy) == (0, UNTESTED_C, {})
    head, fitted = _fit(x, y, x[:2], y[:2], 3)
    assert fitted.best == f"logistic regression, C={UNTESTED_C:g}"


def test_the_temperature_is_fitted_on_every_held_out_probability_of_the_chosen_c() -> None:
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    x, y = _blobs(15, 3, dim=20, spread=0.8)
    xv, yv = _blobs(5, 3, dim=20, spread=0.8, seed=1)
    _, fitted = _fit(x, y, xv, yv, 4)  # a fourth class the data never shows: its probability is 0
    c = fitted.details["cv"]["chosen_c"]
    held_out = fitted.calibration
    assert held_out is not None and held_out.probs.shape == (60, 4) and (held_out.probs[:, 3] == 0).all()
    assert held_out.what == "60 held-out images (45 out-of-fold in the cross-validation, 15 validation)"
    assert fitted.details["temperature_fitted_on"] == held_out.what
    np.testing.assert_array_equal(held_out.labels, np.concatenate([y, yv]))
    np.testing.assert_allclose(held_out.probs[45:], fitted.val_probs, atol=1e-6)
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)  # the cross-validation's, seed 0
    expected = cross_val_predict(_sklearn(x, y, c), x, y, cv=folds, method="predict_proba")
    np.testing.assert_allclose(held_out.probs[:45, :3], expected, atol=1e-5)
    in_sample = _sklearn(x, y, c).predict_proba(x)
    assert not np.allclose(held_out.probs[:45, :3], in_sample, atol=1e-3)  # held out, not seen in the fit
