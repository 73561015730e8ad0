"""The command line end to end: train with bad files mixed in, evaluate, predict, the error contract
(one line, exit 2, no traceback) and Ctrl-C leaving a usable checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_photo_dataset
from PIL import Image

from transferkit.cli.main import main
from transferkit.io.bundle import CHECKPOINT_FILE, load_bundle
from transferkit.training.run import TrainResult


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_train_skips_bad_files_and_lists_them(tmp_path: Path, photo_data: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    data = Path(shutil.copytree(photo_data, tmp_path / "data"))
    (data / "cat" / "empty.jpg").write_bytes(b"")
    (data / "coffee" / "page.jpg").write_text("<html><body>404</body></html>")
    good = (data / "cat" / "00.jpg").read_bytes()
    (data / "astronaut" / "cut.jpg").write_bytes(good[: len(good) // 2])
    out = tmp_path / "run"
    code, stdout, _ = _cli(capsys, "train", str(data), "--out", str(out), "--strategy", "frozen",
                           "--epochs", "1", "--batch-size", "8", "--class-weights")
    assert code == 0
    assert "skipped 3 unreadable file(s)" in stdout
    log = (out / "train.log").read_text()
    for name in ("empty.jpg", "page.jpg", "cut.jpg"):
        assert name in log
    assert "validation accuracy" in stdout and str(out) in stdout
    meta = json.loads((out / "model.json").read_text())
    assert meta["train_config"]["class_weights"] is True and len(meta["data"]["skipped"]) == 3


def test_evaluate_json(trained_run: TrainResult, photo_test_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = _cli(capsys, "evaluate", str(trained_run.run_dir), str(photo_test_data), "--json")
    assert code == 0
    report = json.loads(stdout)
    assert set(report) >= {"accuracy", "macro_f1", "per_class", "confusion_matrix"}
    assert set(report["per_class"]) == {"astronaut", "cat", "coffee"}
    assert set(report["per_class"]["cat"]) == {"precision", "recall", "f1", "support"}
    assert report["confusion_matrix"]["labels"] == ["astronaut", "cat", "coffee"]
    assert sum(map(sum, report["confusion_matrix"]["matrix"])) == 12
    # three distinct real photos: even a 3-epoch model tells them apart
    assert report["accuracy"] >= 0.75


def test_evaluate_table(trained_run: TrainResult, photo_test_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = _cli(capsys, "evaluate", str(trained_run.run_dir), str(photo_test_data))
    assert code == 0
    assert stdout.startswith("accuracy ") and "confusion matrix" in stdout and "precision" in stdout


def test_predict_json(trained_run: TrainResult, photo_test_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = _cli(capsys, "predict", str(trained_run.run_dir), str(photo_test_data / "coffee"),
                           str(photo_test_data / "cat" / "00.jpg"), "--top", "2", "--json")
    assert code == 0
    rows = json.loads(stdout)
    assert len(rows) == 5
    for row in rows:
        assert set(row) == {"path", "predictions"} and len(row["predictions"]) == 2
        assert set(row["predictions"][0]) == {"label", "probability"}
        assert row["predictions"][0]["probability"] >= row["predictions"][1]["probability"]


def _one_line_error(code: int, stderr: str, *needles: str) -> None:
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("transferkit: error:"), stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_error_missing_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _cli(capsys, "train", str(tmp_path / "nope"), "--out", str(tmp_path / "r"))
    _one_line_error(code, err, "nope", "sub-folder per class")


def test_error_empty_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    code, _, err = _cli(capsys, "train", str(tmp_path / "empty"), "--out", str(tmp_path / "r"))
    _one_line_error(code, err, "no images found", "one sub-folder per class")


def test_error_single_class(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_photo_dataset(tmp_path / "d", per_class=3)
    shutil.rmtree(data / "cat")
    shutil.rmtree(data / "coffee")
    code, _, err = _cli(capsys, "train", str(data), "--out", str(tmp_path / "r"))
    _one_line_error(code, err, "astronaut", "at least two")


def test_error_class_with_one_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_photo_dataset(tmp_path / "d", per_class=3)
    for extra in sorted((data / "cat").iterdir())[1:]:
        extra.unlink()
    code, _, err = _cli(capsys, "train", str(data), "--out", str(tmp_path / "r"))
    _one_line_error(code, err, "cat")


def test_error_unknown_backbone(photo_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _cli(capsys, "train", str(photo_data), "--out", str(tmp_path / "r"), "--backbone", "resnet9000")
    _one_line_error(code, err, "resnet9000", "did you mean resnet50", "transferkit models")


def test_error_unreadable_bundle(tmp_path: Path, photo_test_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "model.json").write_text("garbage")
    code, _, err = _cli(capsys, "evaluate", str(tmp_path), str(photo_test_data))
    _one_line_error(code, err, "model.json", "damaged")


def test_error_evaluate_with_unknown_classes(trained_run: TrainResult, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    data = write_photo_dataset(tmp_path / "d", per_class=2)
    (data / "cat").rename(data / "dog")
    code, _, err = _cli(capsys, "evaluate", str(trained_run.run_dir), str(data))
    _one_line_error(code, err, "dog", "not trained on")


@pytest.mark.parametrize("flag,value", [("--epochs", "0"), ("--epochs", "ten"), ("--lr", "-1"), ("--lr", "nan"),
                                        ("--val-split", "1.5"), ("--batch-size", "0")])
def test_bad_flag_values_exit_2(flag: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train", str(tmp_path), "--out", str(tmp_path / "r"), flag, value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and "Traceback" not in err


def _default_sigint() -> None:
    """In the child before it starts: Ctrl-C handled as in a terminal, even when the suite itself runs as a
    background job (which starts with SIGINT ignored, and a child would inherit that and never stop)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _spawn(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "transferkit.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, preexec_fn=_default_sigint)


def test_errors_in_a_real_process_have_no_traceback(tmp_path: Path) -> None:
    proc = _spawn("predict", str(tmp_path / "no-run"), str(tmp_path))
    _, err = proc.communicate(timeout=120)
    _one_line_error(proc.returncode, err, "no-run")


@pytest.mark.slow
def test_ctrl_c_leaves_the_last_checkpoint_intact(photo_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = _spawn("train", str(photo_data), "--out", str(out), "--strategy", "finetune", "--epochs", "300",
                  "--patience", "300", "--batch-size", "8", "--lr", "1e-4")
    checkpoint = out / CHECKPOINT_FILE
    deadline = time.monotonic() + 240
    try:
        while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert checkpoint.exists(), "no checkpoint was written"
        time.sleep(1.5)  # interrupt in the middle of a later epoch
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:  # a failed check must not leave 300 epochs of training running behind the suite
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130
    assert "interrupted" in err and str(checkpoint) in err and "Traceback" not in err
    bundle = load_bundle(checkpoint)
    model, meta = bundle.model, bundle.meta
    assert model.class_names == ["astronaut", "cat", "coffee"] and meta["history"]
    assert not list(out.glob(".*.tmp"))  # no half-written temporary file left behind


def test_train_from_a_csv_manifest(tmp_path: Path, photo_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = ["path,label,source"] + [f"{p.relative_to(photo_data).as_posix()},{p.parent.name},x"
                                    for p in sorted(photo_data.rglob("*.*"))]
    manifest = photo_data / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    try:
        out = tmp_path / "run"
        code, stdout, _ = _cli(capsys, "train", str(manifest), "--out", str(out), "--strategy", "extract",
                               "--probe-epochs", "5", "--batch-size", "8")
    finally:
        manifest.unlink()
    assert code == 0 and "3 classes, 18 training and 6 validation images" in stdout
    assert json.loads((out / "model.json").read_text())["class_names"] == ["astronaut", "cat", "coffee"]


@pytest.mark.slow
def test_bundled_demo_data_is_small_licensed_and_trains(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from transferkit.data.files import EXAMPLE_DATA

    files = sorted(EXAMPLE_DATA.rglob("*.png"))
    assert len(files) == 600 and sum(f.stat().st_size for f in files) < 3_000_000
    assert len({f.parent.name for f in files}) == 10
    notice = (EXAMPLE_DATA / "README.md").read_text()
    assert "MIT" in notice and "Zalando" in notice
    # The demo's data with the real weights: the probe and one augmented epoch already beat chance by far.
    out = tmp_path / "demo"
    code, stdout, _ = _cli(capsys, "train", str(EXAMPLE_DATA / "train"), "--out", str(out), "--strategy", "frozen",
                           "--epochs", "1", "--test", str(EXAMPLE_DATA / "test"))
    assert code == 0
    test_accuracy = json.loads((out / "model.json").read_text())["metrics"]["test"]["accuracy"]
    assert test_accuracy > 0.65, stdout
    assert "test accuracy" in stdout and f"saved the model to {out}" in stdout


def test_offline_backbone_without_weights_is_one_clear_line(tmp_path: Path) -> None:
    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32), (10, 200, 10)).save(image)
    proc = _spawn("classify", str(image), "--backbone", "ResNet50")  # HF_HUB_OFFLINE=1 from conftest
    _, err = proc.communicate(timeout=120)
    _one_line_error(proc.returncode, err, "resnet50", "internet access", "--weights PATH", "--weights random")
