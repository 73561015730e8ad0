"""How texts are read and encoded: one frozen dataclass, checked once, saved in every text bundle and feature cache.

Like `TrainConfig`, each field carries its `Option` (help, check, how a command-line string becomes its value),
and the command line makes the `--encoder`, `--text-column`, `--label-column`, `--max-tokens` and
`--replace-invalid-utf8` flags of train, extract, evaluate, report and predict from it. No torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Any

from transferkit.text.encoders import DEFAULT_ENCODER
from transferkit.training.config import ConfigError, Option, option, refuse_unknown, whole

__all__ = ["DEFAULT_TEXT_STRATEGY", "MODALITIES", "TEXT_OPTIONS", "TextConfig", "check_text_field"]

MODALITIES = ("auto", "image", "text")
DEFAULT_TEXT_STRATEGY = "auto"  # contrastive for few texts per class, else extract (text/train.py)


def _name(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


@dataclass(frozen=True)
class TextConfig:
    """Which encoder embeds the texts, where the texts and labels are in the data, and where a text is cut."""

    encoder: str = option(DEFAULT_ENCODER, "text encoder, one of `transferkit models --text`", _name,
                          "a text encoder name")
    text_column: str = option("text", "the CSV column (or JSON Lines field) holding the text", _name,
                              "a column name")
    label_column: str = option("label", "the CSV column (or JSON Lines field) holding the label", _name,
                               "a column name")
    max_tokens: int | None = option(
        None, "tokens of a text the encoder reads; longer texts are cut (default: the encoder's window, 256 for "
              "all-MiniLM-L6-v2)", lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 2),
        "2 or more", whole, metavar="N")
    replace_invalid_utf8: bool = option(
        False, "read rows with invalid UTF-8 with replacement characters (default: skip and report them)",
        lambda v: isinstance(v, bool), "true or false", parse=None)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            check_text_field(f.name, getattr(self, f.name))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TextConfig:
        refuse_unknown(cls, data, "text")
        return cls(**data)


TEXT_OPTIONS: dict[str, Option] = {f.name: f.metadata["option"] for f in dataclasses.fields(TextConfig)}


def check_text_field(name: str, value: Any) -> None:
    opt = TEXT_OPTIONS[name]
    if not opt.valid(value):
        raise ConfigError(name, value, opt.expected)
