"""Input size: `--input-size` reaches the bundle and everything that reads it; auto's size test runs only on
small source images, scores each candidate size on cached features, and picks the smallest within noise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import write_photo_dataset

import transferkit.training.size_test as size_test_module
from transferkit.data.files import load_labelled
from transferkit.errors import UserError
from transferkit.evaluation.predict import predict
from transferkit.io.bundle import load_bundle
from transferkit.model import Backbone
from transferkit.runtime import Runtime
from transferkit.training.config import ConfigError, TrainConfig
from transferkit.training.size_test import SIZE_TOLERANCE, SizeTest, candidate_sizes, size_test
from transferkit.training.strategies import train


def test_candidates_are_the_full_three_quarter_and_half_size() -> None:
    assert candidate_sizes(224) == (224, 160, 112)
    assert candidate_sizes(240) == (240, 176, 128)  # multiples of 16
    assert candidate_sizes(48) == (48, 32)  # never under MIN_INPUT_SIZE, no repeats


def test_the_smallest_size_within_noise_of_the_best_is_chosen() -> None:
    assert SizeTest(28, {224: 0.90, 160: 0.90 - SIZE_TOLERANCE / 2, 112: 0.88}, 100).chosen == 160
    assert SizeTest(28, {224: 0.90, 160: 0.91, 112: 0.91}, 100).chosen == 112
    assert SizeTest(28, {224: 0.90, 160: 0.85, 112: 0.80}, 100).chosen == 224


def test_an_input_size_is_checked_and_a_fixed_size_backbone_refuses_another() -> None:
    with pytest.raises(ConfigError, match="input_size must be 32 or more"):
        TrainConfig(input_size=16)
    with pytest.raises(UserError, match="vit_b16 takes 224 px images only"):
        Backbone.from_pretrained("vit_b16", "random", input_size=112)


@pytest.mark.slow
def test_the_size_test_runs_on_small_images_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small = load_labelled(write_photo_dataset(tmp_path / "small", per_class=6, size=40))
    assert size_test(small, TrainConfig(), tmp_path / "s0", Runtime.detect()) is None  # 18 < SIZE_FEWEST images
    monkeypatch.setattr(size_test_module, "SIZE_FEWEST", 10)  # so that 18 images are enough
    found = size_test(small, TrainConfig(), tmp_path / "sizes", Runtime.detect())
    assert found is not None and found.source == 40 and found.images == 18
    assert list(found.accuracy) == [224, 160, 112] and all(0 <= a <= 1 for a in found.accuracy.values())
    for size in found.accuracy:  # each size's features were computed at that size and cached apart
        manifest = json.loads((tmp_path / "sizes" / str(size) / "manifest.json").read_text())
        assert manifest["key"]["preprocessing"]["input_size"] == size
    large = load_labelled(write_photo_dataset(tmp_path / "large", per_class=3, size=128))
    assert size_test(large, TrainConfig(), tmp_path / "s2", Runtime.detect()) is None  # 128 > 224 / 2
    assert size_test(small, TrainConfig(input_size=160), tmp_path / "s3", Runtime.detect()) is None  # chosen


@pytest.mark.slow
def test_a_model_trained_at_a_smaller_size_predicts_at_it(photo_data: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(strategy="extract", input_size=128, probe_epochs=3, val_split=0.25)
    train(photo_data, tmp_path / "run", cfg)
    bundle = load_bundle(tmp_path / "run")
    assert bundle.model.preprocessing.input_size == 128 and bundle.meta["train_config"]["input_size"] == 128
    cat = sorted((photo_data / "cat").iterdir())[0]
    (top,) = predict(bundle.model, [cat], top=1)
    assert top.path == str(cat) and len(top.predictions) == 1
