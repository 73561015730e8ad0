"""A tiny trained text run (the real MiniLM encoder, tuned contrastively as the default `auto` strategy does for so
few texts, and a head on the spam/ham corpus), made once per test session (the `tuned_text_run` fixture in conftest.py)
and read by the export and serve tests."""

from __future__ import annotations

from pathlib import Path

from text_corpus import HAM, write_csv

from transferkit.cli.main import main

LONG = "please read the attached minutes of the meeting " * 60  # far over the 256-token window
CHECK = ["ok", "WIN a FREE iPhone now!!! Click the link", "Can we move tomorrow's meeting to 3pm?", LONG,
         "Cheap meds online, no prescription needed, order today and save", "Thanks for lunch yesterday"]


def train_text_run(root: Path) -> tuple[Path, Path]:
    """(the run folder, its training CSV). Two contrastive epochs, not the default twelve: the tests read the bundle
    (a tuned encoder in it, exported and served), not how well the tune went, and each epoch costs seconds."""
    corpus = write_csv(root / "mail.csv", ham=[*HAM, LONG])
    run = root / "run"
    assert main(["train", str(corpus), "--out", str(run), "--probe-epochs", "60", "--val-split", "0.25",
                 "--pair-epochs", "2"]) == 0
    return run, corpus


def write_check_texts(path: Path) -> Path:
    path.write_text("\n".join(CHECK) + "\n", encoding="utf-8")
    return path
