"""How training cost changes with processes: one process against `torchrun --nproc-per-node N` on this machine.

Both train the same recipe on the same data with the same global batch (`--batch-size B` in one process,
`B / N` per process under torchrun); the script prints each run's wall time (process start to bundle) and the
training time the bundle records, the ratios (N processes / 1), and whether the weights agree within 1e-5.
On a CPU every process gets cores / N threads, so the ratio shows the overhead of gradient all-reduce over gloo
more than a speed-up; on a machine with N GPUs the same command measures data-parallel scaling.

With `--extract` it times `transferkit extract` instead: one process against N sharing the images, each into
an empty cache folder (the engine is exported once beforehand, so neither pays for that), and checks that the
two caches hold the same rows in the same order, their features within 1e-5.

    python benchmarks/scale.py [--processes 2] [--data DIR] [--batch-size 16] [--epochs 2]
    python benchmarks/scale.py --extract [--processes 2] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from safetensors.torch import load_file

from transferkit.data.files import EXAMPLE_DATA


def _train(command: list[str], threads: int) -> tuple[float, float]:
    """Wall seconds and the bundle's recorded training seconds of one `train` command."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    out = Path(command[command.index("--out") + 1])
    return wall, float(json.loads((out / "model.json").read_text())["seconds"])


def _wall(command: list[str], threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def extract(data: Path, n: int) -> None:
    """`transferkit extract` in 1 process and in `n` under torchrun: wall times, their ratio, and agreement."""
    cores = os.cpu_count() or 1
    cli = [sys.executable, "-m", "transferkit.cli", "extract", str(data)]
    with tempfile.TemporaryDirectory() as tmp:
        _wall([*cli, "--out", str(Path(tmp) / "warm")], cores)  # exports the engine once (cached on disk)
        one_out, many_out = Path(tmp) / "one", Path(tmp) / "many"
        one = _wall([*cli, "--out", str(one_out)], cores)
        many = _wall([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n),
                      "-m", "transferkit.cli", "extract", str(data), "--out", str(many_out)], max(1, cores // n))
        manifests = [json.loads((d / "manifest.json").read_text()) for d in (one_out, many_out)]
        same_rows = manifests[0]["files"] == manifests[1]["files"] and manifests[0]["bad"] == manifests[1]["bad"]
        diff = float(np.abs(np.load(one_out / "features.npy") - np.load(many_out / "features.npy")).max())
        rows = len(manifests[0]["files"])
    print(f"extract {rows} images: 1 process {one:.1f} s wall; {n} processes {many:.1f} s wall; ratio ({n} / 1) "
          f"{many / one:.2f}; same rows in the same order: {same_rows}; largest feature difference {diff:.1e}")
    print(json.dumps({"command": "extract", "processes": n, "cores": cores, "images": rows,
                      "one_wall_s": round(one, 1), "many_wall_s": round(many, 1), "wall_ratio": round(many / one, 2),
                      "same_rows": same_rows, "max_feature_diff": diff}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--data", type=Path, default=EXAMPLE_DATA / "train")
    parser.add_argument("--batch-size", type=int, default=16, help="the global batch")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--extract", action="store_true", help="time `transferkit extract` instead of train")
    args = parser.parse_args()
    if args.extract:
        extract(args.data, args.processes)
        return
    n, cores = args.processes, os.cpu_count() or 1
    recipe = ["--strategy", "finetune", "--epochs", str(args.epochs), "--fine-tune-epochs", str(args.epochs),
              "--probe-epochs", "0", "--dropout", "0", "--patience", str(2 * args.epochs)]
    with tempfile.TemporaryDirectory() as tmp:
        one_out, many_out = Path(tmp) / "one", Path(tmp) / "many"
        one = _train([sys.executable, "-m", "transferkit.cli", "train", str(args.data), "--out", str(one_out),
                      "--batch-size", str(args.batch_size), *recipe], cores)
        many = _train([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n),
                       "-m", "transferkit.cli", "train", str(args.data), "--out", str(many_out),
                       "--batch-size", str(args.batch_size // n), *recipe], max(1, cores // n))
        a, b = load_file(one_out / "model.safetensors"), load_file(many_out / "model.safetensors")
        diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    print(f"1 process: {one[0]:.1f} s wall, {one[1]:.1f} s in train; {n} processes: {many[0]:.1f} s wall, "
          f"{many[1]:.1f} s in train; ratio ({n} / 1) wall {many[0] / one[0]:.2f}, train {many[1] / one[1]:.2f}; "
          f"largest weight difference {diff:.1e}")
    print(json.dumps({"processes": n, "cores": cores, "one_wall_s": round(one[0], 1), "one_train_s": one[1],
                      "many_wall_s": round(many[0], 1), "many_train_s": many[1],
                      "wall_ratio": round(many[0] / one[0], 2), "train_ratio": round(many[1] / one[1], 2),
                      "max_weight_diff": diff}))


if __name__ == "__main__":
    main()
