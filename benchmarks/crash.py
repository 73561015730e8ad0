"""Crash-safety check: kill `transferkit train --resume` with SIGKILL at random moments, resume each time, and
compare the finished model with an uninterrupted run of the same data, seed and flags.

    python benchmarks/crash.py --kills 20 --seed 0

After every kill, every file in the run folder is checked: each safetensors file (resume state, best-so-far
checkpoint, model weights) must load completely and a model.json must match the sha256 of its weights. When
a resumed run finishes before the next kill, its result is compared and a new run folder is started, until
`--kills` kills have happened; the last run is then let finish. Exit status 0 when every finished run equals
the uninterrupted one bit for bit (weights, metrics, history except wall-clock seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from safetensors import safe_open

from transferkit.data.files import EXAMPLE_DATA
from transferkit.io.hashing import sha256_file

FLAGS = ["--strategy", "finetune", "--probe-epochs", "5", "--epochs", "2", "--fine-tune-epochs", "2",
         "--batch-size", "8", "--patience", "3", "--val-split", "0.25", "--seed", "0"]


def make_data(root: Path, classes: int, per_class: int) -> Path:
    """A small subset of the bundled Fashion-MNIST sample, so one run takes well under a minute."""
    for folder in sorted(p for p in (EXAMPLE_DATA / "train").iterdir() if p.is_dir())[:classes]:
        (root / folder.name).mkdir(parents=True)
        for image in sorted(folder.glob("*.png"))[:per_class]:
            shutil.copy(image, root / folder.name / image.name)
    return root


def start(data: Path, out: Path, resume: bool) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "transferkit.cli", "train", str(data), "--out", str(out), *FLAGS]
    return subprocess.Popen(args + (["--resume"] if resume else []), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)


def check_files(out: Path) -> list[str]:
    """Problems with what a killed run left: a safetensors file that does not load, a bundle whose JSON does
    not match its weights."""
    problems = []
    for path in sorted(out.glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():
                    f.get_tensor(key)
        except Exception as exc:  # noqa: BLE001 - any failure to load is the finding
            problems.append(f"{path.name}: {exc}")
    meta_path = out / "model.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if sha256_file(out / meta["weights_file"]) != meta["weights_sha256"]:
            problems.append("model.json does not match model.safetensors")
    return problems


def result(out: Path) -> tuple[bytes, dict, list]:
    meta = json.loads((out / "model.json").read_text())
    history = [h | {"seconds": 0} for h in meta["history"]]
    return (out / "model.safetensors").read_bytes(), meta["metrics"], history


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill moments")
    parser.add_argument("--work", type=Path, default=None, help="folder for data and runs (default: a temp dir)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="transferkit-crash-"))
    data = make_data(work / "data", classes=3, per_class=8)
    rng = random.Random(args.seed)

    started = time.perf_counter()
    base = start(data, work / "baseline", resume=False)
    if base.wait() != 0:
        raise SystemExit(f"baseline run failed: {base.stderr.read().decode() if base.stderr else ''}")
    total = time.perf_counter() - started
    expected = result(work / "baseline")
    print(f"uninterrupted run: {total:.1f}s", flush=True)

    kills, rounds, finished, equal, problems = 0, 1, 0, 0, []
    out = work / f"run{rounds}"
    while True:
        proc = start(data, out, resume=True)
        delay = rng.uniform(0.5, 0.6 * total) if kills < args.kills else None
        try:
            code = proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
            found = check_files(out)
            problems += found
            print(f"kill {kills}: after {delay:.1f}s, run folder {'OK' if not found else found}", flush=True)
            continue
        if code != 0:
            raise SystemExit(f"resumed run failed ({code}): {proc.stderr.read().decode() if proc.stderr else ''}")
        finished += 1
        same = result(out) == expected
        equal += same
        print(f"run {rounds} finished: {'identical to' if same else 'DIFFERENT from'} the uninterrupted run",
              flush=True)
        if kills >= args.kills:
            break
        rounds += 1
        out = work / f"run{rounds}"
    print(f"{kills} kills, {finished} finished runs, {equal} identical to the uninterrupted run, "
          f"{len(problems)} damaged files; {time.perf_counter() - started:.0f}s in all")
    return 0 if equal == finished and not problems else 1


if __name__ == "__main__":
    sys.exit(main())
