"""`TransferClassifier` as scikit-learn sees it: fit/predict on real photo crops and Fashion-MNIST arrays, clone,
cross_val_score, GridSearchCV over a Pipeline, pickling, the shared feature cache, and scikit-learn's own
estimator checks -- those that apply to images run for real; the rest feed 2-d tables of floats and are listed in
`NOT_APPLICABLE` with the reason (they run too, as strict expected failures, so the list stays true)."""

from __future__ import annotations

import dataclasses
import json
import logging
import pickle
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import fashion_arrays, photo_arrays
from sklearn.base import clone
from sklearn.exceptions import NotFittedError, SkipTestWarning
from sklearn.metrics import accuracy_score
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.utils import Tags
from sklearn.utils.estimator_checks import check_estimator, parametrize_with_checks

import transferkit as tk
from transferkit.errors import InputError, UserError
from transferkit.estimator import TransferClassifier, feature_folder
from transferkit.io.atomic import locked
from transferkit.training.config import TEXT_ONLY_FIELDS, TrainConfig

_TABLE = "feeds a 2-d table of floats (n_samples, n_features) and expects fit to succeed; X here is images"
_WORDING = "refused here in our own words ({}), but the check looks for scikit-learn's wording ({})"
NOT_APPLICABLE: dict[str, str] = {
    "check_array_api_input": "array-API namespaces for float tables; images are decoded with numpy and PIL",
    "check_classifier_data_not_an_array": _TABLE + " (wrapped in an array-like class)",
    "check_classifiers_classes": _TABLE + " (classes as str and int are tested here on images)",
    "check_classifiers_train": _TABLE,
    "check_complex_data": _WORDING.format("'X has shape (10, 2)'", "'Complex data not supported'"),
    "check_dict_unchanged": _TABLE,
    "check_dont_overwrite_parameters": _TABLE + " (tested here on images)",
    "check_dtype_object": _TABLE + " of objects; a 1-d array of str here is a list of paths",
    "check_estimator_sparse_array": _WORDING.format("'X is of type csr_array: expected uint8 images'", "'sparse'"),
    "check_estimator_sparse_matrix": _WORDING.format("'X is of type csr_matrix: expected uint8 images'", "'sparse'"),
    "check_estimator_sparse_tag": "sparse tables; images are dense, and refusing them is what the tag says",
    "check_estimators_dtypes": _TABLE + " in float32, int32 and int64; images are uint8",
    "check_estimators_empty_data_messages": _WORDING.format("'X holds no images'", "'0 feature(s)'"),
    "check_estimators_fit_returns_self": _TABLE + " (tested here on images)",
    "check_estimators_nan_inf": "NaN and inf in a float table; uint8 images hold neither (float X is refused)",
    "check_estimators_overwrite_params": _TABLE + " (tested here on images)",
    "check_estimators_pickle": _TABLE + " (pickling is tested here on images)",
    "check_f_contiguous_array_estimator": _TABLE,
    "check_fit2d_1feature": _WORDING.format("'X has shape (10, 1)'", "'1 feature(s)'"),
    "check_fit2d_predict1d": _TABLE,
    "check_fit_check_is_fitted": _TABLE + " (tested here on images)",
    "check_fit_idempotent": _TABLE + " (tested here on images)",
    "check_fit_score_takes_y": _TABLE,
    "check_methods_sample_order_invariance": _TABLE + " (tested here on images)",
    "check_methods_subset_invariance": _TABLE + " (tested here on images)",
    "check_n_features_in": "n_features_in_ is a table's width; images of any size are resized by the backbone",
    "check_n_features_in_after_fitting": "n_features_in_ is a table's width; images of any size are resized",
    "check_pipeline_consistency": _TABLE + " (a Pipeline is tested here on images)",
    "check_positive_only_tag_during_fit": _TABLE + " with negative values",
    "check_readonly_memmap_input": _TABLE + " in a read-only memmap",
    "check_supervised_y_2d": _TABLE + " (a column of labels (N, 1) is accepted, tested in test_memory.py)",
}


class _AsTable(TransferClassifier):
    """The estimator itself, with tags claiming 2-d input: with its true tags (images), scikit-learn generates no
    checks at all, so this is how its checks are collected."""

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True
        return tags


