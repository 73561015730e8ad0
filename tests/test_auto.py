"""`--strategy auto`: the probe always runs and is the floor; fine-tuning is tried only with enough images and
kept only when it beats the probe on validation (the augmentation test has its own file, test_augment_test.py)."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import cast

import numpy as np
import pytest
import torch
from conftest import TINY_CONFIG, write_photo_dataset

import transferkit.training.size_test as size_test_module
from transferkit.cli.main import main
from transferkit.data.files import EXAMPLE_DATA, load_labelled
from transferkit.data.split import stratified_split
from transferkit.errors import UserError
from transferkit.evaluation.metrics import compute_metrics
from transferkit.evaluation.predict import score
from transferkit.evaluation.report import run_facts
from transferkit.io.bundle import load_bundle
from transferkit.model import TransferModel
from transferkit.runtime import Runtime
from transferkit.training.auto import AUTO_DIR, MIN_PER_CLASS, _decide, train_auto
from transferkit.training.config import TrainConfig
from transferkit.training.run import Run, TrainResult
from transferkit.training.strategies import STRATEGIES, train

AUTO = TrainConfig(strategy="auto", epochs=1, fine_tune_epochs=1, batch_size=8, val_split=0.25, lr=3e-3,
                   probe_epochs=20)


@pytest.mark.slow
def test_few_images_keep_the_probe(photo_data: Path, tmp_path: Path) -> None:
    result = train(photo_data, tmp_path / "run", AUTO)  # 8 per class: 6 to train, under MIN_PER_CLASS
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    assert meta["auto"]["chosen"] == "extract" and "fine-tuning was not tried" in meta["auto"]["why"]
    assert meta["train_config"]["strategy"] == "extract" and not (tmp_path / "run" / AUTO_DIR / "finetune").exists()
    assert meta["probe"]["refit_images"] == 24 and meta["data"]["validation"] == 6  # kept: refitted on all 24
    assert "size_test" not in meta["auto"] and meta["preprocessing"]["input_size"] == 224  # under SIZE_FEWEST
    assert result.run_dir == tmp_path / "run"
    assert result.val_metrics.accuracy == meta["auto"]["validation_accuracy"]["extract"]
    assert load_bundle(tmp_path / "run").model.class_names == ["astronaut", "cat", "coffee"]


@pytest.mark.slow
def test_the_size_tests_choice_is_what_the_bundle_resizes_to(photo_data: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(size_test_module, "SIZE_FEWEST", 10)  # so that 24 photos of 96 px get the test
    train(photo_data, tmp_path / "run", replace(AUTO, val_split=0.25))
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    sizes = meta["auto"]["size_test"]
    assert sizes["source_pixels"] == 96 and set(sizes["probe_accuracy"]) == {"224", "160", "112"}
    assert meta["preprocessing"]["input_size"] == sizes["chosen"]
    assert meta["train_config"]["input_size"] == (None if sizes["chosen"] == 224 else sizes["chosen"])
    assert load_bundle(tmp_path / "run").model.preprocessing.input_size == sizes["chosen"]


@pytest.mark.slow
def test_fine_tuning_is_kept_only_when_it_beats_the_probe(tmp_path: Path) -> None:
    data = write_photo_dataset(tmp_path / "data", per_class=MIN_PER_CLASS + 4, seed=5, size=64)
    result = train(data, tmp_path / "run", AUTO)
    meta = json.loads((tmp_path / "run" / "model.json").read_text())["auto"]
    scores = meta["validation_accuracy"]
    assert set(scores) == {"extract", "finetune"} and "augmentation_test" in meta
    probe = json.loads((tmp_path / "run" / AUTO_DIR / "extract" / "model.json").read_text())
    assert probe["probe"]["refit_images"] == 42 and probe["best"].startswith("logistic regression, C=")
    tuned = json.loads((tmp_path / "run" / AUTO_DIR / "finetune" / "model.json").read_text())
    assert {epoch["stage"] for epoch in tuned["history"]} == {"fine-tune"}  # from the probe's head: no stage 1
    assert "stage 1 skipped" in (tmp_path / "run" / "train.log").read_text()
    paired = meta["paired_test"]  # 12 validation images, under SMALL_VALIDATION: the paired test decides
    assert paired["images"] == 12
    gap = (paired["only_finetune_right"] - paired["only_probe_right"]) / paired["images"]
    assert gap == pytest.approx(scores["finetune"] - scores["extract"])
    expected = "finetune" if paired["finetune_wins"] else "extract"
    assert meta["chosen"] == expected and result.val_metrics.accuracy == scores[expected]
    assert scores[expected] >= scores["extract"]
    chosen = tmp_path / "run" / AUTO_DIR / expected / "model.safetensors"
    assert chosen.read_bytes() == (tmp_path / "run" / "model.safetensors").read_bytes()
    assert load_bundle(tmp_path / "run").model.class_names == ["astronaut", "cat", "coffee"]


def test_on_a_large_validation_split_a_tie_goes_to_fine_tuning() -> None:
    def scored(right: int) -> TrainResult:  # `right` of 200 validation images right
        labels = np.zeros(200, dtype=np.int64)
        probs = np.tile([0.9, 0.1], (200, 1))
        probs[right:] = [0.1, 0.9]
        metrics = compute_metrics(labels, probs, ["a", "b"])
        return TrainResult(cast(TransferModel, None), Path("."), [], metrics, None, [])

    assert _decide(scored(170), scored(171), False, {})[0]
    keep, why = _decide(scored(170), scored(170), False, {})
    assert keep and "breaks the tie" in why
    keep, why = _decide(scored(171), scored(170), False, {})
    assert not keep and "the probe is kept" in why


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


def _one_image_better(run: Run) -> TrainResult:
    """A real challenger exactly one validation image better than the probe: the probe's own model with one
    class's bias raised just enough to turn one of its mistakes right and change nothing else."""
    model = TransferModel.load(run.out.parent / "extract")
    files = run.files()
    validation = files.subset(stratified_split(files.labels(), run.cfg.val_split, run.cfg.seed)[1])
    before = score(model, validation, run.runtime)
    logits = model.temperature * np.log(before.probs)  # the head's logits, up to a constant per image
    guess = logits.argmax(1)
    for c in range(logits.shape[1]):
        others = np.flatnonzero(guess != c)
        margin = logits[others].max(1) - logits[others, c]
        order = np.argsort(margin)
        if before.labels[others[order[0]]] == c and margin[order[1]] > margin[order[0]] + 1e-3:
            with torch.no_grad():
                model.head[-1].bias[c] += (margin[order[0]] + margin[order[1]]) / 2
            break
    else:
        raise AssertionError("the probe made no mistake a bias could put right alone")
    after = score(model, validation, run.runtime)
    right = (after.probs.argmax(1) == after.labels).sum() - (before.probs.argmax(1) == before.labels).sum()
    assert right == 1
    model.save(run.out)
    return TrainResult(model, run.out, [], compute_metrics(after.labels, after.probs, model.class_names), None, [],
                       validation, after)


