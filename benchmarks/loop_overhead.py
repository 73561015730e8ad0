"""What does the one training loop (events, callbacks, micro-batch bookkeeping) cost over a bare PyTorch loop?

The cheapest case, where overhead shows most: the linear probe's 30 passes of a head over 320 cached feature
vectors of size 1280 (600 AdamW steps of batch 16, nothing else to hide the Python around each step). Both
loops do the same steps with the same seeds, alternating rounds; prints the median of each, the ratio
(loop / bare) and one JSON line. The two must end with identical weights (checked).

    python benchmarks/loop_overhead.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn

from transferkit.runtime import Runtime
from transferkit.training.callbacks import EpochLog, ProgressBar
from transferkit.training.features import FeatureBatches, head_optimizer
from transferkit.training.loop import Best, LoopState, Stage, fit
from transferkit.training.schedule import lr_at

PASSES, N, DIM, CLASSES, BATCH, LR = 30, 320, 1280, 10, 16, 3e-3


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(N, DIM, generator=g), torch.randint(0, CLASSES, (N,), generator=g)


def _head() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Dropout(0.2), nn.Linear(DIM, CLASSES))


def with_loop(x: torch.Tensor, y: torch.Tensor) -> tuple[float, nn.Module]:
    head, loss_fn = _head(), nn.CrossEntropyLoss(label_smoothing=0.1)
    stage = Stage("probe", 1, FeatureBatches(x, y, BATCH, 0, PASSES), lambda: (0.0, 0.0),
                  head_optimizer(head, LR, 0.01), {"head": LR}, micro_batch=BATCH, warmup_epochs=1 / PASSES)
    start = time.perf_counter()
    fit(head, stage, loss_fn, Runtime(torch.device("cpu")), Best(), LoopState(), [ProgressBar(), EpochLog()])
    return time.perf_counter() - start, head


def bare(x: torch.Tensor, y: torch.Tensor) -> tuple[float, nn.Module]:
    head, loss_fn = _head(), nn.CrossEntropyLoss(label_smoothing=0.1)
    optimizer = torch.optim.AdamW(head.parameters(), lr=LR, weight_decay=0.01)
    generator = torch.Generator().manual_seed(0)
    steps_per_pass = -(-N // BATCH)
    start, step = time.perf_counter(), 0
    head.train()
    for _ in range(PASSES):
        order = torch.randperm(N, generator=generator)
        for first in range(0, N, BATCH):
            idx = order[first:first + BATCH]
            for group in optimizer.param_groups:
                group["lr"] = LR * lr_at(step, PASSES * steps_per_pass, steps_per_pass)
            loss = loss_fn(head(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
    return time.perf_counter() - start, head


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    x, y = _data()
    loop_times, bare_times = [], []
    for _ in range(args.rounds):
        seconds, ours = with_loop(x, y)
        loop_times.append(seconds)
        seconds, theirs = bare(x, y)
        bare_times.append(seconds)
        assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), theirs.parameters())), "weights differ"
    loop_s, bare_s = statistics.median(loop_times), statistics.median(bare_times)
    print(f"600 head steps: loop {loop_s:.3f}s, bare {bare_s:.3f}s, ratio {loop_s / bare_s:.2f} (same weights)")
    print(json.dumps({"benchmark": "loop_overhead", "loop_s": round(loop_s, 3), "bare_s": round(bare_s, 3),
                      "ratio_loop_vs_bare": round(loop_s / bare_s, 3), "rounds": args.rounds}))


if __name__ == "__main__":
    main()