@parametrize_with_checks([_AsTable(workers=0)], expected_failed_checks=lambda _: NOT_APPLICABLE, xfail_strict=True)
def test_scikit_learn_estimator_checks(estimator: TransferClassifier, check: object) -> None:
    check(estimator)  # type: ignore[operator]


def test_check_estimator_knows_it_cannot_feed_images() -> None:
    with pytest.warns(SkipTestWarning, match="Can't test estimator TransferClassifier"):
        check_estimator(TransferClassifier())  # only the clone check runs: its inputs are tables


def test_parameters_are_train_configs_fields_with_its_defaults() -> None:
    params = TransferClassifier().get_params()
    fields = {f.name: f for f in dataclasses.fields(TrainConfig) if f.name not in TEXT_ONLY_FIELDS}
    assert set(params) == set(fields) | {"device", "workers", "run_dir"}
    defaults = TrainConfig()
    differ = {name for name in fields if params[name] != getattr(defaults, name)}
    assert differ == {"strategy", "augmentation"}  # "extract" here; None stands for TrainConfig's default
    assert TransferClassifier().train_config() == dataclasses.replace(defaults, strategy="extract")
    assert tk.TransferClassifier is TransferClassifier


def test_bad_parameters_are_refused_by_fit_not_by_the_constructor() -> None:
    bad = TransferClassifier(strategy="nope")  # scikit-learn's rule: __init__ only stores
    with pytest.raises(UserError,
                       match="strategy must be one of extract, frozen, finetune, auto, contrastive, got .nope."):
        bad.fit(np.zeros((4, 8, 8), np.uint8), [0, 0, 1, 1])
    with pytest.raises(UserError, match="probe_epochs must be 1 or more with strategy 'extract'"):
        TransferClassifier(probe_epochs=0).fit(np.zeros((4, 8, 8), np.uint8), [0, 0, 1, 1])


@pytest.fixture(scope="module")
def photos() -> tuple[np.ndarray, np.ndarray]:
    return photo_arrays(per_class=8)  # (24, 64, 64, 3) uint8 and names


@pytest.fixture(scope="module")
def fitted(photos: tuple[np.ndarray, np.ndarray]) -> TransferClassifier:
    return TransferClassifier(probe_epochs=10, workers=0).fit(*photos)


def test_fit_on_photo_arrays_predicts_names_and_probabilities_in_the_order_of_classes(
        fitted: TransferClassifier, photo_test_data: Path) -> None:
    assert fitted.get_params() == TransferClassifier(probe_epochs=10, workers=0).get_params()  # fit changed none
    assert fitted.classes_.tolist() == fitted.model_.class_names == ["astronaut", "cat", "coffee"]
    assert [h.stage for h in fitted.history_] == ["extract"] * 10 and fitted.validation_metrics_.accuracy == 1.0
    paths = [sorted((photo_test_data / name).iterdir())[0] for name in ("coffee", "astronaut", "cat")]  # unseen
    truth = [p.parent.name for p in paths]
    proba = fitted.predict_proba(paths)
    assert proba.shape == (3, 3) and np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert fitted.classes_[proba.argmax(axis=1)].tolist() == truth  # the columns follow classes_
    predicted = fitted.predict([str(p) for p in paths])
    assert predicted.tolist() == truth and all(isinstance(v, str) for v in predicted.tolist())
    assert fitted.score(paths, truth) == accuracy_score(truth, predicted) == 1.0
    one_by_one = fitted.predict_log_proba(paths[:2][::-1])  # row order and batch make no difference
    assert np.allclose(np.exp(one_by_one), proba[:2][::-1], atol=1e-5)


def test_integer_labels_on_fashion_mnist_arrays_come_back_as_integers() -> None:
    X, y = fashion_arrays((0, 5, 9), per_class=6)  # (18, 28, 28) uint8: T-shirt, sandal, ankle boot
    clf = TransferClassifier(probe_epochs=10, workers=0).fit(X, y)
    assert clf.classes_.tolist() == [0, 5, 9] and clf.model_.class_names == ["0", "5", "9"]
    X_new, y_new = fashion_arrays((0, 5, 9), per_class=1, offset=30)
    predicted = clf.predict(X_new)
    assert predicted.dtype == y.dtype and set(predicted.tolist()) <= {0, 5, 9}
    assert clf.score(X_new, y_new) >= 2 / 3


