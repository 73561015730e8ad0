"""When are decoding worker processes worth starting, and what did persistent workers cost?

1. One evaluation pass (decode, resize, crop, normalise; no model) over the first n bundled Fashion-MNIST training
   images, in this process (0 workers) and in 2 worker processes started for the pass, alternating rounds; prints
   the medians and the ratio (2 workers / 0 workers). Workers pay once this ratio falls below 1; the loaders
   decode passes under `SMALL_PASS` images here. In training, the model's step dwarfs both (a batch of 16 takes
   seconds on this CPU), so the threshold only decides small passes where the start-up is pure overhead.
2. Three loaders with persistent workers, held in reference cycles as a Learner holds its loaders, after one pass
   each: seconds for `gc.collect()` to free them (the cycle collector closes the queues before the workers are
   told to stop, and each worker waits out a 5 s join), against the same with workers that end with their pass.

    python benchmarks/loader_workers.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time

from torch.utils.data import DataLoader

from transferkit.backbones.registry import get_backbone
from transferkit.data.files import EXAMPLE_DATA, Sample, index_folder
from transferkit.data.loaders import SMALL_PASS, ImageDataset, collate_skip_bad, make_loader
from transferkit.data.transforms import eval_transform

SIZES = (8, 16, 32, 64, 128)


def _pass_seconds(samples: list[Sample], workers: int) -> float:
    p = get_backbone("efficientnet_lite0").preprocessing
    loader = DataLoader(ImageDataset(samples, eval_transform(p), p.resize_size), batch_size=16,
                        num_workers=workers, collate_fn=collate_skip_bad)  # no SMALL_PASS rule: both measured
    start = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - start


class _Owner:
    def __init__(self) -> None:
        self.me = self


def _collect_seconds(samples: list[Sample], persistent: bool) -> float:
    p = get_backbone("efficientnet_lite0").preprocessing
    owners = []
    for _ in range(3):
        owner = _Owner()
        if persistent:
            owner.loader = DataLoader(ImageDataset(samples, eval_transform(p), p.resize_size), batch_size=16,
                                      num_workers=2, collate_fn=collate_skip_bad, persistent_workers=True)
        else:
            owner.loader = make_loader(samples, eval_transform(p), p.resize_size, 16, 2)
        for _ in owner.loader:
            pass
        owners.append(owner)
    del owner
    owners.clear()
    start = time.perf_counter()
    gc.collect()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    samples = index_folder(EXAMPLE_DATA / "train").samples
    rows = {}
    for n in SIZES:
        times: dict[int, list[float]] = {0: [], 2: []}
        for _ in range(args.rounds):
            for workers in (0, 2):
                times[workers].append(_pass_seconds(samples[:n], workers))
        here, workers2 = statistics.median(times[0]), statistics.median(times[2])
        rows[n] = {"in_process_s": round(here, 4), "workers2_s": round(workers2, 4), "ratio": round(workers2 / here, 2)}
        print(f"{n:4d} images: in this process {here * 1000:6.0f} ms, 2 workers {workers2 * 1000:6.0f} ms, "
              f"ratio {workers2 / here:.2f}{'  (decoded here by the loaders)' if n < SMALL_PASS else ''}")
    one_pass = samples[:SMALL_PASS]
    persistent, per_pass = _collect_seconds(one_pass, True), _collect_seconds(one_pass, False)
    print(f"gc.collect() of 3 loaders in reference cycles: persistent workers {persistent:.2f} s, "
          f"workers that end with their pass {per_pass:.2f} s")
    print(json.dumps({"passes": rows, "collect_persistent_s": round(persistent, 2),
                      "collect_per_pass_s": round(per_pass, 2)}))


if __name__ == "__main__":
    main()
