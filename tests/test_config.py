"""`TrainConfig` checks every field once, from its metadata, in messages that name the field; the command line's
`train` flags are generated from that metadata, keep their names and name the flag in their errors."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from transferkit.cli.main import flag, main
from transferkit.data.preprocess import Augmentation
from transferkit.errors import UserError
from transferkit.training.config import OPTIONS, ConfigError, TrainConfig

TRAIN_FLAGS = {  # README, tests/test_resume.py (TINY_FLAGS) and users' scripts rely on these names
    "--backbone", "--weights", "--layer", "--input-size", "--strategy", "--views", "--probe-epochs", "--epochs",
    "--fine-tune-epochs", "--unfreeze-blocks", "--lr", "--fine-tune-lr", "--batch-size", "--val-split", "--seed",
    "--class-weights", "--patience", "--hidden", "--dropout", "--pair-epochs",
}


@pytest.mark.parametrize("values,message", [
    ({"epochs": 0}, "epochs must be 1 or more, got 0"),
    ({"strategy": "extract", "probe_epochs": 0}, "probe_epochs must be 1 or more with strategy 'extract'"),
    ({"probe_epochs": -1}, "probe_epochs must be 0 or more, got -1"),
    ({"strategy": "magic"}, "strategy must be one of extract, frozen, finetune, auto, contrastive, got 'magic'"),
    ({"lr": math.nan}, "lr must be a positive number such as 1e-3, got nan"),
    ({"fine_tune_lr": math.inf}, "fine_tune_lr must be a positive number such as 1e-4, got inf"),
    ({"val_split": 1.0}, "val_split must be between 0 and 1"),
    ({"unfreeze_blocks": -1}, "unfreeze_blocks must be 0 or more, or all"),
    ({"batch_size": True}, "batch_size must be 1 or more, got True"),
    ({"seed": -1}, "seed must be 0 or more, got -1"),
    ({"dropout": 1.0}, "dropout must be in [0, 1), got 1.0"),
    ({"weight_decay": -0.1}, "weight_decay must be 0 or more, got -0.1"),
    ({"label_smoothing": 1.5}, "label_smoothing must be in [0, 1), got 1.5"),
    ({"augmentation": {"min_scale": 0.5}}, "augmentation must be an Augmentation"),
])
def test_every_field_is_checked_and_the_message_names_it(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        TrainConfig(**values)  # type: ignore[arg-type]
    assert str(caught.value).startswith(message) and "--" not in str(caught.value), str(caught.value)
    assert isinstance(caught.value, UserError)


def test_every_field_has_an_option_and_the_defaults_pass_their_own_checks() -> None:
    assert list(OPTIONS) == [f.name for f in dataclasses.fields(TrainConfig)]
    config = TrainConfig()
    assert all(OPTIONS[name].help and OPTIONS[name].valid(getattr(config, name)) for name in OPTIONS)
    assert TrainConfig.from_json(config.to_json()) == config
    assert TrainConfig(unfreeze_blocks=None, augmentation=Augmentation(hflip=False)).unfreeze_blocks is None


def test_train_flags_are_generated_from_the_fields_with_their_old_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert {flag(name) for name, opt in OPTIONS.items() if opt.flag} == TRAIN_FLAGS
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    usage = capsys.readouterr().out
    for name in TRAIN_FLAGS | {"--out", "--resume", "--features", "--test", "--report"}:
        assert f"[{name}" in usage or f" {name} " in usage, name
    for hidden in ("--augmentation", "--train-bn", "--label-smoothing", "--weight-decay", "--warmup-epochs",
                   "--lr-spread"):
        assert hidden not in usage


@pytest.mark.parametrize("argv,expected", [
    (["--epochs", "0"], "argument --epochs: must be 1 or more, got 0"),
    (["--epochs", "1.5"], "argument --epochs: expected a whole number, got '1.5'"),
    (["--lr", "inf"], "argument --lr: must be a positive number such as 1e-3, got inf"),
    (["--strategy", "extract", "--probe-epochs", "0"], "argument --probe-epochs: must be 1 or more with strategy"),
    (["--unfreeze-blocks", "-1"], "argument --unfreeze-blocks: must be 0 or more, or all"),
    (["--seed", "-3"], "argument --seed: must be 0 or more, got -3"),
])
def test_a_bad_flag_is_one_line_naming_the_flag_and_the_value(argv: list[str], expected: str, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["train", str(tmp_path / "not-even-there"), "--out", str(tmp_path / "r"), *argv])
    assert caught.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("transferkit train: error: " + expected), lines


def test_flags_shared_with_extract_are_checked_by_the_same_metadata(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["extract", str(tmp_path), "--out", str(tmp_path / "f"), "--views", "-1"])
    assert caught.value.code == 2
    assert "transferkit extract: error: argument --views: must be 0 or more, got -1" in capsys.readouterr().err


def test_unfreeze_all_reads_as_none(tmp_path: Path) -> None:
    from transferkit.cli.main import _checked_options, _parser

    parser, commands = _parser()
    args = parser.parse_args(["train", str(tmp_path), "--out", str(tmp_path), "--unfreeze-blocks", "ALL",
                              "--class-weights", "--lr", "3e-4"])
    config = _checked_options(args, commands["train"])
    assert config is not None and config.unfreeze_blocks is None and config.class_weights and config.lr == 3e-4