def test_clone_copies_the_parameters_and_not_the_fit(fitted: TransferClassifier) -> None:
    copy = clone(fitted)
    assert copy.get_params() == fitted.get_params() and not hasattr(copy, "model_")
    with pytest.raises(NotFittedError):
        copy.predict(np.zeros((1, 8, 8), np.uint8))


def test_clones_share_the_feature_cache_and_the_same_seed_gives_the_same_model(
        fitted: TransferClassifier, photos: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    X, y = photos
    again = clone(fitted).fit(X, y)
    for key, value in fitted.model_.head.state_dict().items():
        assert torch.equal(again.model_.head.state_dict()[key], value), key
    half = clone(fitted).set_params(run_dir=tmp_path).fit(X[::2], y[::2])
    meta = json.loads((tmp_path / "model.json").read_text())  # run_dir keeps the bundle and train.log
    assert meta["features"]["folder"] == str(feature_folder(half.train_config()))
    assert meta["features"]["stats"]["computed"] == 0 and meta["features"]["stats"]["reused"] == 12
    assert tk.TransferModel.load(tmp_path).class_names == half.model_.class_names


def test_fits_sharing_a_feature_cache_take_turns(tmp_path: Path) -> None:
    """What keeps `n_jobs` fits from mixing one cache's manifest with another's arrays: `extract_features` holds
    `locked(folder)`, an exclusive lock on the folder, while it updates it."""
    order: list[str] = []

    def second() -> None:
        with locked(tmp_path):
            order.append("second")

    with locked(tmp_path):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.2)
        order.append("first")
    thread.join()
    assert order == ["first", "second"]


@pytest.mark.slow
def test_cross_val_score_and_a_grid_search_over_a_pipeline(photos: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = photos
    scores = cross_val_score(TransferClassifier(probe_epochs=10, workers=0), X, y, cv=3)
    assert scores.shape == (3,) and scores.min() >= 0.75
    X, y = fashion_arrays((0, 5, 9), per_class=6)
    pipeline = Pipeline([("clf", TransferClassifier(workers=0))])
    search = GridSearchCV(pipeline, {"clf__probe_epochs": [2, 10]}, cv=2).fit(X, y)
    assert search.best_params_["clf__probe_epochs"] in (2, 10) and len(search.cv_results_["mean_test_score"]) == 2
    best = search.best_estimator_.named_steps["clf"]
    assert best.probe_epochs == search.best_params_["clf__probe_epochs"] and best.classes_.tolist() == [0, 5, 9]


def test_a_fitted_classifier_pickles_for_joblib(fitted: TransferClassifier, photos: tuple[np.ndarray, np.ndarray]
                                                ) -> None:
    X, _ = photos
    copy = pickle.loads(pickle.dumps(fitted))
    assert np.array_equal(copy.predict_proba(X[:1]), fitted.predict_proba(X[:1]))


def test_an_unreadable_image_at_prediction_is_an_error_naming_it(fitted: TransferClassifier, photos: tuple[
        np.ndarray, np.ndarray], tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.touch()
    with pytest.raises(InputError, match=r"X\[1\] \(.*empty\.png\) cannot be read: empty file"):
        fitted.predict([photos[0][0], empty])
    with pytest.raises(InputError, match=r"X has dtype float64: .*\(X \* 255\)\.round\(\)\.astype\(np\.uint8\)"):
        fitted.predict(photos[0][:2] / 255.0)


def test_fit_warns_about_the_images_it_left_out(fitted: TransferClassifier, photos: tuple[np.ndarray, np.ndarray],
                                               caplog: pytest.LogCaptureFixture) -> None:
    X, y = photos
    X, y = np.concatenate([X, X[:1]]), np.concatenate([y, ["coffee"]])  # one picture labelled twice
    with caplog.at_level(logging.WARNING, logger="transferkit"):
        clone(fitted).set_params(probe_epochs=1).fit(X, y)
    assert "fit left out 1 of 25 images" in caplog.text and "listed twice" in caplog.text


def test_the_image_strategies_train_from_arrays_too(photos: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = photos
    clf = TransferClassifier(strategy="frozen", epochs=1, probe_epochs=10, batch_size=8, workers=0).fit(X, y)
    assert [h.stage for h in clf.history_] == ["probe", "head"]  # load_images read the arrays' files
    assert clf.predict(X[::8]).tolist() == y[::8].tolist()
