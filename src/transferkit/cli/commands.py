"""What each `transferkit` command does, once `main` has parsed and checked its arguments.

Heavy libraries (torch, torchvision, timm, scikit-learn) are imported inside the functions that need them, so
a command that does not need them never pays for them: a fully cached `extract` answers from the cache's
manifest and the files' hashes (`features.cache.up_to_date`) without building the network.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transferkit.cli import text_commands
from transferkit.errors import UserError
from transferkit.training.config import TrainConfig

if TYPE_CHECKING:
    from transferkit.data.files import LabelledFiles
    from transferkit.evaluation.predict import Predictions
    from transferkit.runtime import Runtime

__all__ = ["run"]


def _runtime(workers: int | None = None) -> Runtime:
    """This process's runtime. On a GPU, cuDNN may time its kernels once per input shape and keep the fastest
    (`cudnn.benchmark`), unless deterministic algorithms were asked for (`torch.use_deterministic_algorithms`):
    batches keep one shape, so the timing pays for itself; a GPU run is not bit-reproducible anyway (README)."""
    import torch

    from transferkit.runtime import Runtime

    runtime = Runtime.detect(workers=workers)
    if runtime.device.type == "cuda" and not torch.are_deterministic_algorithms_enabled():
        torch.backends.cudnn.benchmark = True
    return runtime


def _print_skipped(skipped: list[Path]) -> None:
    """One stderr line per file left out, with the reason (the log of evaluate/predict/classify)."""
    from transferkit.data.images import skip_reason

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
    from transferkit.backbones.table import BACKBONES
    from transferkit.backbones.weights import weight_sources, weights_available

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
    from transferkit.backbones.registry import DEFAULT_BACKBONE

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


def _extract(args: argparse.Namespace) -> None:
    """Bring the cache in --out up to date. When the cache records the cheap source key of exactly these settings
    and every file is unchanged, that is known without torch; otherwise the base is built and `extract_features`
    does the work (and the source key is recorded for next time). Under torchrun every process takes the second
    way (each deciding alone whether the cache is up to date, they could part ways), computes a share of the
    images, and rank 0 alone writes and prints."""
    from transferkit.data.files import check_trainable, load_labelled
    from transferkit.data.images import none_readable
    from transferkit.features.cache import record_source_key, up_to_date
    from transferkit.features.source import source_key

    files = load_labelled(args.data)
    check_trainable(files)
    source = source_key(args.backbone, args.weights, args.layer, args.views, seed=args.seed)
    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    cache = None if several else up_to_date(files, args.out, source)
    if cache is None:
        import transferkit.distributed as distributed
        from transferkit.features.extract import extract_features, extract_workers
        from transferkit.model import Backbone

        runtime = _runtime(extract_workers())
        distributed.start(runtime)
        backbone = Backbone.from_pretrained(args.backbone, args.weights, args.layer)
        cache = extract_features(files, backbone, args.out, args.views, seed=args.seed, runtime=runtime,
                                 engine=args.engine)
        built = backbone.weights_info
        same = source is not None and source["weights"] == f"{built.source.split(':')[0]}:{built.sha256}"
        if same and runtime.is_main:
            record_source_key(cache, source)  # the base just built is the one these settings name
        distributed.stop()
        if not runtime.is_main:
            return
    s = cache.stats
    if not cache.paths:
        raise none_readable(len(files.samples), f"images in {args.data}", *cache.skipped[0])
    for path, reason in cache.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    rate = f", {s.images_per_second:.1f} images/s" if s.computed else ""
    print(f"{len(cache.paths)} feature vectors of size {cache.features.shape[1]} in {args.out}: {s.computed} "
          f"computed, {s.reused} reused, {s.removed} dropped, {len(cache.skipped)} unreadable "
          f"({s.seconds:.1f}s{rate}; engine: {s.engine})")


def _lr_find(args: argparse.Namespace, config: TrainConfig) -> None:
    from transferkit.training.lr_find import find_lr

    found = find_lr(args.data, config, args.stage, args.iterations, _runtime())
    if args.plot is not None:
        found.plot(args.plot)
    if args.json:
        print(json.dumps(found.to_json(), indent=2))
        return
    flag = "--lr" if found.stage == "head" else "--fine-tune-lr"
    end = "the loss diverged" if found.diverged else "the last rate"
    print(f"tried {len(found.lrs)} rates from {found.lrs[0]:.1e} to {found.lrs[-1]:.1e} ({end}); "
          f"suggested {flag} {found.suggestion:.2g}" + (f"; curve in {args.plot}" if args.plot else ""))


def _rank(args: argparse.Namespace) -> None:
    from transferkit.data.files import check_trainable, load_labelled
    from transferkit.features.engine import cache_dir
    from transferkit.features.extract import extract_workers
    from transferkit.selection.rank import available_candidates, rank

    files = load_labelled(args.data)
    check_trainable(files)
    names = [n.strip() for n in args.backbones.split(",") if n.strip()] if args.backbones else None
    layers = [n.strip() for n in args.layers.split(",") if n.strip()]
    candidates = available_candidates(names, layers)
    ranked = rank(files, candidates, args.features or cache_dir() / "rank", _runtime(extract_workers()), by=args.by)
    if args.json:
        print(json.dumps({"by": args.by, "ranking": [r.to_json() for r in ranked]}, indent=2))
        return
    print(f"{'backbone/layer':<32} {'logme':>8} {'knn':>6} {'probe':>6} {'dim':>5} {'seconds':>8}")
    for r in ranked:
        s = r.scores
        print(f"{str(r.candidate):<32} {s['logme']:>8.4f} {s['knn']:>6.3f} {s['probe']:>6.3f} {r.feature_dim:>5} "
              f"{sum(r.seconds.values()):>8.1f}")
    print(f"ranked by {args.by} on {r.images} images; best: {ranked[0].candidate} "
          f"(train with --backbone {ranked[0].candidate.backbone} --layer {ranked[0].candidate.layer})")


def _report(run: Path, data: LabelledFiles | Path, out: Path, evaluated_on: str, runtime: Runtime,
            on_validation: bool = False) -> None:
    """Write the HTML report and metrics.json; its warnings also go to the console, where a person looks first."""
    from transferkit.evaluation.html import METRICS_FILE, write_report
    from transferkit.io.bundle import load_bundle

    bundle = load_bundle(run)
    report = write_report(bundle.model, bundle.meta, data, out, evaluated_on, on_validation, runtime)
    for caution in report.cautions:
        print(f"warning: {caution.message}", file=sys.stderr)
    print(f"report: {out} (numbers in {out.parent / METRICS_FILE})")


def _train(args: argparse.Namespace, config: TrainConfig) -> None:
    """Train (under torchrun: every process trains, rank 0 writes the bundle and the report)."""
    import transferkit.distributed as distributed
    from transferkit.training.strategies import train

    runtime = _runtime()
    result = train(args.data, args.out, config, args.test, resume=args.resume, features=args.features,
                   runtime=runtime)
    if args.report and args.test is not None and runtime.is_main:
        _report(args.out, args.test, args.out / "report.html", str(args.test), runtime)
    elif args.report and result.validation is not None and runtime.is_main:
        _report(args.out, result.validation, args.out / "report.html", f"the validation split of {args.data}",
                runtime, on_validation=True)
    distributed.stop()


def _demo(args: argparse.Namespace) -> None:
    from transferkit.data.files import EXAMPLE_DATA
    from transferkit.training.strategies import train

    if args.text:
        text_commands.demo_text(args.out or Path("runs/demo-text"), _runtime())
        return
    args.out = args.out or Path("runs/demo")
    print(f"demo: transfer learning with --strategy auto (the linear probe, then fine-tuning kept only if it "
          f"beats it) on {EXAMPLE_DATA / 'train'} (a 400-image Fashion-MNIST sample)")
    runtime = _runtime()
    train(EXAMPLE_DATA / "train", args.out, TrainConfig(), EXAMPLE_DATA / "test", runtime=runtime)
    _report(args.out, EXAMPLE_DATA / "test", args.out / "report.html", "the bundled Fashion-MNIST test images",
            runtime)
    print(f"try it: transferkit predict {args.out} {EXAMPLE_DATA / 'test' / 'bag'}")


def _evaluate(args: argparse.Namespace) -> None:
    from transferkit.evaluation.metrics import format_metrics
    from transferkit.evaluation.predict import evaluate
    from transferkit.io.bundle import load_bundle

    evaluation = evaluate(load_bundle(args.run).model, args.data, _runtime())
    _print_skipped(evaluation.skipped)
    metrics = evaluation.metrics
    print(json.dumps(metrics.to_json(), indent=2) if args.json else format_metrics(metrics))


def _predict(args: argparse.Namespace) -> None:
    from transferkit.evaluation.predict import expand_image_paths, predict
    from transferkit.io.bundle import load_bundle

    if args.file is not None:
        raise UserError(f"--file is for text models, and {args.run} is an image model: pass the images or folders "
                        f"as arguments")
    if not args.inputs:
        raise UserError("no image to classify: pass image files or folders after the run folder")
    model = load_bundle(args.run).model
    _print_predictions(predict(model, expand_image_paths(args.inputs), args.top, _runtime()), args.json)


def _classify(args: argparse.Namespace) -> None:
    from transferkit.evaluation.predict import classify, expand_image_paths

    _print_predictions(classify(expand_image_paths(args.images), args.backbone, args.top, args.weights, _runtime()),
                       args.json)


def _export(args: argparse.Namespace) -> None:
    from transferkit.inference.export import export_onnx
    from transferkit.io.modality import bundle_modality

    if bundle_modality(args.run) == "text":
        text_commands.export_text(args)
        return
    done = export_onnx(args.run, args.out, args.check, args.int8, args.calibrate)
    print(f"checked against PyTorch (the path `transferkit predict` uses) on {done.checked_on}:")
    for f in done.parity:
        print(f"  batch {f.batch_size}: max |Δprobability| {f.max_difference:.1e}, top-1 agreement "
              f"{100 * f.top1_agreement:.1f}%")
    print(f"wrote {done.path} ({done.size_bytes / 1e6:.1f} MB)")
    q = done.int8
    if q is not None and q.path is None:
        raise UserError(f"int8 not kept: {q.describe()}; the float file {done.path} is written and checked")
    if q is not None:
        print(f"wrote {q.path}: {q.describe()}")


def _check_listen(host: str, port: int) -> None:
    """The address is free to listen on: said in one line now, not as a server error after the model loaded."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(infos[0][4])
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror or exc}): choose another --port or "
                        f"--host") from None


