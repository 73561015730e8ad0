"""`transferkit` command line: flags map onto `TrainConfig` and the workflow functions.

Exit codes: 0 ok, 2 bad input (one line on stderr, no traceback), 1 internal error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from transferkit._version import __version__
from transferkit.backbones.registry import DEFAULT_BACKBONE
from transferkit.backbones.table import BACKBONES
from transferkit.backbones.weights import weight_sources, weights_available
from transferkit.cli.allocator import keep_freed_memory
from transferkit.cli.crashlog import report_internal_error
from transferkit.data.files import EXAMPLE_DATA, LabelledFiles, check_trainable, load_labelled
from transferkit.data.images import none_readable, skip_reason
from transferkit.errors import UserError
from transferkit.evaluation.html import METRICS_FILE, write_report
from transferkit.evaluation.metrics import format_metrics
from transferkit.evaluation.predict import Predictions, classify, evaluate, expand_image_paths, predict
from transferkit.features.engine import ENGINES
from transferkit.features.extract import extract_features, extract_workers
from transferkit.io.bundle import CHECKPOINT_FILE, load_bundle
from transferkit.model import Backbone
from transferkit.runtime import Runtime
from transferkit.training.config import STRATEGY_NAMES, TrainConfig
from transferkit.training.strategies import train

__all__ = ["main"]


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, got {value}")
        return value
    return parse


def _float_in(low: float, high: float, include_low: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number such as 1e-3, got {text!r}") from None
        if not ((value >= low if include_low else value > low) and value < high):  # NaN fails too
            interval = f"{'[' if include_low else '('}{low:g}, {high:g})"
            raise argparse.ArgumentTypeError(f"must be in {interval}, got {text}")
        return value
    return parse


_positive_int, _count = _int_at_least(1), _int_at_least(0)
_positive_float, _fraction = _float_in(0.0, float("inf")), _float_in(0.0, 1.0)


def _blocks(text: str) -> int | None:
    return None if text.lower() == "all" else _count(text)


def _add_training_flags(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    p.add_argument("--backbone", default=d.backbone, help=f"pretrained network (default {DEFAULT_BACKBONE})")
    p.add_argument("--weights", default=None, help="weights file (.safetensors or .pth state dict), or 'random'")
    p.add_argument("--layer", default=None,
                   help="features from: deep (default, the whole base), mid, shallow, or a block name "
                        "(see `transferkit models`)")
    p.add_argument("--strategy", choices=STRATEGY_NAMES, default=d.strategy,
                   help="finetune: head, then the top blocks (default); frozen: the head on the frozen base, "
                        "with augmentation; extract: the head on cached features, in seconds")
    p.add_argument("--views", type=_count, default=d.views,
                   help="with --strategy extract: augmented views of each training image, cached once (default 0)")
    p.add_argument("--features", type=Path, default=None,
                   help="with --strategy extract: the feature cache folder (default RUN/features)")
    p.add_argument("--probe-epochs", type=_count, default=d.probe_epochs,
                   help=f"epochs of the head on frozen features: the warm start of stage 1, or all of training "
                        f"with --strategy extract; 0 skips the warm start (default {d.probe_epochs})")
    p.add_argument("--epochs", type=_positive_int, default=d.epochs,
                   help=f"stage 1 (head) epochs at most (default {d.epochs})")
    p.add_argument("--fine-tune-epochs", type=_count, default=d.fine_tune_epochs,
                   help=f"stage 2 epochs at most; 0 skips fine-tuning (default {d.fine_tune_epochs})")
    p.add_argument("--unfreeze-blocks", type=_blocks, default=d.unfreeze_blocks,
                   help=f"top blocks of the base to fine-tune, or 'all' (default {d.unfreeze_blocks})")
    p.add_argument("--lr", type=_positive_float, default=d.lr, help=f"head learning rate (default {d.lr})")
    p.add_argument("--fine-tune-lr", type=_positive_float, default=d.fine_tune_lr,
                   help=f"learning rate of the top unfrozen block in stage 2 (default {d.fine_tune_lr})")
    p.add_argument("--batch-size", type=_positive_int, default=d.batch_size)
    p.add_argument("--val-split", type=_fraction, default=d.val_split, help="validation fraction (default 0.2)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--patience", type=_positive_int, default=d.patience, help="early-stopping patience in epochs")
    p.add_argument("--hidden", type=_count, default=d.hidden, help="hidden units in the head (default: none)")
    p.add_argument("--dropout", type=_float_in(0.0, 1.0, include_low=True), default=d.dropout)
    p.add_argument("--class-weights", action="store_true", help="weight the loss by inverse class frequency")
    p.add_argument("--test", type=Path, default=None, help="labelled test data, evaluated after each stage")
    p.add_argument("--report", action="store_true",
                   help="write RUN/report.html: curves, confusion matrix, mistakes, calibration (on --test data "
                        "when given, else on the validation split)")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, exit 2, like every other bad-input error (argparse would print the whole usage first)."""
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="transferkit", description="Transfer learning from a folder of images.")
    parser.add_argument("--version", action="version", version=f"transferkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a classifier on a class-per-folder directory or a CSV manifest")
    p.add_argument("data", type=Path)
    p.add_argument("--out", type=Path, required=True, help="run folder for the model bundle and log")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in --out from its last complete epoch (same flags and data)")
    _add_training_flags(p)

    p = sub.add_parser("extract", help="run the frozen base once over DATA and cache its pooled features")
    p.add_argument("data", type=Path)
    p.add_argument("--out", type=Path, required=True, help="cache folder (reused and updated by later runs)")
    p.add_argument("--backbone", default=DEFAULT_BACKBONE)
    p.add_argument("--weights", default=None)
    p.add_argument("--layer", default=None, help="deep (default), mid, shallow, or a block name")
    p.add_argument("--views", type=_count, default=0, help="augmented views of each image to cache as well")
    p.add_argument("--seed", type=int, default=0, help="seed of the augmented views")
    p.add_argument("--engine", choices=ENGINES, default="auto",
                   help="auto: ONNX Runtime on a CPU when it matches PyTorch, else PyTorch")

    p = sub.add_parser("evaluate", help="accuracy, F1, per-class figures and confusion matrix on labelled data")
    p.add_argument("run", type=Path)
    p.add_argument("data", type=Path)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("report", help="one HTML file to look at: curves, confusion matrix, worst mistakes, "
                                      "calibration, warnings (and metrics.json beside it)")
    p.add_argument("run", type=Path)
    p.add_argument("data", type=Path)
    p.add_argument("--out", type=Path, required=True, help="the HTML file to write, such as RUN/report.html")

    p = sub.add_parser("predict", help="top-k classes of a trained model for images or folders")
    p.add_argument("run", type=Path)
    p.add_argument("images", type=Path, nargs="+")
    p.add_argument("--top", type=_positive_int, default=3)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("classify", help="ImageNet classes from the pretrained backbone, no training")
    p.add_argument("images", type=Path, nargs="+")
    p.add_argument("--backbone", default=DEFAULT_BACKBONE)
    p.add_argument("--weights", default=None)
    p.add_argument("--top", type=_positive_int, default=5)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("models", help="list the backbones: size, input, where their weights come from")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("demo", help="train on the bundled Fashion-MNIST sample; test accuracy and an HTML report")
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    return parser


