"""What `train`, `extract`, `evaluate` and `predict` do for texts, once `main` has parsed and checked the
arguments and found that the data (or the saved model) is text. The output has the same shape as for images:
the same metrics table and JSON, skipped rows one per line on stderr, and how many texts were truncated.

Heavy libraries are imported inside the functions, as in `commands`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from transferkit.errors import UserError
from transferkit.training.config import TrainConfig

if TYPE_CHECKING:
    from transferkit.runtime import Runtime
    from transferkit.text.config import TextConfig
    from transferkit.text.data import BadRow, LabelledTexts

__all__ = ["EXAMPLE_TEXTS", "demo_text", "evaluate_text", "export_text", "extract_text", "predict_text",
           "print_encoders", "report_text", "train_text_command"]

_SHOWN_CHARS = 80  # of a text, in the plain-text output of predict
EXAMPLE_TEXTS = Path(__file__).resolve().parent.parent / "example_data" / "spam-assassin"  # see its README.md


def _print_bad(bad: Sequence[BadRow], what: str = "row(s)") -> None:
    for row in bad:
        print(f"skipped {row}", file=sys.stderr)
    if bad:
        print(f"skipped {len(bad)} {what} that could not be used; fix or remove them", file=sys.stderr)


def _print_truncated(truncated: int, total: int, max_tokens: int) -> None:
    if truncated:
        print(f"{truncated} of {total} texts were longer than {max_tokens} tokens and were truncated",
              file=sys.stderr)


def train_text_command(args: argparse.Namespace, config: TrainConfig, runtime: Runtime) -> None:
    from transferkit.text.train import train_text

    result = train_text(args.data, args.out, config, args.text_config, args.test, args.features, runtime)
    if args.report and args.test is not None:
        _write_report(args.out, args.test, args.out / "report.html", str(args.test), args.text_config)
    elif args.report:
        _write_report(args.out, result.validation, args.out / "report.html",
                      f"the validation split of {args.data}", args.text_config, on_validation=True)


def report_text(args: argparse.Namespace, runtime: Runtime) -> None:
    _write_report(args.run, args.data, args.out, str(args.data), args.text_config, runtime=runtime)


def _write_report(run: Path, data: LabelledTexts | Path, out: Path, evaluated_on: str, cfg: TextConfig,
                  on_validation: bool = False, runtime: Runtime | None = None) -> None:
    """The HTML report and metrics.json; its warnings also go to the console, where a person looks first."""
    from transferkit.evaluation.html import METRICS_FILE
    from transferkit.text.bundle import load_text_bundle
    from transferkit.text.report import write_text_report

    bundle = load_text_bundle(run)
    model = bundle.model.to(runtime.device) if runtime is not None else bundle.model
    report = write_text_report(model, bundle.meta, data, out, evaluated_on, cfg, on_validation)
    for caution in report.cautions:
        print(f"warning: {caution.message}", file=sys.stderr)
    print(f"report: {out} (numbers in {out.parent / METRICS_FILE})")


def extract_text(args: argparse.Namespace, runtime: Runtime) -> None:
    """Embed every usable text of DATA into the cache in --out (texts already there are reused)."""
    from transferkit.text.cache import embed_cached
    from transferkit.text.data import read_texts
    from transferkit.text.encoder import SentenceEncoder

    cfg = args.text_config
    data = read_texts(args.data, cfg.text_column, cfg.label_column, cfg.replace_invalid_utf8)
    encoder = SentenceEncoder.load(cfg.encoder, cfg.max_tokens)
    encoder.module.to(runtime.device)
    feats = embed_cached(encoder, data, args.out, engine=args.engine)
    _print_bad(data.bad)
    _print_truncated(int(feats.truncated.sum()), len(data), encoder.max_tokens)
    rate = f", {feats.texts_per_second:.1f} texts/s" if feats.computed else ""
    print(f"{len(data)} feature vectors of size {encoder.dim} in {args.out}: {feats.computed} computed, "
          f"{feats.reused} reused, {len(data.bad)} rows skipped ({feats.seconds:.1f}s{rate}; encoder "
          f"{encoder.spec.name}{'; engine: ' + feats.engine if feats.engine else ''})")


def evaluate_text(args: argparse.Namespace, runtime: Runtime) -> None:
    from transferkit.evaluation.metrics import format_metrics
    from transferkit.text.bundle import load_text_bundle
    from transferkit.text.evaluate import evaluate_texts

    model = load_text_bundle(args.run).model.to(runtime.device)
    evaluation = evaluate_texts(model, args.data, args.text_config)
    _print_bad(evaluation.bad)
    _print_truncated(evaluation.truncated, evaluation.metrics.count, model.encoder.max_tokens)
    metrics = evaluation.metrics
    print(json.dumps(metrics.to_json(), indent=2) if args.json else format_metrics(metrics, "texts"))


def _shown(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _SHOWN_CHARS else flat[:_SHOWN_CHARS - 1] + "…"


def predict_text(args: argparse.Namespace, runtime: Runtime) -> None:
    """Texts given as arguments, then the texts of --file; the top classes of each."""
    from transferkit.text.bundle import load_text_bundle
    from transferkit.text.data import read_unlabelled
    from transferkit.text.evaluate import predict_texts

    texts, origins = list(args.inputs), [f"argument {i + 1}" for i in range(len(args.inputs))]
    if args.file is not None:
        cfg = args.text_config
        more, where, bad = read_unlabelled(args.file, cfg.text_column, cfg.replace_invalid_utf8)
        _print_bad(bad, "line(s)")
        texts, origins = texts + more, origins + where
    if not texts:
        raise UserError("no text to classify: pass texts as arguments, or --file FILE (one text per line, or a CSV "
                        "with a text column)")
    model = load_text_bundle(args.run).model.to(runtime.device)
    predictions = predict_texts(model, texts, origins, args.top)
    _, cut = model.encoder.encode_ids(texts)
    _print_truncated(sum(cut), len(texts), model.encoder.max_tokens)
    if args.json:
        print(json.dumps([p.to_json() for p in predictions], indent=2))
        return
    for p in predictions:
        ranked = ", ".join(f"{r['label']} {float(r['probability']):.3f}" for r in p.predictions)
        print(f"{_shown(p.text)}: {ranked}")


def export_text(args: argparse.Namespace) -> None:
    """The text model as one ONNX file (token ids in, probabilities out) and its tokenizer beside it."""
    from transferkit.text.export import export_text_onnx

    done = export_text_onnx(args.run, args.out, args.check)
    print(f"checked against PyTorch (the path `transferkit predict` uses) on {done.checked_on}:")
    for f in done.parity:
        print(f"  batch {f.batch_size}: max |Δprobability| {f.max_difference:.1e}, top-1 agreement "
              f"{100 * f.top1_agreement:.1f}%")
    print(f"wrote {done.path} ({done.size_bytes / 1e6:.1f} MB) and its tokenizer {done.tokenizer}")


def print_encoders(as_json: bool) -> None:
    """The text encoder table: dimension, window, pooling, whether the weights are on this machine, and where
    they come from."""
    from transferkit.text.encoders import DEFAULT_ENCODER, TEXT_ENCODERS
    from transferkit.text.weights import encoder_available

    rows = [{**spec.to_json(), "weights_available": encoder_available(spec)} for spec in TEXT_ENCODERS.values()]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    lines = [("name", "dim", "tokens", "pooling", "normalized", "weights", "weights from")]
    for r in rows:
        name = r["name"] + (" (default)" if r["name"] == DEFAULT_ENCODER else "")
        source = ", ".join([f"package:{r['package']}"] * bool(r["package"]) + [f"hf-hub:{r['hub_id']}"])
        lines.append((name, str(r["dim"]), str(r["max_tokens"]), r["pooling"], "yes" if r["normalize"] else "no",
                      "yes" if r["weights_available"] else "no", source))
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]) - 1)]
    for line in lines:
        print("  ".join([*(cell.ljust(w) for cell, w in zip(line, widths)), line[-1]]))


def demo_text(out: Path, runtime: Runtime) -> None:
    """`demo --text`: the text defaults on the bundled SpamAssassin sample, test accuracy and the HTML report."""
    from transferkit.text.config import TextConfig
    from transferkit.text.train import DEFAULT_TEXT_STRATEGY, train_text

    data, test = EXAMPLE_TEXTS / "emails.csv", EXAMPLE_TEXTS / "test.csv"
    print(f"demo: text classification with a pretrained sentence encoder on {data} (400 e-mails, ham or spam; "
          f"test: 100 more in {test.name})")
    cfg = TrainConfig(strategy=DEFAULT_TEXT_STRATEGY)
    result = train_text(data, out, cfg, TextConfig(), test, runtime=runtime)
    line = f"validation accuracy {result.val_metrics.accuracy:.3f}"
    if result.test_metrics is not None:
        line += f", test accuracy {result.test_metrics.accuracy:.3f}"
    print(f"{line}; the model is in {out}")
    _write_report(out, test, out / "report.html", "the bundled SpamAssassin test e-mails", TextConfig(),
                  runtime=runtime)
    print(f'try it: transferkit predict {out} "You have WON a free cruise, reply now" "Are we still on for lunch?"')
