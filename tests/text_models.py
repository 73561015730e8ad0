"""A tiny trained text run (the real MiniLM encoder and a head on the spam/ham corpus) and its exported ONNX file,
made once per test module that asks (about 10 s each on a laptop CPU)."""

from __future__ import annotations

from pathlib import Path

from text_corpus import HAM, write_csv

from transferkit.cli.main import main

LONG = "please read the attached minutes of the meeting " * 60  # far over the 256-token window
CHECK = ["ok", "WIN a FREE iPhone now!!! Click the link", "Can we move tomorrow's meeting to 3pm?", LONG,
         "Cheap meds online, no prescription needed, order today and save", "Thanks for lunch yesterday"]


def train_text_run(root: Path) -> tuple[Path, Path]:
    """(the run folder, its training CSV)."""
    corpus = write_csv(root / "mail.csv", ham=[*HAM, LONG])
    run = root / "run"
    assert main(["train", str(corpus), "--out", str(run), "--probe-epochs", "60", "--val-split", "0.25"]) == 0
    return run, corpus


def write_check_texts(path: Path) -> Path:
    path.write_text("\n".join(CHECK) + "\n", encoding="utf-8")
    return path