def _config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(backbone=args.backbone, weights=args.weights, layer=args.layer, strategy=args.strategy,
                       views=args.views, probe_epochs=args.probe_epochs,
                       epochs=args.epochs,
                       fine_tune_epochs=args.fine_tune_epochs, unfreeze_blocks=args.unfreeze_blocks, lr=args.lr,
                       fine_tune_lr=args.fine_tune_lr, batch_size=args.batch_size, val_split=args.val_split,
                       seed=args.seed, patience=args.patience, hidden=args.hidden, dropout=args.dropout,
                       class_weights=args.class_weights)


def _print_skipped(skipped: list[Path]) -> None:
    """One stderr line per file left out, with the reason (the log of evaluate/predict/classify)."""
    for path in skipped:
        print(f"skipped {path}: {skip_reason(path)}", file=sys.stderr)
    if skipped:
        print(f"skipped {len(skipped)} file(s) that could not be used; fix or remove them", file=sys.stderr)


def _print_predictions(predictions: Predictions, as_json: bool) -> None:
    _print_skipped(predictions.skipped)
    if as_json:
        print(json.dumps(predictions.to_json(), indent=2))
        return
    for p in predictions:
        ranked = ", ".join(f"{r['label']} {float(r['probability']):.3f}" for r in p.predictions)
        print(f"{p.path}: {ranked}")


def _backbone_rows() -> list[dict[str, Any]]:
    return [{
        "name": spec.name,
        "aliases": list(spec.aliases),
        "architecture": spec.architecture,
        "params": spec.params,
        "feature_dim": spec.feature_dim,
        "input_size": spec.preprocessing.input_size,
        "blocks": spec.block_names(),
        "package": spec.packaged_weights.package if spec.packaged_weights else None,
        "hub_id": spec.hub_id,
        "weight_sources": weight_sources(spec),
        "weights_available": weights_available(spec),
    } for spec in BACKBONES]


