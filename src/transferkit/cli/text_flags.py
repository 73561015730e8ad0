"""The flags of the commands that read texts, and the one choice between the image and the text path: the
modality, from `--modality`, the data (a CSV's header, a folder listing) or the saved model's JSON. No heavy
import."""

from __future__ import annotations

import argparse

from transferkit.cli.flags import add_flags, flag
from transferkit.io.modality import bundle_modality
from transferkit.text.config import MODALITIES, TEXT_OPTIONS, TextConfig, check_text_field
from transferkit.text.data import detect_modality
from transferkit.training.config import ConfigError, TrainConfig, shown

__all__ = ["IMAGE_ONLY", "TEXT_FIELDS", "add_text_flags", "resolve_modality", "text_options"]

# the `TextConfig` flags of each command that reads texts (a trained model knows its encoder and window)
TEXT_FIELDS = {"train": tuple(TEXT_OPTIONS), "extract": tuple(TEXT_OPTIONS),
               "evaluate": ("text_column", "label_column", "replace_invalid_utf8"),
               "report": ("text_column", "label_column", "replace_invalid_utf8"),
               "predict": ("text_column", "replace_invalid_utf8")}
# train/extract flags that mean nothing for texts
IMAGE_ONLY = ("backbone", "weights", "layer", "input_size", "views")


def add_text_flags(p: argparse.ArgumentParser, command: str, modality: bool = True) -> None:
    if modality:
        p.add_argument("--modality", choices=MODALITIES, default="auto",
                       help="auto (default): text for a CSV with a text column, a JSON Lines file or a folder of "
                            ".txt files; images otherwise")
    add_flags(p, TEXT_OPTIONS, TextConfig(), TEXT_FIELDS[command])




def resolve_modality(args: argparse.Namespace) -> str:
    """"image" or "text" for this command: as asked (`--modality`), else told by the data (or by the saved model
    for the commands that read one). Cheap: a CSV's header, a folder listing, a bundle's JSON."""
    if args.command in ("evaluate", "report", "predict"):
        return bundle_modality(args.run)
    if args.command in ("train", "extract"):
        if args.modality != "auto":
            return str(args.modality)
        return detect_modality(args.data, args.text_column)
    return "image"


def text_options(args: argparse.Namespace, command: argparse.ArgumentParser) -> TextConfig | None:
    """The text flags as a `TextConfig` when the command works on texts (each value checked by its field's
    metadata; a value it refuses is argparse's one-line error); image-only flags given for texts, or text flags
    given for images, are refused the same way."""
    names = TEXT_FIELDS.get(args.command, ())
    if args.modality != "text":
        given = [n for n in names if getattr(args, n) != getattr(TextConfig(), n)]
        if given and args.command in ("train", "extract"):
            command.error(f"argument {flag(given[0])}: is for texts, and {args.data} holds images (pass "
                          f"--modality text if it holds texts)")
        return None
    if args.command == "train" and args.resume:
        command.error("argument --resume: is for the image strategies; on texts, run the same command again (its "
                      "embeddings are cached and reused)")
    if args.command in ("train", "extract"):
        for name in IMAGE_ONLY:
            if name in vars(args) and getattr(args, name) != getattr(TrainConfig(), name):
                other = " (choose a text encoder with --encoder)" if name in ("backbone", "weights") else ""
                command.error(f"argument {flag(name)}: is for images, and {args.data} holds texts{other}")
    try:
        for name in names:
            check_text_field(name, getattr(args, name))
    except ConfigError as exc:
        command.error(f"argument {flag(exc.name)}: must be {exc.expected}, got {shown(exc.value)}")
    return TextConfig(**{name: getattr(args, name) for name in names})
