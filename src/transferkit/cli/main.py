"""`transferkit` command line: the parser, the checks at the boundary and the error contract.

Exit codes: 0 ok, 2 bad input (one line on stderr, no traceback), 1 internal error, 130 interrupted.

The `train` flags are generated from `TrainConfig`'s field metadata (`--fine-tune-lr` for `fine_tune_lr`, with
its default and help); argparse only reads each value's type, and `TrainConfig` checks it, once, the error
naming the flag. This module imports no heavy library, so `--help`, a bad flag and a missing data folder answer
at once; the commands (`commands`) import torch and friends inside the functions that need them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from transferkit._version import __version__
from transferkit.cli import commands
from transferkit.cli.allocator import keep_freed_memory
from transferkit.cli.crashlog import report_internal_error
from transferkit.cli.flags import add_flags, argparse_type, flag
from transferkit.cli.text_flags import add_text_flags, resolve_modality, text_options
from transferkit.data.files import check_data_path
from transferkit.errors import UserError
from transferkit.features.source import ENGINES
from transferkit.io.modality import bundle_modality
from transferkit.io.names import CHECKPOINT_FILE
from transferkit.text.config import DEFAULT_TEXT_STRATEGY
from transferkit.text.data import check_text_path
from transferkit.training.config import OPTIONS, ConfigError, TrainConfig, check_field, number, shown, whole

__all__ = ["flag", "main"]

# flags of other commands that mean what train's do: generated and checked from the same field metadata
SHARED_FIELDS = {"extract": ("backbone", "weights", "layer", "views", "seed"), "classify": ("backbone", "weights")}


def _top_k(text: str) -> int:
    value = whole(text)
    if value < 1:
        raise ValueError(f"must be 1 or more, got {value}")
    return value


def _at_least(low: int) -> Callable[[str], int]:
    def at_least(text: str) -> int:
        value = whole(text)
        if value < low:
            raise ValueError(f"must be {low} or more, got {value}")
        return value
    return at_least


def _port(text: str) -> int:
    value = whole(text)
    if not 1 <= value <= 65535:
        raise ValueError(f"must be a port number from 1 to 65535, got {value}")
    return value


def _non_negative(text: str) -> float:
    value = number(text)
    if not 0 <= value < float("inf"):
        raise ValueError(f"must be 0 or more, got {text}")
    return value


def _positive(text: str) -> float:
    value = number(text)
    if not 0 < value < float("inf"):
        raise ValueError(f"must be more than 0, got {text}")
    return value


def _add_serve(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("serve", help="an HTTP API and web page for a trained run or an exported .onnx model")
    p.add_argument("model", type=Path, metavar="RUN_OR_ONNX",
                   help="a run folder of `transferkit train`, its checkpoint.safetensors, or an .onnx file of "
                        "`transferkit export`")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every interface)")
    p.add_argument("--port", type=argparse_type(_port), default=8000, help="(default 8000)")
    p.add_argument("--max-batch", type=argparse_type(_at_least(1)), default=32, metavar="N",
                   help="most images per inference batch (default 32)")
    p.add_argument("--max-wait-ms", type=argparse_type(_non_negative), default=5.0, metavar="MS",
                   help="how long an image waits for others to share its batch (default 5)")
    p.add_argument("--max-upload-mb", type=argparse_type(_positive), default=10.0, metavar="MB",
                   help="largest request body in MiB; larger ones get 413 (default 10)")
    p.add_argument("--max-files", type=argparse_type(_at_least(1)), default=64, metavar="N",
                   help="most images in one request; more get 413 (default 64)")
    p.add_argument("--api-key", default=os.environ.get("TRANSFERKIT_API_KEY") or None, metavar="KEY",
                   help="require this key (X-API-Key or Authorization: Bearer) on every endpoint but /health and "
                        "the page (default: $TRANSFERKIT_API_KEY, else none)")
    p.add_argument("--cors", action="append", default=[], metavar="ORIGIN",
                   help="let pages from ORIGIN call the API (repeatable; default: no CORS)")
    p.add_argument("--top", type=argparse_type(_top_k), default=3, metavar="K",
                   help="classes per image unless a request asks for ?top=K (default 3)")
    p.add_argument("--engine", choices=("auto", "onnx", "torch"), default="auto",
                   help="what runs a run folder: auto (ONNX Runtime on a CPU, its graph made once and cached; "
                        "PyTorch where a GPU is present), onnx, or torch (default auto)")
    p.add_argument("--max-concurrency", type=argparse_type(_at_least(1)), default=256, metavar="N",
                   help="most connections and requests at once; beyond it the server answers 503 at once instead "
                        "of queueing without end (default 256)")


def _iterations(text: str) -> int:
    value = whole(text)
    if not 2 <= value <= 1000:
        raise ValueError(f"must be from 2 to 1000, got {value}")
    return value


def _add_config_flags(p: argparse.ArgumentParser, names: Sequence[str]) -> None:
    """One flag per `TrainConfig` field in `names`, with the field's default and help (its range is checked by
    `TrainConfig`, not here)."""
    add_flags(p, OPTIONS, TrainConfig(), names)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, exit 2, like every other bad-input error (argparse would print the whole usage first)."""
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The parser and each command's own parser (whose `error` names the command)."""
    parser = _Parser(prog="transferkit", description="Transfer learning from a folder of images.")
    parser.add_argument("--version", action="version", version=f"transferkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a classifier on images (a class-per-folder directory or a CSV manifest) "
                                     "or texts (a CSV or JSON Lines file, or folders of .txt files)")
    p.add_argument("data", type=Path)
    p.add_argument("--out", type=Path, required=True, help="run folder for the model bundle and log")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in --out from its last complete epoch (same flags and data)")
    _add_config_flags(p, [name for name, opt in OPTIONS.items() if opt.flag])
    p.add_argument("--features", type=Path, default=None,
                   help="with --strategy extract: the feature cache folder (default RUN/features)")
    p.add_argument("--test", type=Path, default=None, help="labelled test data, evaluated after each stage")
    p.add_argument("--report", action="store_true",
                   help="write RUN/report.html: curves, confusion matrix, mistakes, calibration (on --test data "
                        "when given, else on the validation split)")
    add_text_flags(p, "train")

    p = sub.add_parser("extract", help="run the frozen base (or text encoder) once over DATA and cache its pooled "
                                       "features")
    p.add_argument("data", type=Path)
    p.add_argument("--out", type=Path, required=True, help="cache folder (reused and updated by later runs)")
    _add_config_flags(p, SHARED_FIELDS["extract"])
    add_text_flags(p, "extract")
    p.add_argument("--engine", choices=ENGINES, default="auto",
                   help="auto: ONNX Runtime on a CPU when it matches PyTorch, else PyTorch")

    p = sub.add_parser("lr-find", help="learning-rate range test: the rate to pass as --lr (or --fine-tune-lr) for "
                                       "this data and these options")
    p.add_argument("data", type=Path)
    p.add_argument("--stage", choices=("head", "fine-tune"), default="head",
                   help="head: the frozen base's head (suggests --lr); fine-tune: after the probe, with "
                        "--unfreeze-blocks blocks unfrozen (suggests --fine-tune-lr)")
    p.add_argument("--iterations", type=argparse_type(_iterations), default=100,
                   help="training steps tried, at most (default 100)")
    p.add_argument("--plot", type=Path, default=None, help="write the loss against the rate to this PNG")
    p.add_argument("--json", action="store_true")
    _add_config_flags(p, [name for name, opt in OPTIONS.items() if opt.flag])

    p = sub.add_parser("rank", help="before training: score candidate backbones and layers for DATA from their "
                                    "frozen features (LogME, k-NN, linear probe), best first")
    p.add_argument("data", type=Path)
    p.add_argument("--backbones", default=None, help="comma-separated backbone names (default: every backbone "
                                                     "whose weights are on this machine)")
    p.add_argument("--layers", default="deep,mid,shallow", help="comma-separated: deep, mid, shallow or block names")
    p.add_argument("--by", choices=("logme", "knn", "probe"), default="logme", help="the score that orders the table")
    p.add_argument("--features", type=Path, default=None,
                   help="where the candidates' feature caches are kept (default: the transferkit cache folder)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("evaluate", help="accuracy, F1, per-class figures and confusion matrix on labelled data")
    p.add_argument("run", type=Path)
    p.add_argument("data", type=Path)
    p.add_argument("--json", action="store_true")
    add_text_flags(p, "evaluate", modality=False)

    p = sub.add_parser("report", help="one HTML file to look at: curves, confusion matrix, worst mistakes, "
                                      "calibration, warnings (and metrics.json beside it)")
    p.add_argument("run", type=Path)
    p.add_argument("data", type=Path)
    p.add_argument("--out", type=Path, required=True, help="the HTML file to write, such as RUN/report.html")
    add_text_flags(p, "report", modality=False)

    p = sub.add_parser("predict", help="top-k classes of a trained model for images or folders, or for texts")
    p.add_argument("run", type=Path)
    p.add_argument("inputs", nargs="*", metavar="IMAGE_OR_TEXT",
                   help="image files or folders (an image model), or texts (a text model)")
    p.add_argument("--file", type=Path, default=None,
                   help="a text model: read the texts from this file (one per line, or a CSV/JSON Lines file with "
                        "a text column)")
    p.add_argument("--top", type=argparse_type(_top_k), default=3)
    p.add_argument("--json", action="store_true")
    add_text_flags(p, "predict", modality=False)

    p = sub.add_parser("classify", help="ImageNet classes from the pretrained backbone, no training")
    p.add_argument("images", type=Path, nargs="+")
    _add_config_flags(p, SHARED_FIELDS["classify"])
    p.add_argument("--top", type=argparse_type(_top_k), default=5)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("export", help="the model as one ONNX file (uint8 images, or a text model's token ids, in; "
                                      "probabilities out), checked against PyTorch before it is written")
    p.add_argument("run", type=Path)
    p.add_argument("--out", type=Path, required=True, help="the ONNX file to write, such as model.onnx")
    p.add_argument("--check", type=Path, default=None,
                   help="images to check it on (default: the run's validation images, if they still exist); for "
                        "a text model, a CSV or JSON Lines file or a file of texts, one per line")
    p.add_argument("--int8", action="store_true",
                   help="also write OUT's stem + .int8.onnx, statically quantized, if it agrees with the float file "
                        "on 99%% of the check images and is 1.3x as fast here")
    p.add_argument("--calibrate", type=Path, default=None, help="images to calibrate --int8 on (default: --check's)")

    _add_serve(sub)

    p = sub.add_parser("models", help="list the backbones: size, input, where their weights come from")
    p.add_argument("--json", action="store_true")
    p.add_argument("--text", action="store_true", dest="list_text", help="list the text encoders instead")

    p = sub.add_parser("demo", help="train on the bundled Fashion-MNIST sample (--text: the SpamAssassin e-mail "
                                    "sample); test accuracy and an HTML report")
    p.add_argument("--text", action="store_true", help="the text demo: a sentence encoder on 400 e-mails, ham or spam")
    p.add_argument("--out", type=Path, default=None, help="where the run goes (default: runs/demo, runs/demo-text)")
    return parser, dict(sub.choices)


def _checked_options(args: argparse.Namespace, command: argparse.ArgumentParser) -> TrainConfig | None:
    """`train`'s flags as a `TrainConfig` (None for other commands, whose shared flags are checked alone), every
    value checked by `TrainConfig`'s field metadata; a value it refuses is argparse's one-line error (exit 2)
    naming the flag. A default that depends on the modality (`DEFAULT_NOTES`) is chosen here."""
    try:
        if args.command in ("train", "lr-find"):
            values = {name: getattr(args, name) for name, opt in OPTIONS.items() if opt.flag}
            if values["strategy"] is None:
                values["strategy"] = DEFAULT_TEXT_STRATEGY if args.modality == "text" else TrainConfig().strategy
            return TrainConfig(**values)
        for name in SHARED_FIELDS.get(args.command, ()):
            check_field(name, getattr(args, name))
        return None
    except ConfigError as exc:
        command.error(f"argument {flag(exc.name)}: must be {exc.expected}, got {shown(exc.value)}")


def _check_paths(args: argparse.Namespace) -> None:
    """The labelled data a command reads exists and is a folder or a CSV manifest (images), or a folder, CSV or
    JSON Lines file (texts): said in one line now, before a heavy library is imported."""
    check = check_text_path if args.modality == "text" else check_data_path
    if args.command in ("train", "extract", "evaluate", "report", "rank", "lr-find"):
        check(args.data)
    if args.command == "train" and args.test is not None:
        check(args.test)
    text_model = args.command == "export" and bundle_modality(args.run) == "text"
    for given in (getattr(args, "check", None), getattr(args, "calibrate", None)) if args.command == "export" else ():
        if given is not None and not given.exists():
            raise UserError(f"texts not found: {given} — pass a CSV or JSON Lines file, or a file of texts one per "
                            f"line" if text_model else
                            f"images not found: {given} — pass a folder of images (or one image file)")
    if text_model and (args.int8 or args.calibrate is not None):
        raise UserError(f"{args.run} is a text model: --int8 and --calibrate quantize image models only; drop them")
    if args.command == "serve":
        from transferkit.serve.classifier import check_model_path

        check_model_path(args.model)


class _Stdout(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stdout` is at the time (tests and callers may swap it); warnings to `sys.stderr`, and
    everything to `sys.stderr` while a command's stdout is JSON for another program to read (`to_stderr`)."""

    to_stderr = False
    _warning = False

    def emit(self, record: logging.LogRecord) -> None:
        self._warning = record.levelno >= logging.WARNING
        super().emit(record)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr if self._warning or self.to_stderr else sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _console_logging(json_out: bool) -> None:
    """The library's INFO lines go to stdout as plain lines (what the user reads; stderr when stdout is `--json`);
    DEBUG details only to the run's log file. Only the main process of a multi-process (torchrun) job talks."""
    logger = logging.getLogger("transferkit")
    for h in logger.handlers:
        if isinstance(h, _Stdout):
            h.to_stderr = json_out
            return
    handler = _Stdout()
    handler.to_stderr = json_out
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.setLevel(logging.INFO if int(os.environ.get("RANK", "0")) == 0 else logging.CRITICAL + 1)
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, command_parsers = _parser()
    args = parser.parse_args(argv)
    args.modality = resolve_modality(args)
    args.text_config = text_options(args, command_parsers[args.command])
    config = _checked_options(args, command_parsers[args.command])
    if args.command != "extract":  # extract's engine (ONNX Runtime) has its own allocator
        keep_freed_memory()  # 1.7x faster CPU training and inference with PyTorch here: see cli/allocator.py
    try:
        _console_logging(bool(getattr(args, "json", False)))
        _check_paths(args)
        return commands.run(args, config)
    except UserError as exc:
        print(f"transferkit: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        checkpoint = getattr(args, "out", None) and args.out / CHECKPOINT_FILE
        where = f"; the best model so far is in {checkpoint}" if checkpoint and checkpoint.is_file() else ""
        if args.command == "train":
            where += "; run the same command with --resume to continue"
        print(f"\ntransferkit: interrupted{where}", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not bad input: one line and exit 1, the traceback in a file
        if _peer_failed(exc):
            print(f"transferkit: error: another process of this torchrun job stopped ({str(exc).splitlines()[0]}); "
                  f"with --max-restarts torchrun restarts the job, and train --resume continues from the last "
                  f"epoch", file=sys.stderr)
            return 1
        return report_internal_error(exc, argv)


def _peer_failed(exc: Exception) -> bool:
    """Whether `exc` is torch.distributed telling this process that a peer of its torchrun job went away."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    text = str(exc).lower()
    return isinstance(exc, dist.DistError) or ("gloo" in text or "nccl" in text or "connection reset" in text)


if __name__ == "__main__":
    sys.exit(main())
