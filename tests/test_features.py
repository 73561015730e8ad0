"""The feature cache and the extract strategy: reuse, invalidation, corruption, engine parity, and a bundle trained
on cached features that predicts raw images."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_photo_dataset
from PIL import Image

from transferkit.cli.main import main
from transferkit.data.files import load_labelled
from transferkit.data.images import load_image
from transferkit.data.transforms import eval_transform
from transferkit.errors import UserError
from transferkit.evaluation.metrics import compute_metrics
from transferkit.evaluation.predict import evaluate, infer_files, predict
from transferkit.features.cache import MANIFEST, load_features
from transferkit.features.engine import PARITY_TOLERANCE, make_engine
from transferkit.features.extract import extract_features
from transferkit.io.bundle import load_bundle
from transferkit.model import TransferModel
from transferkit.runtime import Runtime


@pytest.fixture(scope="module")
def lite0() -> TransferModel:
    return TransferModel.from_pretrained("efficientnet_lite0", ["astronaut", "cat", "coffee"])


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    return write_photo_dataset(tmp_path / "data", per_class=3, seed=5)


def test_second_run_reuses_every_feature_and_matches_pytorch(data: Path, tmp_path: Path,
                                                              lite0: TransferModel) -> None:
    files = load_labelled(data)
    first = extract_features(files, lite0.backbone, tmp_path / "f")
    assert (first.stats.computed, first.stats.reused) == (9, 0)
    assert first.features.shape == (9, lite0.feature_dim) and first.labels.tolist() == files.labels()
    expected, kept = infer_files(lite0.base, lite0.preprocessing, list(first.paths), softmax=False)
    assert kept == list(range(9))
    assert np.abs(first.features - expected).max() < PARITY_TOLERANCE  # the cache holds what PyTorch computes

    second = extract_features(files, lite0.backbone, tmp_path / "f")
    assert (second.stats.computed, second.stats.reused) == (0, 9)
    np.testing.assert_array_equal(second.features, first.features)


def test_changed_added_and_deleted_files_are_all_that_is_recomputed(data: Path, tmp_path: Path,
                                                                    lite0: TransferModel) -> None:
    before = extract_features(load_labelled(data), lite0.backbone, tmp_path / "f")
    old_rows = {p: i for i, p in enumerate(before.paths)}
    changed = data / "cat" / "00.jpg"
    Image.open(changed).transpose(Image.Transpose.FLIP_TOP_BOTTOM).save(changed)
    (data / "coffee" / "01.png").unlink()
    moved = data / "astronaut" / "moved.jpg"
    (data / "astronaut" / "00.jpg").rename(moved)  # same content under a new name: reused
    shutil.copy(data / "astronaut" / "01.png", data / "astronaut" / "copy.png")  # a duplicate: skipped, as in train
    Image.new("RGB", (120, 90), (200, 30, 30)).save(data / "astronaut" / "new.png")

    after = extract_features(load_labelled(data), lite0.backbone, tmp_path / "f")
    assert (after.stats.computed, after.stats.removed) == (2, 2)  # changed + new; deleted + old content
    assert after.stats.reused == 9 - 2 and len(after.paths) == 9
    assert [(p.name, "duplicate" in reason) for p, reason in after.skipped] == [("copy.png", True)]
    rows = {p: i for i, p in enumerate(after.paths)}
    assert data / "coffee" / "01.png" not in rows
    assert not np.allclose(after.features[rows[changed]], before.features[old_rows[changed]], atol=1e-3)
    np.testing.assert_array_equal(after.features[rows[moved]],
                                  before.features[old_rows[data / "astronaut" / "00.jpg"]])
    fresh, _ = infer_files(lite0.base, lite0.preprocessing, list(after.paths), softmax=False)
    assert np.abs(after.features - fresh).max() < PARITY_TOLERANCE


@pytest.mark.parametrize("damage", ["truncate", "flip a byte", "delete labels", "garble manifest"])
def test_a_damaged_cache_is_detected_and_rebuilt(damage: str, data: Path, tmp_path: Path, lite0: TransferModel,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "f"
    good = extract_features(load_labelled(data), lite0.backbone, folder)
    reference = np.array(good.features)
    features = folder / "features.npy"
    if damage == "truncate":
        features.write_bytes(features.read_bytes()[:-1000])
    elif damage == "flip a byte":
        raw = bytearray(features.read_bytes())
        raw[-7] ^= 0x40
        features.write_bytes(bytes(raw))
    elif damage == "delete labels":
        (folder / "labels.npy").unlink()
    else:
        (folder / MANIFEST).write_text('{"format": "transferkit.features", "format_', encoding="utf-8")

    with pytest.raises(UserError, match="no usable feature cache"):
        load_features(folder)
    with caplog.at_level(logging.INFO, logger="transferkit"):
        rebuilt = extract_features(load_labelled(data), lite0.backbone, folder)
    assert any("rebuilding the feature cache" in m for m in caplog.messages)
    assert rebuilt.stats.computed == 9
    np.testing.assert_allclose(rebuilt.features, reference, atol=1e-5)
    assert load_features(folder).features.shape == reference.shape


def test_other_settings_make_a_new_cache(data: Path, tmp_path: Path, lite0: TransferModel,
                                         caplog: pytest.LogCaptureFixture) -> None:
    extract_features(load_labelled(data), lite0.backbone, tmp_path / "f")
    mid = TransferModel.from_pretrained("efficientnet_lite0", ["astronaut", "cat", "coffee"], layer="mid")
    with caplog.at_level(logging.INFO, logger="transferkit"):
        cache = extract_features(load_labelled(data), mid.backbone, tmp_path / "f", engine="torch")
    assert cache.stats.computed == 9 and cache.features.shape[1] == mid.feature_dim
    assert any("layer changed" in m for m in caplog.messages)


def test_unreadable_files_are_listed_and_not_retried(data: Path, tmp_path: Path, lite0: TransferModel) -> None:
    (data / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    cache = extract_features(load_labelled(data), lite0.backbone, tmp_path / "f")
    assert [p.name for p, _ in cache.skipped] == ["broken.jpg"] and len(cache.paths) == 9
    again = extract_features(load_labelled(data), lite0.backbone, tmp_path / "f")
    assert again.stats.computed == 0 and [p.name for p, _ in again.skipped] == ["broken.jpg"]
    (data / "coffee" / "empty.png").write_bytes(b"")  # a new bad file alone still updates the cache's list
    third = extract_features(load_labelled(data), lite0.backbone, tmp_path / "f")
    assert third.stats.computed == 0 and sorted(p.name for p, _ in third.skipped) == ["broken.jpg", "empty.png"]
    assert load_features(tmp_path / "f").skipped == third.skipped


def test_augmented_views_are_cached_once_and_reproducible(data: Path, tmp_path: Path,
                                                         lite0: TransferModel) -> None:
    files = load_labelled(data)
    one = extract_features(files, lite0.backbone, tmp_path / "a", views=2, seed=3)
    two = extract_features(files, lite0.backbone, tmp_path / "b", views=2, seed=3)
    assert one.views is not None and two.views is not None and one.views.shape == (9, 2, lite0.feature_dim)
    np.testing.assert_allclose(one.views, two.views, atol=1e-5)  # seeded by content, not by run or worker
    assert np.abs(one.views[:, 0] - one.views[:, 1]).max() > 1e-2  # two different views
    assert np.abs(one.views[:, 0] - one.features).max() > 1e-2  # and not the plain crop


def test_onnx_engine_matches_pytorch_on_real_photos(photo_test_data: Path, lite0: TransferModel) -> None:
    engine = make_engine(lite0.base, lite0.preprocessing, Runtime.detect(), "auto")
    assert engine.name == "onnxruntime", engine.note  # onnxruntime is a dependency: it must be the CPU engine
    paths = sorted(photo_test_data.rglob("*.*"))[:6]
    normalised = eval_transform(lite0.preprocessing)
    with torch.inference_mode():
        expected = lite0.base.eval()(torch.stack([normalised(load_image(p)) for p in paths])).numpy()
    raw = eval_transform(lite0.preprocessing, normalise=False)  # the engine reads uint8 and normalises itself
    images = torch.stack([raw(load_image(p)) for p in paths])
    assert images.dtype == torch.uint8
    assert np.abs(engine(images) - expected).max() < PARITY_TOLERANCE
    torch_engine = make_engine(lite0.base, lite0.preprocessing, Runtime.detect(), "torch")
    assert torch_engine.name == "pytorch" and np.abs(torch_engine(images) - expected).max() < 1e-4


def test_cli_extract_then_train_on_features_gives_a_bundle_that_reads_raw_images(
        photo_data: Path, photo_test_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache, run = tmp_path / "features", tmp_path / "run"
    assert main(["extract", str(photo_data), "--out", str(cache)]) == 0
    assert "24 feature vectors of size 1280" in capsys.readouterr().out
    assert main(["train", str(photo_data), "--out", str(run), "--strategy", "extract", "--features", str(cache),
                 "--hidden", "32"]) == 0
    assert "0 computed, 24 reused" in capsys.readouterr().out  # the cache made by `extract` was used

    bundle = load_bundle(run)
    model, meta = bundle.model, bundle.meta
    assert meta["train_config"]["strategy"] == "extract" and meta["features"]["key"]["backbone"] == "efficientnet_lite0"
    assert [h["stage"] for h in meta["history"]] == ["extract"] * 30
    # what the extraction did, and nothing private: the rows' content hashes live in the cache, not its stats
    assert set(meta["features"]["stats"]) == {"reused", "computed", "removed", "engine", "seconds",
                                              "images_per_second"}
    evaluation = evaluate(model, photo_test_data)
    metrics, skipped = evaluation.metrics, evaluation.skipped
    assert not skipped and metrics.accuracy >= 0.9
    # the bundle on raw images computes what the head computes on the engine's features
    paths = sorted(photo_test_data.rglob("*.*"))
    predictions = predict(model, paths, top=3)
    test_cache = extract_features(load_labelled(photo_test_data), model.backbone, tmp_path / "test-features")
    with torch.no_grad():
        probs = model.head.eval()(torch.from_numpy(np.array(test_cache.features))).softmax(1).numpy()
    by_path = {str(p): row for p, row in zip(test_cache.paths, probs)}
    for p in predictions:
        top = p.predictions[0]
        assert abs(by_path[p.path][model.class_names.index(str(top["label"]))] - float(top["probability"])) < 1e-3
    assert compute_metrics(test_cache.labels, probs, model.class_names).accuracy == metrics.accuracy


_REPORT_IMPORTS = """
import sys
from transferkit.cli.main import main
code = main(sys.argv[1:])
heavy = sorted(m for m in ("torch", "torchvision", "timm", "sklearn", "onnxruntime") if m in sys.modules)
print(f"exit {code}, imported {heavy}")
"""


@pytest.mark.slow
def test_cli_extract_answers_an_up_to_date_cache_without_torch(photo_data: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    data = Path(shutil.copytree(photo_data, tmp_path / "data"))
    argv = ["extract", str(data), "--out", str(tmp_path / "features")]
    assert main(argv) == 0
    assert "24 computed, 0 reused" in capsys.readouterr().out
    source = json.loads((tmp_path / "features" / MANIFEST).read_text())["source_key"]
    assert source["backbone"] == "efficientnet_lite0" and source["weights"].startswith("package:")

    def fresh_process() -> str:
        proc = subprocess.run([sys.executable, "-c", _REPORT_IMPORTS, *argv], capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    out = fresh_process()  # the same line the full path prints, without torch or timm
    assert "24 feature vectors of size 1280" in out and "0 computed, 24 reused, 0 dropped, 0 unreadable" in out
    assert "exit 0, imported []" in out
    changed = data / "cat" / "00.jpg"
    Image.open(changed).transpose(Image.Transpose.FLIP_TOP_BOTTOM).save(changed)
    assert main(argv) == 0  # not up to date: the full path computes the changed file and records the key again
    assert "1 computed, 23 reused, 1 dropped" in capsys.readouterr().out
    assert "0 computed, 24 reused" in fresh_process()
    assert main([*argv, "--layer", "mid"]) == 0  # other settings: the full path rebuilds
    assert "24 computed" in capsys.readouterr().out


def test_bad_strategy_values_are_one_line_errors(photo_data: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(photo_data), "--out", str(tmp_path / "r"), "--strategy", "extract", "--probe-epochs", "0"])
    assert exit_info.value.code == 2
    assert "argument --probe-epochs: must be 1 or more with strategy 'extract'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(photo_data), "--out", str(tmp_path / "r"), "--strategy", "magic"])
    assert exit_info.value.code == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / MANIFEST).write_text(json.dumps({"format": "something else"}), encoding="utf-8")
    with pytest.raises(UserError, match="not a transferkit feature cache"):
        load_features(empty)