def _serve(args: argparse.Namespace) -> None:
    """Listen at once (/health answers 503 while the model loads); a model that fails to load stops the server
    with its one-line error."""
    _check_listen(args.host, args.port)
    import uvicorn

    from transferkit.serve.app import create_app
    from transferkit.serve.classifier import load_classifier
    from transferkit.serve.settings import ServeSettings

    settings = ServeSettings(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                             max_upload_mb=args.max_upload_mb, max_files=args.max_files, api_key=args.api_key,
                             cors=tuple(args.cors), top=args.top)
    failures: list[BaseException] = []
    servers: list[uvicorn.Server] = []

    def stop(exc: BaseException) -> None:
        failures.append(exc)
        for server in servers:
            server.should_exit = True

    def say(message: str) -> None:
        print(message, flush=True)

    app = create_app(lambda: load_classifier(args.model, args.engine, say), settings, on_load_failed=stop)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning",
                                           access_log=False, server_header=False, lifespan="on",
                                           limit_concurrency=args.max_concurrency))
    servers.append(server)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"serving {args.model} on http://{host}:{args.port} (loading the model; GET /health says when it is "
          f"ready; Ctrl+C stops)", flush=True)
    server.run()
    if failures:
        raise failures[0]


_TEXT_COMMANDS: dict[str, Callable[[argparse.Namespace, Runtime], None] | None] = {
    "train": None,  # takes the checked TrainConfig too
    "extract": text_commands.extract_text, "evaluate": text_commands.evaluate_text,
    "predict": text_commands.predict_text, "report": text_commands.report_text}


def run(args: argparse.Namespace, config: TrainConfig | None) -> int:
    """Run the parsed command (`config`: train's checked options); exit code 0 (errors are exceptions)."""
    if args.modality == "text" and args.command in _TEXT_COMMANDS:
        if args.command == "train":
            assert config is not None
            text_commands.train_text_command(args, config, _runtime())
        else:
            command = _TEXT_COMMANDS[args.command]
            assert command is not None
            command(args, _runtime())
    elif args.command == "train":
        assert config is not None
        _train(args, config)
    elif args.command == "extract":
        _extract(args)
    elif args.command == "demo":
        _demo(args)
    elif args.command == "report":
        _report(args.run, args.data, args.out, str(args.data), _runtime())
    elif args.command == "evaluate":
        _evaluate(args)
    elif args.command == "predict":
        _predict(args)
    elif args.command == "export":
        _export(args)
    elif args.command == "models":
        text_commands.print_encoders(args.json) if args.list_text else _print_models(args.json)
    elif args.command == "classify":
        _classify(args)
    elif args.command == "serve":
        _serve(args)
    elif args.command == "rank":
        _rank(args)
    elif args.command == "lr-find":
        assert config is not None
        _lr_find(args, config)
    return 0
