"""Crash-safe training: a run killed with SIGKILL and resumed ends bit-identical to an uninterrupted one.

`benchmarks/crash.py` does this 20 times at random moments; here once, mid-stage, against the shared
`trained_run` (the same data, seed and options, never interrupted).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors import safe_open

from transferkit.cli.main import main
from transferkit.errors import UserError
from transferkit.io.bundle import WEIGHTS_FILE, load_bundle
from transferkit.training.resume import RESUME_FILE, load_resume
from transferkit.training.run import TrainResult

# The flags that give conftest's TINY_CONFIG.
TINY_FLAGS = ["--strategy", "finetune", "--epochs", "2", "--fine-tune-epochs", "1", "--batch-size", "8", "--val-split",
              "0.25", "--lr", "3e-3"]


def _saved_stage(path: Path) -> tuple[str, int] | None:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})["transferkit.resume"])
    except Exception:  # noqa: BLE001 - not there yet
        return None
    return meta["stage"], meta["progress"]["epoch"]


def _kill_after_first_head_epoch(data: Path, out: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "transferkit.cli", "train", str(data), "--out", str(out),
                             *TINY_FLAGS], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 300
    while _saved_stage(out / RESUME_FILE) != ("head", 1) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read() if proc.stderr else ''}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.slow
def test_killed_run_resumes_to_bit_identical_weights(trained_run: TrainResult, photo_data: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    train = ["train", str(photo_data), "--out", str(out), *TINY_FLAGS]
    _kill_after_first_head_epoch(photo_data, out)
    assert not (out / "model.json").exists()

    code, _, err = _cli(capsys, *train, "--lr", "1e-2", "--resume")
    assert code == 2 and "options differ" in err and "lr 0.003 -> 0.01" in err and len(err.strip().splitlines()) == 1
    with safe_open(str(out / RESUME_FILE), framework="pt") as f:
        saved = json.loads((f.metadata() or {})["transferkit.resume"])
    same_but_two_processes = {"train_config": saved["train_config"], "data_sha256": saved["data_sha256"],
                              "world_size": 2}  # under torchrun the global batch would double
    with pytest.raises(UserError, match=r"had 1 process\(es\), this one has 2"):
        load_resume(out / RESUME_FILE, same_but_two_processes)

    code, stdout, err = _cli(capsys, *train, "--resume")
    assert code == 0, err
    assert "resuming after head epoch 1" in stdout and "head epoch 1:" not in stdout.split("resuming")[1]
    assert (out / WEIGHTS_FILE).read_bytes() == (trained_run.run_dir / WEIGHTS_FILE).read_bytes()
    resumed = json.loads((out / "model.json").read_text())
    original = json.loads((trained_run.run_dir / "model.json").read_text())
    assert resumed["metrics"] == original["metrics"]
    assert [h | {"seconds": 0} for h in resumed["history"]] == [h | {"seconds": 0} for h in original["history"]]
    assert not (out / RESUME_FILE).exists() and not list(out.glob(".*.tmp"))
    load_bundle(out)

    code, _, err = _cli(capsys, *train, "--resume")
    assert code == 2 and "nothing to resume" in err


def test_damaged_resume_state_is_one_clear_line(photo_data: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / RESUME_FILE).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    code, _, err = _cli(capsys, "train", str(photo_data), "--out", str(out), "--strategy", "finetune", "--resume")
    assert code == 2 and "cannot read the resume state" in err and len(err.strip().splitlines()) == 1


def test_batches_depend_on_seed_and_epoch_only() -> None:
    """Epoch 3's order and augmentation are the same whether epochs 1-2 ran in this process or not, and whether
    images are decoded in worker processes or here (a pass of `SMALL_PASS` images, so workers do start)."""
    import torch

    from transferkit.backbones.registry import get_backbone
    from transferkit.data.files import EXAMPLE_DATA, index_folder
    from transferkit.data.loaders import SMALL_PASS, make_train_loader
    from transferkit.data.preprocess import Augmentation
    from transferkit.data.transforms import train_transform

    p = get_backbone("efficientnet_lite0").preprocessing
    samples = index_folder(EXAMPLE_DATA / "train").samples[:SMALL_PASS]

    def epoch_batches(workers: int, skip: int) -> list[torch.Tensor]:
        loader, sampler = make_train_loader(samples, train_transform(p, Augmentation()), p.resize_size, 16, workers,
                                            seed=5)
        assert loader.num_workers == workers
        sampler.epoch = skip
        return [images for images, _ in loader]

    fresh = make_train_loader(samples, train_transform(p, Augmentation()), p.resize_size, 16, 0, seed=5)[0]
    epochs = [[images for images, _ in fresh] for _ in range(3)]
    for resumed in (epoch_batches(0, skip=2), epoch_batches(2, skip=2)):
        assert all(torch.equal(a, b) for a, b in zip(resumed, epochs[2], strict=True))
    assert not torch.equal(epochs[1][0], epochs[2][0])
