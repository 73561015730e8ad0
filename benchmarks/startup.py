"""How long the command line takes to answer when it has little to do, in fresh processes on this machine.

Measures, in new subprocesses, several interleaved rounds each (medians): `transferkit --help`, the one-line
error for a missing data folder (`train /missing --out x`, exit 2), and `extract` on a cache that is already up
to date (prepared first, by one full `extract` of DATA), against two baselines taken in the same rounds: the
interpreter alone (`python -c pass`) and importing torch (`python -c "import torch"`). For context it also times
the same cached `extract` through the full path (the source key removed from the manifest, so the network is
built and its hash compared, as before the fast path existed). Ends with one JSON line.

    python benchmarks/startup.py [--rounds 5] [--data DIR]

The CLI runs as `python -m transferkit.cli` (what the `transferkit` script runs, minus its wrapper).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from transferkit.data.files import EXAMPLE_DATA
from transferkit.features.cache import MANIFEST

TARGETS = {"help": 0.5, "missing_folder": 1.0, "cached_extract": 2.5}  # seconds


def timed(argv: list[str], expect_code: int, expect_text: str = "") -> float:
    """Wall-clock seconds of one fresh process; its exit code and output are checked too."""
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != expect_code or expect_text not in proc.stdout + proc.stderr:
        raise SystemExit(f"{argv} gave exit {proc.returncode}, expected {expect_code} and {expect_text!r}:\n"
                         f"{proc.stdout}{proc.stderr}")
    return seconds


def full_path(extract: list[str], cache: Path) -> float:
    """The cached `extract` with the source key removed from the manifest: the network is built and hashed (the
    run records the key again, so the next fast-path round finds it)."""
    manifest = json.loads((cache / MANIFEST).read_text(encoding="utf-8"))
    manifest.pop("source_key", None)
    (cache / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return timed(extract, 0, " 0 computed, ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--data", type=Path, default=EXAMPLE_DATA / "train", help="labelled images to cache")
    args = parser.parse_args()
    python, cli = [sys.executable], [sys.executable, "-m", "transferkit.cli"]
    with tempfile.TemporaryDirectory(prefix="transferkit-startup-") as tmp:
        cache = Path(tmp) / "features"
        extract = [*cli, "extract", str(args.data), "--out", str(cache)]
        print(f"preparing the cache: {' '.join(extract[1:])}", flush=True)
        subprocess.run(extract, check=True, capture_output=True)
        runs = {
            "python": lambda: timed([*python, "-c", "pass"], 0),
            "import_torch": lambda: timed([*python, "-c", "import torch"], 0),
            "help": lambda: timed([*cli, "--help"], 0, "usage: transferkit"),
            "missing_folder": lambda: timed([*cli, "train", str(Path(tmp) / "missing"), "--out", str(Path(tmp) / "x")],
                                            2, "data folder not found"),
            "cached_extract": lambda: timed(extract, 0, " 0 computed, "),
            "cached_extract_full_path": lambda: full_path(extract, cache),
        }
        times: dict[str, list[float]] = {name: [] for name in runs}
        for r in range(args.rounds):
            for name, run in runs.items():
                times[name].append(run())
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{n} {t[-1]:.2f}s" for n, t in times.items()),
                  flush=True)
    median = {name: statistics.median(t) for name, t in times.items()}
    print(f"\nmedians of {args.rounds} rounds, fresh processes (baselines: `python -c pass` {median['python']:.3f}s, "
          f"`python -c \"import torch\"` {median['import_torch']:.2f}s)")
    for name in ("help", "missing_folder", "cached_extract", "cached_extract_full_path"):
        target = TARGETS.get(name)
        verdict = f"target < {target}s: {'met' if median[name] < target else 'NOT met'}" if target else "context"
        print(f"{name:<26} {median[name]:6.2f}s   {median[name] / median['python']:5.1f}x python   "
              f"{median[name] / median['import_torch']:5.2f}x import torch   ({verdict})")
    print(json.dumps({"benchmark": "startup", "rounds": args.rounds, "data": str(args.data),
                      "median_s": {n: round(m, 3) for n, m in median.items()},
                      "ratio_vs_python": {n: round(m / median["python"], 1) for n, m in median.items()},
                      "ratio_vs_import_torch": {n: round(m / median["import_torch"], 3) for n, m in median.items()},
                      "targets_s": TARGETS,
                      "met": {n: median[n] < t for n, t in TARGETS.items()}}))


if __name__ == "__main__":
    main()
