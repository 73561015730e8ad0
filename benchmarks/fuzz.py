"""Fuzz the image-loading and CSV-parsing boundaries for a set time (hypothesis; targets in tests/fuzz_targets.py).

    python benchmarks/fuzz.py --minutes 10            # both targets, the time split between them

Exit status 0 when no example broke a property; otherwise hypothesis prints the shrunk failing input.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fuzz_targets import TARGETS, run_for  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--target", choices=sorted(TARGETS), action="append",
                        help="fuzz only this target (repeatable; default: all)")
    args = parser.parse_args()
    targets = args.target or sorted(TARGETS)
    seconds = args.minutes * 60 / len(targets)
    for target in targets:
        start = time.monotonic()
        examples = run_for(target, seconds)
        elapsed = time.monotonic() - start
        print(f"{target}: {examples} examples in {elapsed:.0f}s ({examples / elapsed:.0f}/s), no failure", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
