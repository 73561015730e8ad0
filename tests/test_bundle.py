"""The bundle: safetensors + JSON, no pickle, the same predictions in a new process, clear errors when damaged."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from transferkit.errors import UserError
from transferkit.evaluation.predict import infer_files
from transferkit.io.bundle import CHECKPOINT_FILE, META_FILE, WEIGHTS_FILE, load_bundle
from transferkit.model import TransferModel
from transferkit.training.run import TrainResult


def test_run_folder_holds_safetensors_and_json_only(trained_run: TrainResult) -> None:
    run = trained_run.run_dir
    assert {p.name for p in run.iterdir()} == {WEIGHTS_FILE, META_FILE, CHECKPOINT_FILE, "train.log"}
    meta = json.loads((run / META_FILE).read_text())
    assert meta["backbone"]["name"] == "efficientnet_lite0"
    assert meta["backbone"]["weights"]["sha256"].startswith("579344248a93")
    assert meta["format_version"] == 2
    assert meta["preprocessing"] == {"kind": "image", "input_size": 224, "crop_pct": 0.875, "interpolation": "bicubic",
                                     "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    assert meta["class_names"] == ["astronaut", "cat", "coffee"]
    assert meta["head"] == {"hidden": 0, "dropout": 0.2}
    assert meta["train_config"]["epochs"] == 2 and meta["train_config"]["fine_tune_epochs"] == 1
    assert [h["stage"] for h in meta["history"]] == ["probe", "head", "head", "fine-tune"]
    assert 0 <= meta["metrics"]["validation"]["accuracy"] <= 1
    assert (run / WEIGHTS_FILE).read_bytes()[:8] != b"\x80\x02\x8a\x0a"  # not a pickle


@pytest.mark.slow
def test_loaded_bundle_predicts_exactly_like_the_saved_model_in_a_new_process(
        trained_run: TrainResult, photo_test_data: Path, tmp_path: Path) -> None:
    paths = sorted(str(p) for p in photo_test_data.rglob("*.*"))
    expected, _ = infer_files(trained_run.model, trained_run.model.preprocessing, [Path(p) for p in paths])
    script = (
        "import json, sys; from pathlib import Path\n"
        "from transferkit.io.bundle import load_bundle\nfrom transferkit.evaluation.predict import infer_files\n"
        "model = load_bundle(Path(sys.argv[1])).model\n"
        "probs, _ = infer_files(model, model.preprocessing, [Path(p) for p in sys.argv[2:]])\n"
        "print(json.dumps(probs.tolist()))\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(trained_run.run_dir), *paths],
                         capture_output=True, text=True, check=True).stdout
    np.testing.assert_allclose(np.array(json.loads(out)), expected, rtol=0, atol=1e-6)


def test_checkpoint_file_loads_on_its_own(trained_run: TrainResult) -> None:
    bundle = load_bundle(trained_run.run_dir / CHECKPOINT_FILE)
    model, meta = bundle.model, bundle.meta
    assert model.class_names == trained_run.model.class_names
    assert meta["train_config"]["seed"] == 0 and meta["history"]


@pytest.fixture()
def run_copy(trained_run: TrainResult, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained_run.run_dir, tmp_path / "copy"))


def test_damaged_weights_are_detected(run_copy: Path) -> None:
    data = bytearray((run_copy / WEIGHTS_FILE).read_bytes())
    data[-100] ^= 0xFF
    (run_copy / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(UserError, match="does not match the sha256"):
        load_bundle(run_copy)


def test_missing_weights_file(run_copy: Path) -> None:
    (run_copy / WEIGHTS_FILE).unlink()
    with pytest.raises(UserError, match="no weights file model.safetensors"):
        load_bundle(run_copy)


def test_missing_json_points_to_the_checkpoint(run_copy: Path) -> None:
    (run_copy / META_FILE).unlink()
    with pytest.raises(UserError, match="training did not finish.*checkpoint.safetensors"):
        load_bundle(run_copy)


def test_incompatible_format_version(run_copy: Path) -> None:
    meta = json.loads((run_copy / META_FILE).read_text())
    meta["format_version"] = 99
    (run_copy / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(UserError, match="version 99.*matching transferkit version"):
        load_bundle(run_copy)


def test_garbage_json(run_copy: Path) -> None:
    (run_copy / META_FILE).write_text("{not json")
    with pytest.raises(UserError, match="cannot read .*model.json"):
        load_bundle(run_copy)


def test_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no model bundle in"):
        load_bundle(tmp_path)
    with pytest.raises(UserError, match="model bundle not found"):
        load_bundle(tmp_path / "nothing")


def test_same_data_seed_and_flags_give_bit_identical_weights(trained_run: TrainResult, photo_data: Path,
                                                             tmp_path: Path) -> None:
    from conftest import TINY_CONFIG

    from transferkit.training.strategies import train

    again = train(photo_data, tmp_path / "again", TINY_CONFIG)
    first = (trained_run.run_dir / WEIGHTS_FILE).read_bytes()
    assert (again.run_dir / WEIGHTS_FILE).read_bytes() == first
    assert [h.to_json() | {"seconds": 0} for h in again.history] == \
        [h.to_json() | {"seconds": 0} for h in trained_run.history]


DATA = Path(__file__).parent / "data"


def test_a_bundle_written_by_format_version_1_still_loads_and_computes_the_same() -> None:
    """tests/data/bundle_v1 was written by transferkit 0.1.0 before bundles were tagged with their modality
    (Lite0 cut at its shallow layer, so the file is small); its logits on a seeded input were recorded then."""
    bundle = load_bundle(str(DATA / "bundle_v1"))  # a str path is fine too
    assert bundle.meta["format_version"] == 1 and "kind" not in bundle.meta["preprocessing"]
    assert bundle.model.layer is not None and bundle.model.class_names == ["astronaut", "cat", "coffee"]
    expected = json.loads((DATA / "bundle_v1_logits.json").read_text())["logits"]
    with torch.no_grad():
        logits = bundle.model(torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1)))
    torch.testing.assert_close(logits, torch.tensor(expected), rtol=1e-5, atol=1e-5)


def test_a_bundle_of_another_modality_is_refused_in_one_line(trained_run: TrainResult, tmp_path: Path) -> None:
    run_copy = tmp_path / "run"
    shutil.copytree(trained_run.run_dir, run_copy)
    meta = json.loads((run_copy / META_FILE).read_text())
    meta["preprocessing"]["kind"] = "audio"
    (run_copy / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(UserError, match="modality 'audio'"):
        load_bundle(run_copy)
    meta["preprocessing"]["kind"] = "text"
    (run_copy / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(UserError, match="is a text model: `transferkit evaluate`, `predict` and `report` read it"):
        load_bundle(run_copy)


def test_model_save_and_load_round_trip(trained_run: TrainResult, tmp_path: Path) -> None:
    model = trained_run.model
    model.save(str(tmp_path / "saved"))
    again = TransferModel.load(tmp_path / "saved")
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x))
    assert again.class_names == model.class_names and again.preprocessing == model.preprocessing
