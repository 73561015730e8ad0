"""`transferkit serve` under load on this machine: latency, throughput and errors at several concurrencies, cold
start, and the raw model alone for comparison.

1. Raw batch-1 latency: the same model on the engine the server uses (on a CPU, ONNX Runtime running the run's
   graph: `load_classifier(run).predict` on one preprocessed picture, median of many calls) in this process, with
   no server running; and preprocessing alone (decode, resize, crop).
2. Cold start: process start of `transferkit serve RUN` to the first 200 from /health (median of a few starts),
   with the run's graph cached (step 1, in this process, made, checked and recorded it).
3. Load: an async httpx client keeps `c` requests in flight (one JPEG per multipart request, the page's way)
   against one server: p50/p95/p99 latency, requests per second, errors (any non-200 or transport failure).

    python benchmarks/serve.py [--run RUN] [--requests 5000] [--concurrency 1 8 32] [--cold-starts 3]

Without --run a small run is trained first on the bundled Fashion-MNIST sample (the weights do not change the
speed). The client shares the machine with the server: on 2 cores it takes a good part of one. Ends with one
JSON line; the targets (2-core CPU) are checked and printed.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from transferkit.cli.allocator import keep_freed_memory

TARGETS = {"errors_at_32": 0, "p50_c1_over_raw": 2.0, "throughput_32_over_1": 2.0, "cold_start_s": 5.0}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _photo_jpeg() -> bytes:
    """A real photo (scikit-image's cat, 451x300) as a JPEG, about 30 KB: a typical small upload."""
    import skimage.data

    buffer = io.BytesIO()
    Image.fromarray(skimage.data.chelsea()).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _small_run(out: Path) -> Path:
    from transferkit.data.files import EXAMPLE_DATA
    from transferkit.training.config import TrainConfig
    from transferkit.training.strategies import train

    train(EXAMPLE_DATA / "train", out, TrainConfig(strategy="frozen", probe_epochs=1, epochs=1, batch_size=32))
    return out


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def raw_latency(run: Path, image: bytes, calls: int) -> dict[str, float]:
    """Median seconds of one picture through the model alone, and of preprocessing alone."""
    from transferkit.serve.classifier import load_classifier

    classifier = load_classifier(run)
    pixels = classifier.preprocess(image)[None]
    for _ in range(5):
        classifier.predict(pixels)
    model, prep = [], []
    for _ in range(calls):
        started = time.perf_counter()
        classifier.predict(pixels)
        model.append(time.perf_counter() - started)
        started = time.perf_counter()
        classifier.preprocess(image)
        prep.append(time.perf_counter() - started)
    return {"batch1_s": statistics.median(model), "preprocess_s": statistics.median(prep)}


def start_server(run: Path, port: int, log: Path) -> tuple[subprocess.Popen[bytes], float]:
    """The server process and its cold start: seconds from launch to the first 200 from /health."""
    started = time.perf_counter()
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "transferkit.cli", "serve", str(run), "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT)
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}; see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc, time.perf_counter() - started
        except httpx.TransportError:
            pass
        time.sleep(0.01)


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def load(base: str, image: bytes, concurrency: int, requests: int) -> dict[str, float]:
    """`requests` POSTs with `concurrency` in flight; latency percentiles (s), requests/s and error count."""
    latencies: list[float] = []
    errors = 0
    remaining = requests
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
        async def worker() -> None:
            nonlocal remaining, errors
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                try:
                    response = await client.post("/predict", files={"file": ("cat.jpg", image, "image/jpeg")})
                    ok = response.status_code == 200 and bool(response.json()[0]["predictions"])
                except (httpx.HTTPError, ValueError, KeyError, IndexError):
                    ok = False
                latencies.append(time.perf_counter() - started)
                errors += not ok

        for _ in range(min(concurrency, 4)):  # warm the connections and the batch sizes
            await client.post("/predict", files={"file": ("cat.jpg", image, "image/jpeg")})
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return {"concurrency": concurrency, "requests": len(latencies), "errors": errors, "seconds": wall,
            "throughput_rps": len(latencies) / wall, "p50_s": _percentile(latencies, 50),
            "p95_s": _percentile(latencies, 95), "p99_s": _percentile(latencies, 99)}


