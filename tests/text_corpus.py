"""A tiny real text corpus for the text tests: short spam and ordinary e-mail lines, written as CSV, JSON Lines or
class folders, with a bad-row corpus (every kind of row that must be skipped, not stop a run) mixed in."""

from __future__ import annotations

import csv
import json
from itertools import zip_longest
from pathlib import Path

SPAM = [
    "WIN a FREE iPhone now!!! Click the link to claim your prize",
    "Cheap meds online, no prescription needed, order today",
    "You have been selected for a $1000 Walmart gift card, reply YES",
    "Make money fast working from home, earn $5000 a week",
    "Congratulations! Your email address won the international lottery",
    "Lose 20 pounds in 10 days with this one weird trick",
    "Hot singles in your area are waiting to chat with you",
    "Limited offer: refinance your mortgage at the lowest rate ever",
    "Your account will be suspended, verify your password here immediately",
    "Buy replica watches and designer bags at 90% off",
    "URGENT: transfer fee needed to release your inheritance of $4.5 million",
    "Act now! Exclusive casino bonus, double your first deposit",
]
HAM = [
    "Can we move tomorrow's meeting to 3pm? I have a dentist appointment",
    "Here are the minutes from Tuesday's project review, comments welcome",
    "The build failed on the release branch, I am looking into the linker error",
    "Thanks for lunch yesterday, let's do it again next week",
    "Please review my pull request when you have a moment",
    "The quarterly report is attached; the numbers for March are final",
    "Mum asked whether you are coming for dinner on Sunday",
    "I pushed a fix for the off-by-one bug in the parser",
    "Our flight lands at 6:40pm, could you pick us up at the airport?",
    "The seminar on graph algorithms has been moved to room 204",
    "Reminder: the library books are due back on Friday",
    "I updated the wiki page with the new deployment steps",
]

# (raw CSV line after the header, why it must be skipped); the header is "text,label"
BAD_CSV_LINES: list[tuple[bytes, str]] = [
    (b'"   ",spam', "empty"),
    (b'"caf\xe9 au lait, bad bytes",ham', "invalid UTF-8"),
    (b'"a text without a label",', "missing label"),
    (b'"one",two,three', "fields"),
    (b'"' + b"x" * (10 * 1024 * 1024) + b'",spam', "characters"),  # a 10 MB line
]


def write_csv(path: Path, bad: bool = False, spam: list[str] | None = None, ham: list[str] | None = None) -> Path:
    """`text,label` rows of the corpus (interleaved), and with `bad` the bad-row corpus after them."""
    pairs = zip_longest([(t, "spam") for t in spam or SPAM], [(t, "ham") for t in ham or HAM])
    rows = [row for pair in pairs for row in pair if row is not None]  # interleaved, as a real export mixes them
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    if bad:
        with path.open("ab") as handle:
            for line, _ in BAD_CSV_LINES:
                handle.write(line + b"\r\n")
    return path


def write_jsonl(path: Path) -> Path:
    lines = [json.dumps({"text": t, "label": "spam"}) for t in SPAM] + [json.dumps({"text": t, "label": "ham"})
                                                                          for t in HAM]
    path.write_text("\n".join([*lines, "not json", json.dumps({"text": "no label here"})]) + "\n", encoding="utf-8")
    return path


def write_folder(root: Path) -> Path:
    for name, texts in (("spam", SPAM), ("ham", HAM)):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, text in enumerate(texts):
            (root / name / f"{i:02d}.txt").write_text(text, encoding="utf-8")
    (root / "ham" / "empty.txt").write_text("  \n", encoding="utf-8")
    (root / "spam" / "latin1.txt").write_bytes("d\xe9j\xe0 vu".encode("latin-1"))
    return root