def _print_models(as_json: bool) -> None:
    rows = _backbone_rows()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    header = ("name", "params", "features", "input", "weights", "aliases", "weights from")
    lines = [header]
    for r in rows:
        name = r["name"] + (" (default)" if r["name"] == DEFAULT_BACKBONE else "")
        available = "yes" if r["weights_available"] else "no"
        lines.append((name, f"{r['params'] / 1e6:.1f}M", str(r["feature_dim"]), str(r["input_size"]), available,
                      ", ".join(r["aliases"]), ", ".join(r["weight_sources"])))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    for line in lines:  # params right-aligned, the last column unpadded
        cells = [cell.rjust(w) if i == 1 else cell.ljust(w) for i, (cell, w) in enumerate(zip(line, widths))]
        print("  ".join([*cells, line[-1]]))


def _extract(args: argparse.Namespace, runtime: Runtime) -> None:
    files = load_labelled(args.data)
    check_trainable(files)
    backbone = Backbone.from_pretrained(args.backbone, args.weights, args.layer)
    cache = extract_features(files, backbone, args.out, args.views, seed=args.seed, runtime=runtime,
                             engine=args.engine)
    s = cache.stats
    if not cache.paths:
        raise none_readable(len(files.samples), f"images in {args.data}", *cache.skipped[0])
    for path, reason in cache.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    rate = f", {s.images_per_second:.1f} images/s" if s.computed else ""
    print(f"{len(cache.paths)} feature vectors of size {cache.features.shape[1]} in {args.out}: {s.computed} "
          f"computed, {s.reused} reused, {s.removed} dropped, {len(cache.skipped)} unreadable "
          f"({s.seconds:.1f}s{rate}; engine: {s.engine})")


def _report(run: Path, data: LabelledFiles | Path, out: Path, evaluated_on: str, on_validation: bool = False) -> None:
    """Write the HTML report and metrics.json; its warnings also go to the console, where a person looks first."""
    bundle = load_bundle(run)
    report = write_report(bundle.model, bundle.meta, data, out, evaluated_on, on_validation)
    for caution in report.cautions:
        print(f"warning: {caution.message}", file=sys.stderr)
    print(f"report: {out} (numbers in {out.parent / METRICS_FILE})")


def _run(args: argparse.Namespace, runtime: Runtime) -> int:
    if args.command == "train":
        result = train(args.data, args.out, _config(args), args.test, resume=args.resume, features=args.features,
                       runtime=runtime)
        if args.report and args.test is not None:
            _report(args.out, args.test, args.out / "report.html", str(args.test))
        elif args.report and result.validation is not None:
            _report(args.out, result.validation, args.out / "report.html", f"the validation split of {args.data}",
                    on_validation=True)
    elif args.command == "extract":
        _extract(args, runtime)
    elif args.command == "demo":
        print(f"demo: two-stage transfer learning on {EXAMPLE_DATA / 'train'} (a 400-image Fashion-MNIST sample)")
        train(EXAMPLE_DATA / "train", args.out, TrainConfig(), EXAMPLE_DATA / "test", runtime=runtime)
        _report(args.out, EXAMPLE_DATA / "test", args.out / "report.html", "the bundled Fashion-MNIST test images")
        print(f"try it: transferkit predict {args.out} {EXAMPLE_DATA / 'test' / 'bag'}")
    elif args.command == "report":
        _report(args.run, args.data, args.out, str(args.data))
    elif args.command == "evaluate":
        evaluation = evaluate(load_bundle(args.run).model, args.data, runtime)
        _print_skipped(evaluation.skipped)
        metrics = evaluation.metrics
        print(json.dumps(metrics.to_json(), indent=2) if args.json else format_metrics(metrics))
    elif args.command == "predict":
        model = load_bundle(args.run).model
        _print_predictions(predict(model, expand_image_paths(args.images), args.top, runtime), args.json)
    elif args.command == "models":
        _print_models(args.json)
    elif args.command == "classify":
        _print_predictions(classify(expand_image_paths(args.images), args.backbone, args.top, args.weights, runtime),
                           args.json)
    return 0


class _Stdout(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stdout` is at the time (tests and callers may swap it)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _console_logging() -> None:
    """The library's INFO lines go to stdout as plain lines (what the user reads); DEBUG details only to the run's
    log file. Only the main process of a multi-process (torchrun) job talks."""
    logger = logging.getLogger("transferkit")
    if any(getattr(h, "transferkit_console", False) for h in logger.handlers):
        return
    handler = _Stdout()
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.setLevel(logging.INFO if int(os.environ.get("RANK", "0")) == 0 else logging.CRITICAL + 1)
    handler.transferkit_console = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.command != "extract":  # extract's engine (ONNX Runtime) has its own allocator
        keep_freed_memory()  # 1.7x faster CPU training and inference with PyTorch here: see cli/allocator.py
    try:
        _console_logging()
        runtime = Runtime.detect(workers=extract_workers() if args.command == "extract" else None)
        return _run(args, runtime)
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
        return report_internal_error(exc, argv)


if __name__ == "__main__":
    sys.exit(main())
