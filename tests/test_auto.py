"""`--strategy auto`: the probe always runs and is the floor; fine-tuning is tried only with enough images and
kept only when it beats the probe on validation; the horizontal flip is tested on the data before it is used
(a data set whose classes are each other's mirror images must not get it, one of photos must)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_CONFIG, write_photo_dataset
from PIL import Image, ImageDraw, ImageFont

from transferkit.cli.main import main
from transferkit.data.files import load_labelled
from transferkit.data.preprocess import Augmentation
from transferkit.errors import UserError
from transferkit.evaluation.report import run_facts
from transferkit.io.bundle import load_bundle
from transferkit.model import Backbone
from transferkit.runtime import Runtime
from transferkit.selection.scores import probe_accuracy_with_views
from transferkit.training.auto import AUTO_DIR, MIN_PER_CLASS, flip_test
from transferkit.training.config import TrainConfig
from transferkit.training.run import Run
from transferkit.training.strategies import train

AUTO = TrainConfig(strategy="auto", epochs=1, fine_tune_epochs=1, batch_size=8, val_split=0.25, lr=3e-3,
                   probe_epochs=20)


def test_views_that_carry_another_class_lower_the_probe() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 40)
    features = rng.normal(size=(80, 8)) + 3.0 * labels[:, None]
    same = probe_accuracy_with_views(features, features + rng.normal(scale=0.1, size=features.shape), labels)
    swapped = probe_accuracy_with_views(features, features[::-1], labels)  # each view looks like the other class
    assert same[0] == swapped[0] and same[1] >= same[0] - 0.02  # the same folds: the same score without views
    assert swapped[1] < swapped[0] - 0.2


def _letters(root: Path, per_class: int) -> Path:
    """b, d, p and q drawn at random sizes, places and colours: each class is another one's mirror image."""
    rng = np.random.default_rng(0)
    for letter in "bdpq":
        (root / letter).mkdir(parents=True)
        for i in range(per_class):
            image = Image.new("RGB", (96, 96), tuple(int(v) for v in rng.integers(180, 256, 3)))
            font = ImageFont.load_default(size=int(rng.integers(50, 80)))
            ImageDraw.Draw(image).text((int(rng.integers(5, 40)), int(rng.integers(-15, 10))), letter, font=font,
                                       fill=tuple(int(v) for v in rng.integers(0, 90, 3)))
            image.save(root / letter / f"{i:02d}.png")
    return root


@pytest.mark.slow
def test_the_flip_is_tested_on_the_data(photo_data: Path, tmp_path: Path) -> None:
    backbone = Backbone.from_pretrained("efficientnet_lite0")
    cfg = TrainConfig(augmentation=Augmentation())
    letters = _letters(tmp_path / "letters", per_class=16)
    handed = flip_test(Run(letters, tmp_path / "a", cfg, Runtime.detect()), backbone, tmp_path / "fa")
    assert not handed.keep and handed.with_flip < handed.without - 0.1
    photos = flip_test(Run(photo_data, tmp_path / "b", cfg, Runtime.detect()), backbone, tmp_path / "fb")
    assert photos.keep and photos.images == 24


@pytest.mark.slow
def test_few_images_keep_the_probe(photo_data: Path, tmp_path: Path) -> None:
    result = train(photo_data, tmp_path / "run", AUTO)  # 8 per class: 6 to train, under MIN_PER_CLASS
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    assert meta["auto"]["chosen"] == "extract" and "fine-tuning was not tried" in meta["auto"]["why"]
    assert meta["train_config"]["strategy"] == "extract" and not (tmp_path / "run" / AUTO_DIR / "finetune").exists()
    assert result.run_dir == tmp_path / "run"
    assert result.val_metrics.accuracy == meta["auto"]["validation_accuracy"]["extract"]
    assert load_bundle(tmp_path / "run").model.class_names == ["astronaut", "cat", "coffee"]


@pytest.mark.slow
def test_fine_tuning_is_kept_only_when_it_beats_the_probe(tmp_path: Path) -> None:
    data = write_photo_dataset(tmp_path / "data", per_class=MIN_PER_CLASS + 4, seed=5, size=64)
    result = train(data, tmp_path / "run", AUTO)
    meta = json.loads((tmp_path / "run" / "model.json").read_text())["auto"]
    scores = meta["validation_accuracy"]
    assert set(scores) == {"extract", "finetune"} and "flip_test" in meta
    expected = "finetune" if scores["finetune"] > scores["extract"] else "extract"
    assert meta["chosen"] == expected and result.val_metrics.accuracy == max(scores.values())
    chosen = tmp_path / "run" / AUTO_DIR / expected / "model.safetensors"
    assert chosen.read_bytes() == (tmp_path / "run" / "model.safetensors").read_bytes()
    assert load_bundle(tmp_path / "run").model.class_names == ["astronaut", "cat", "coffee"]


def test_auto_is_the_default_strategy() -> None:
    assert TrainConfig().strategy == "auto" and TINY_CONFIG.strategy == "finetune"


@pytest.mark.slow
def test_a_default_run_records_what_auto_chose(photo_data: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"  # no --strategy: auto; 6 training images per class keep the probe (seconds)
    assert main(["train", str(photo_data), "--out", str(out), "--val-split", "0.25", "--probe-epochs", "5"]) == 0
    assert "strategy auto chose extract" in capsys.readouterr().out
    meta = json.loads((out / "model.json").read_text())
    assert meta["auto"]["chosen"] == "extract" and "fine-tuning was not tried" in meta["auto"]["why"]
    assert meta["auto"]["validation_accuracy"] == {"extract": meta["metrics"]["validation"]["accuracy"]}
    assert dict(run_facts(meta, "x", 1))["strategy"].startswith("auto: feature extraction")


@pytest.mark.slow
def test_backbone_auto_trains_the_candidate_rank_puts_first(photo_data: Path, tmp_path: Path) -> None:
    from transferkit.features.engine import cache_dir
    from transferkit.selection.rank import LAYERS, available_candidates, rank

    cfg = TrainConfig(backbone="auto", strategy="extract", probe_epochs=5, val_split=0.25)
    train(photo_data, tmp_path / "run", cfg)
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    best = rank(load_labelled(photo_data), available_candidates(None, LAYERS), cache_dir() / "rank",
                Runtime.detect())[0].candidate  # the caches are there now: this only scores again
    assert (meta["train_config"]["backbone"], meta["train_config"]["layer"]) == (best.backbone, best.layer)
    assert meta["backbone"]["name"] == best.backbone
    assert f"backbone auto chose {best}" in (tmp_path / "run" / "train.log").read_text()
    with pytest.raises(UserError, match="drop --weights and --layer"):
        train(photo_data, tmp_path / "again", TrainConfig(backbone="auto", layer="mid"))
