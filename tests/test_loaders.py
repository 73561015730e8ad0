"""Decoding workers live for one pass over the data, not as long as the loader object, and a small pass is
decoded without them.

With PyTorch's persistent workers, a loader that ends up in a reference cycle (a Learner holding its loaders,
a callback holding the Learner) is shut down by the cyclic garbage collector, which may close the queue's pipe
before the iterator asks its workers to stop: each worker then waits out a 5 s join timeout. That stalled
unrelated code for tens of seconds at a time (in a grid search, or a test suite).
"""

from __future__ import annotations

import gc
import multiprocessing
import time
from pathlib import Path

from transferkit.backbones.registry import get_backbone
from transferkit.data.files import EXAMPLE_DATA, index_folder
from transferkit.data.loaders import SMALL_PASS, make_loader, make_train_loader
from transferkit.data.preprocess import Augmentation
from transferkit.data.transforms import eval_transform, train_transform


class _Cycle:
    """An owner that refers to itself, as a Learner and its callbacks do."""

    def __init__(self) -> None:
        self.me = self


def test_workers_end_with_the_pass_and_a_dropped_loader_in_a_cycle_is_collected_at_once() -> None:
    p = get_backbone("efficientnet_lite0").preprocessing
    samples = index_folder(EXAMPLE_DATA / "train").samples[:SMALL_PASS]
    before = set(multiprocessing.active_children())
    owner = _Cycle()
    owner.train = make_train_loader(samples, train_transform(p, Augmentation()), p.resize_size, 4, 2, seed=0)[0]
    owner.val = make_loader(samples, eval_transform(p), p.resize_size, 4, 2)
    for loader in (owner.train, owner.val):
        assert loader.num_workers == 2
        assert sum(len(labels) for _, labels in loader) == len(samples)
    assert set(multiprocessing.active_children()) <= before  # the workers ended with their pass

    del owner, loader
    start = time.perf_counter()
    gc.collect()
    assert time.perf_counter() - start < 2.0


def test_a_small_pass_is_decoded_here(photo_data: Path) -> None:
    p = get_backbone("efficientnet_lite0").preprocessing
    samples = index_folder(photo_data).samples
    assert len(samples) < SMALL_PASS
    assert make_loader(samples, eval_transform(p), p.resize_size, 4, 2).num_workers == 0
    assert make_train_loader(samples, eval_transform(p), p.resize_size, 4, 2, seed=0)[0].num_workers == 0
