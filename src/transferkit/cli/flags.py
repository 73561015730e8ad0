"""Command-line flags made from a config dataclass's field metadata (`TrainConfig`, `TextConfig`): `--fine-tune-lr`
for `fine_tune_lr`, with the field's default and help; argparse reads only each value's type, the dataclass
checks its range. No heavy import."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

from transferkit.training.config import Option

__all__ = ["DEFAULT_NOTES", "add_flags", "argparse_type", "flag"]

DEFAULT_NOTES = {  # defaults that depend on the modality
    "strategy": "auto; for texts auto means contrastive when the smallest class has at most 64 training texts, "
                "else extract"}


def flag(name: str) -> str:
    """The command-line flag of a `TrainConfig` field."""
    return "--" + name.replace("_", "-")


def argparse_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """`parse` with its ValueError turned into argparse's one-line "argument --flag: ..." error."""
    def read(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    read.__name__ = parse.__name__  # argparse names the type in some messages
    return read


def add_flags(p: argparse.ArgumentParser, options: dict[str, Option], defaults: Any, names: Sequence[str]) -> None:
    """One flag per field of a config dataclass (`TrainConfig`, `TextConfig`) in `names`. A default that depends
    on the modality (`DEFAULT_NOTES`) is None here and chosen once the modality is known."""
    for name in names:
        opt, default = options[name], getattr(defaults, name)
        if opt.parse is None:  # an on/off switch
            p.add_argument(flag(name), action="store_true", help=opt.help)
            continue
        if name in DEFAULT_NOTES:
            default, help = None, f"{opt.help} (default {DEFAULT_NOTES[name]})"
        else:
            help = opt.help if default is None else f"{opt.help} (default {default})"
        p.add_argument(flag(name), type=argparse_type(opt.parse), default=default, metavar=opt.metavar,
                       help=help)
