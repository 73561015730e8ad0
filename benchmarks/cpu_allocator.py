"""Training-step throughput on the CPU before and after `keep_freed_memory()`, in one process.

Runs forward+backward of EfficientNet-Lite0 (top 2 blocks unfrozen, micro-batches of 8) for a fixed time
with glibc's default allocator settings, then again after raising its mmap/trim thresholds, and prints the
ratio and the kernel (system) CPU time of each phase. Ends with one JSON line.

    python benchmarks/cpu_allocator.py [--seconds 15]
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from transferkit.cli.allocator import keep_freed_memory
from transferkit.model import TransferModel


def measure(model: TransferModel, seconds: float) -> dict[str, float]:
    x = torch.randn(16, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (16,))
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> None:
        for xs, ys in zip(x.split(8), y.split(8)):
            (loss_fn(model(xs), ys) * len(ys) / len(y)).backward()

    step()
    before, start, images = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        step()
        images += len(y)
    after, elapsed = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - start
    return {"images_per_s": images / elapsed, "user_s": after.ru_utime - before.ru_utime,
            "system_s": after.ru_stime - before.ru_stime}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    model = TransferModel.from_pretrained("efficientnet_lite0", [str(i) for i in range(10)])
    model.to(memory_format=torch.channels_last)
    model.unfreeze_top(2)
    model.train()
    baseline = measure(model, args.seconds)
    applied = keep_freed_memory()
    tuned = measure(model, args.seconds)
    for name, m in (("glibc defaults", baseline), ("keep_freed_memory", tuned)):
        print(f"{name:<20} {m['images_per_s']:6.1f} img/s   user {m['user_s']:5.1f}s   system {m['system_s']:5.1f}s")
    print(json.dumps({"benchmark": "cpu_allocator", "applied": applied, "threads": torch.get_num_threads(),
                      "baseline": baseline, "tuned": tuned,
                      "ratio": round(tuned["images_per_s"] / baseline["images_per_s"], 2)}))


if __name__ == "__main__":
    main()
