"""Training configuration: one frozen dataclass, validated once, saved as JSON in every bundle.

Each field describes itself in its metadata (an `Option`): its help text, the values it accepts and how a
command-line string becomes its value. `TrainConfig.__post_init__` checks every field against its `Option`,
and the command line builds the `train` flags from the same metadata (`--fine-tune-lr` for `fine_tune_lr`), so
a flag, its default, its help and its check are written once, here. No torch: the command line imports this
before deciding whether it needs torch at all.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from transferkit.backbones.registry import DEFAULT_BACKBONE
from transferkit.data.preprocess import Augmentation
from transferkit.errors import UserError

__all__ = ["AUTO_BACKBONE", "FINE_TUNE_EPOCHS", "FINE_TUNE_LR", "HEAD_LR_RATIO", "LR_SPREAD", "MIN_INPUT_SIZE",
           "OPTIONS", "STRATEGY_NAMES", "TEXT_ONLY_FIELDS", "UNFREEZE_BLOCKS", "ConfigError", "Option", "TrainConfig",
           "check_field", "number", "option", "refuse_unknown", "shown", "text", "whole", "whole_or_all"]

# The two-stage recipe's constants, stated once: the head learns HEAD_LR_RATIO times faster than the top
# unfrozen block (and the linear probe runs at that multiple of the head rate); rates fall geometrically by
# LR_SPREAD from the top block to the stem.
HEAD_LR_RATIO = 3.0
LR_SPREAD = 10.0
# Stage 2's defaults: the top 4 blocks for up to 8 epochs from 2e-4, the deeper of the two recipes
# benchmarks/quality.py measured (2 blocks, 4 epochs from 1e-4 only tied the probe at 100 images per class).
FINE_TUNE_EPOCHS, UNFREEZE_BLOCKS, FINE_TUNE_LR = 8, 4, 2e-4
MIN_INPUT_SIZE = 32  # pixels: below it the deepest blocks of an ImageNet network see under one pixel

# extract: only the head, trained on features the frozen base computed once (cached); frozen: stage 1 only;
# finetune: stage 1, then stage 2 (the top blocks unfrozen); auto (the default): the probe first, then
# fine-tuning only where it measurably beats it (training/auto.py)
TEXT_ONLY_FIELDS = ("pair_epochs",)  # options only text training reads (the image estimator has no such parameter)
STRATEGY_NAMES = ("extract", "frozen", "finetune", "auto", "contrastive")
AUTO_BACKBONE = "auto"  # --backbone auto: the candidate `transferkit rank` puts first


class ConfigError(UserError):
    """A `TrainConfig` field got a value it does not accept; the message names the field, what it accepts and
    the value received (the command line names the flag instead)."""

    def __init__(self, name: str, value: Any, expected: str) -> None:
        self.name, self.value, self.expected = name, value, expected
        super().__init__(f"{name} must be {expected}, got {shown(value)}")


def shown(value: Any) -> str:
    """A received value as an error message shows it: text quoted, numbers as they are."""
    return repr(value) if isinstance(value, str) else str(value)


# ---- reading a command-line string: the type only (whether the value is in range is the field's check) ----

def whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"expected a number such as 1e-3, got {text!r}") from None


def whole_or_all(text: str) -> int | None:
    """`--unfreeze-blocks all` is None (every block)."""
    return None if text.lower() == "all" else whole(text)


def text(value: str) -> str:
    return value


# ---- what a field accepts ----

def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:  # NaN and infinities are not numbers a training run can use
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _at_least(minimum: int) -> Callable[[Any], bool]:
    return lambda value: _is_int(value) and value >= minimum


def _anything(value: Any) -> bool:
    return True


@dataclass(frozen=True)
class Option:
    """How one `TrainConfig` field is described, checked and read from the command line.

    `valid(value)` says whether the field accepts a value and `expected` says in words what it accepts (the
    error reads "{field} must be {expected}, got {value}"). `parse` turns a command-line string into a value of
    the field's type (raising ValueError with a message when it cannot); None makes the flag an on/off switch.
    `flag=False` keeps the field off the command line (set it from Python or a saved config)."""

    help: str
    valid: Callable[[Any], bool] = _anything
    expected: str = ""
    parse: Callable[[str], Any] | None = text
    metavar: str | None = None
    flag: bool = True


def option(default: Any, help: str, valid: Callable[[Any], bool] = _anything, expected: str = "",
           parse: Callable[[str], Any] | None = text, metavar: str | None = None, flag: bool = True) -> Any:
    """A dataclass field with its `Option` in its metadata."""
    return field(default=default, metadata={"option": Option(help, valid, expected, parse, metavar, flag)})


def _count(default: int, help: str, minimum: int = 0) -> Any:
    """A whole-number field of at least `minimum` (epochs, sizes, seeds)."""
    return option(default, help, _at_least(minimum), f"{minimum} or more", whole)


def _positive(default: float, help: str, example: str, flag: bool = True) -> Any:
    """A finite number above 0 (learning rates and ratios)."""
    return option(default, help, lambda v: _is_number(v) and v > 0, f"a positive number such as {example}",
                  number, flag=flag)


def _fraction(default: float, help: str, expected: str, include_zero: bool = True, flag: bool = True) -> Any:
    """A finite number in [0, 1) (or (0, 1) without `include_zero`)."""
    return option(default, help, lambda v: _is_number(v) and (v >= 0 if include_zero else v > 0) and v < 1,
                  expected, number, flag=flag)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run. Stage 1 trains the head on the frozen base; stage 2 unfreezes
    the top `unfreeze_blocks` blocks (None: all) and retrains with lower, per-block learning rates. The
    `extract` strategy instead trains the head for `probe_epochs` epochs on cached features (and `views`
    augmented views of each training image, computed once)."""

    backbone: str = option(DEFAULT_BACKBONE, "pretrained network, one of `transferkit models`, or auto (the backbone "
                                             "and layer `transferkit rank` puts first for the data)",
                           lambda v: isinstance(v, str) and bool(v), "a backbone name")
    weights: str | None = option(
        None, "weights file (.safetensors or .pth state dict), or 'random' (default: the backbone's pretrained "
              "weights)", lambda v: v is None or (isinstance(v, str) and bool(v)),
        "a weights file, 'random' or None (pretrained)", metavar="PATH|random")
    input_size: int | None = option(
        None, "pixels of the square each image is resized and cropped to (default: the backbone's own, such as "
              "224; auto measures whether a smaller one keeps the accuracy of small source images)",
        lambda v: v is None or _at_least(MIN_INPUT_SIZE)(v), f"{MIN_INPUT_SIZE} or more, or None (the backbone's own)",
        whole, metavar="PIXELS")
    layer: str | None = option(
        None, "features from: deep (default, the whole base), mid, shallow, or a block name (see `transferkit "
              "models --json`)", lambda v: v is None or (isinstance(v, str) and bool(v)),
        "deep, mid, shallow, a block name or None (deep)")
    strategy: str = option(
        "auto", "auto: the linear probe, then (with 10 or more training images in the smallest class) fine-tuning "
                "with a tested augmentation, kept only if better on validation (texts: contrastive up to 64 texts "
                "in the smallest class, else extract); finetune: head, then the top blocks; frozen: the head on "
                "the frozen base, with augmentation; extract: the head on cached features, in seconds; "
                "contrastive (texts only): the encoder tuned on pairs of texts, then the head",
        lambda v: v in STRATEGY_NAMES, f"one of {', '.join(STRATEGY_NAMES)}",
        metavar="{" + ",".join(STRATEGY_NAMES) + "}")
    views: int = _count(0, "augmented views of each image to cache beside the plain one, for the extract "
                              "strategy")
    probe_epochs: int = _count(30, "epochs of the head on frozen features: the warm start of stage 1, or all of "
                                   "training with strategy extract; 0 skips the warm start")
    pair_epochs: int = _count(12, "texts, strategy contrastive: epochs of the contrastive encoder tune, each on "
                                  "fresh pairs (one of the same class, one of another per text)", minimum=1)
    epochs: int = _count(4, "stage 1 (head) epochs at most; early stopping may end it sooner", minimum=1)
    fine_tune_epochs: int = _count(FINE_TUNE_EPOCHS, "stage 2 epochs at most; 0 skips fine-tuning")
    unfreeze_blocks: int | None = option(
        UNFREEZE_BLOCKS, "top blocks of the base to fine-tune in stage 2, or 'all'",
        lambda v: v is None or _at_least(0)(v), "0 or more, or all (None)", whole_or_all, metavar="K|all")
    lr: float = _positive(1e-3, f"head learning rate in stage 1 (the probe uses {HEAD_LR_RATIO:g}x)", "1e-3")
    fine_tune_lr: float = _positive(FINE_TUNE_LR, f"learning rate of the top unfrozen block in stage 2 (the head "
                                                  f"gets {HEAD_LR_RATIO:g}x, lower blocks less)", "1e-4")
    lr_spread: float = _positive(LR_SPREAD, "top block lr / stem lr in stage 2", "10", flag=False)
    batch_size: int = _count(16, "images per optimizer step (under torchrun: per process; the global batch is "
                                 "this x processes)", minimum=1)
    val_split: float = _fraction(0.2, "fraction of the data held out for validation",
                                 "between 0 and 1, such as 0.2", include_zero=False)
    seed: int = _count(0, "random seed: the split, the head's initial weights, batch order, augmentation")
    class_weights: bool = option(False, "weight the loss by inverse class frequency", lambda v: isinstance(v, bool),
                                 "true or false", parse=None)
    patience: int = _count(3, "early-stopping patience in epochs", minimum=1)
    warmup_epochs: float = option(1.0, "epochs of linear warmup at the start of each stage",
                                  lambda v: _is_number(v) and v >= 0, "0 or more", number, flag=False)
    weight_decay: float = option(0.01, "AdamW weight decay", lambda v: _is_number(v) and v >= 0, "0 or more",
                                 number, flag=False)
    label_smoothing: float = _fraction(0.1, "label smoothing of the loss", "in [0, 1)", flag=False)
    hidden: int = option(0, "hidden units in the head (0: none)", _at_least(0), "0 (no hidden layer) or more",
                         whole)
    dropout: float = _fraction(0.2, "dropout before the head's last layer", "in [0, 1)")
    train_bn: bool = option(False, "train the BatchNorm statistics of unfrozen blocks (default: inference mode)",
                            lambda v: isinstance(v, bool), "true or false", parse=None, flag=False)
    augmentation: Augmentation = field(default_factory=Augmentation, metadata={"option": Option(
        "training-time augmentation (random zoom/crop, flip, small rotation)",
        lambda v: isinstance(v, Augmentation), "an Augmentation", flag=False)})

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            check_field(f.name, getattr(self, f.name))
        if self.strategy == "extract" and self.probe_epochs < 1:  # the one rule that spans two fields
            raise ConfigError("probe_epochs", self.probe_epochs,
                              "1 or more with strategy 'extract' (it is how long the head trains)")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainConfig:
        refuse_unknown(cls, data, "training")
        values = dict(data)
        if isinstance(values.get("augmentation"), dict):
            values["augmentation"] = Augmentation(**values["augmentation"])
        return cls(**values)


def refuse_unknown(config: type, data: dict[str, Any], what: str) -> None:
    """A one-line `UserError` naming every key of `data` that is not a field of the dataclass `config`."""
    known = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UserError(f"unknown {what} option(s) {', '.join(unknown)}: known options are "
                        f"{', '.join(sorted(known))}")


OPTIONS: dict[str, Option] = {f.name: f.metadata["option"] for f in dataclasses.fields(TrainConfig)}
"""Each field's `Option`, in field order."""


def check_field(name: str, value: Any) -> None:
    """Raise `ConfigError` unless field `name` accepts `value` (the check `TrainConfig` runs on every field; the
    command line also runs it on the flags of commands that share a field, such as `extract --views`)."""
    opt = OPTIONS[name]
    if not opt.valid(value):
        raise ConfigError(name, value, opt.expected)