def _batch_sizes(base: str) -> dict[str, float]:
    text = httpx.get(f"{base}/metrics").text
    values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
              if line.startswith(("transferkit_batch_size_sum", "transferkit_batch_size_count",
                                  "transferkit_batch_size_max"))}
    count = values.get("transferkit_batch_size_count", 0.0)
    return {"batches": count, "mean_batch": values.get("transferkit_batch_size_sum", 0.0) / count if count else 0.0,
            "max_batch": values.get("transferkit_batch_size_max", 0.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=None, help="a run folder (default: train a small one first)")
    parser.add_argument("--requests", type=int, default=5000, help="requests at the highest concurrency")
    parser.add_argument("--low-requests", type=int, default=500, help="requests at each lower concurrency")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--cold-starts", type=int, default=3)
    parser.add_argument("--raw-calls", type=int, default=100)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    keep_freed_memory()  # as the CLI (and so the server) does: the raw figure runs under the same allocator
    image = _photo_jpeg()
    with tempfile.TemporaryDirectory(prefix="transferkit-serve-bench-") as tmp:
        run = args.run or _small_run(Path(tmp) / "run")
        raw = raw_latency(run, image, args.raw_calls)
        print(f"raw model, batch 1: {raw['batch1_s'] * 1e3:.1f} ms; preprocessing: {raw['preprocess_s'] * 1e3:.1f} ms",
              flush=True)
        log = Path(tmp) / "server.log"
        colds = []
        for _ in range(args.cold_starts - 1):
            proc, seconds = start_server(run, _free_port(), log)
            colds.append(seconds)
            stop_server(proc)
        port = _free_port()
        proc, seconds = start_server(run, port, log)
        colds.append(seconds)
        print(f"cold start (launch to /health 200): {', '.join(f'{s:.2f}' for s in colds)} s", flush=True)
        base = f"http://127.0.0.1:{port}"
        results = []
        try:
            for c in sorted(args.concurrency):
                n = args.requests if c == max(args.concurrency) else args.low_requests
                before = _batch_sizes(base)
                result = asyncio.run(load(base, image, c, n))
                after = _batch_sizes(base)
                batches = after["batches"] - before["batches"]
                result["mean_batch"] = (after["mean_batch"] * after["batches"] - before["mean_batch"] *
                                        before["batches"]) / batches if batches else 0.0
                results.append(result)
                print(f"c={c:>3}: {result['requests']} requests, {result['errors']} errors, "
                      f"{result['throughput_rps']:.1f} req/s, p50 {result['p50_s'] * 1e3:.1f} ms, "
                      f"p95 {result['p95_s'] * 1e3:.1f} ms, p99 {result['p99_s'] * 1e3:.1f} ms, "
                      f"mean batch {result['mean_batch']:.1f}", flush=True)
        finally:
            stop_server(proc)
    by_c = {r["concurrency"]: r for r in results}
    summary = {"raw": raw, "cold_start_s": colds, "load": results, "cpus": os.cpu_count()}
    checks = {}
    if 1 in by_c:
        checks["p50_c1_over_raw"] = by_c[1]["p50_s"] / raw["batch1_s"]
    if 1 in by_c and 32 in by_c:
        checks["throughput_32_over_1"] = by_c[32]["throughput_rps"] / by_c[1]["throughput_rps"]
    if 32 in by_c:
        checks["errors_at_32"] = by_c[32]["errors"]
    checks["cold_start_s"] = statistics.median(colds)
    for name, value in checks.items():
        target = TARGETS[name]
        ok = value >= target if name == "throughput_32_over_1" else value <= target
        print(f"{name}: {value:.2f} (target {'>=' if name == 'throughput_32_over_1' else '<='} {target}) "
              f"{'met' if ok else 'MISSED'}")
    summary["checks"] = checks
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