@pytest.mark.slow
def test_one_image_better_on_a_small_validation_split_keeps_the_probe(tmp_path: Path) -> None:
    data = tmp_path / "data"  # T-shirts, pullovers and shirts: a probe makes mistakes on them
    for name in ("pullover", "shirt", "tshirt_top"):
        (data / name).mkdir(parents=True)
        for f in sorted((EXAMPLE_DATA / "train" / name).glob("*.png"))[:20]:
            shutil.copy(f, data / name / f.name)
    # 8 validation and 12 training images per class; the input size given, so the 28 px images get no size test
    cfg = replace(AUTO, val_split=0.4, probe_epochs=10, input_size=224)
    run = Run(data, tmp_path / "run", cfg, Runtime.detect(), started=time.perf_counter())
    result = train_auto(run, STRATEGIES["extract"], _one_image_better)
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    auto = meta["auto"]
    assert auto["paired_test"] == {"images": 24, "only_finetune_right": 1, "only_probe_right": 0, "p_value": 0.5,
                                   "alpha": 0.05, "finetune_wins": False}
    scores = auto["validation_accuracy"]
    assert scores["finetune"] == pytest.approx(scores["extract"] + 1 / 24)
    assert auto["chosen"] == "extract" and "within the split's noise" in auto["why"]
    assert result.val_metrics.accuracy == scores["extract"]
