"""Torch datasets and loaders over labelled files: decoded on demand, unreadable files dropped from the batch.

Training batches have an order and augmentation that depend only on (seed, epoch, position), never on history.
A stock DataLoader draws the shuffle order and each worker's augmentation randomness from generators that
advance from epoch to epoch (and, with persistent workers, live inside the worker processes). A run resumed at
epoch 5 would then see different batches from an uninterrupted one. Here the sampler derives epoch e's order
from seed + e, and passes (epoch, index) to the dataset, which seeds the augmentation of that one item from
them. So a resumed run is bit-identical to an uninterrupted one, whatever the number of decoding workers.

Workers live for one pass (`persistent_workers=False`). Persistent workers outlive the pass inside the loader,
and a loader held in a reference cycle (a Learner and its callbacks) is then shut down by the cyclic garbage
collector, which can close the queues before the workers are told to stop: each worker waits out a 5 s join.
Starting two of them costs 40-65 ms a pass here, as much as decoding 30-60 small images, and they only pay when
decoding overlaps a model's step: a small pass (under `SMALL_PASS` images) is decoded in this process
(`benchmarks/loader_workers.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from transferkit.data.files import Sample
from transferkit.data.images import BadImage, load_image

__all__ = ["SMALL_PASS", "EpochSampler", "ImageDataset", "SeededItems", "collate_skip_bad", "make_loader",
           "make_train_loader", "pass_workers"]

_MIX = 1_000_003  # spreads (seed, epoch, index) over seeds; any odd constant would do
SMALL_PASS = 64  # images: below this, starting workers costs about as much as decoding the whole pass here


def pass_workers(images: int, workers: int) -> int:
    """The decoding workers worth starting for a pass over `images` images: none for a small pass."""
    return workers if images >= SMALL_PASS else 0


class ImageDataset(Dataset):
    """Samples decoded on demand; a file that broke after the scan yields None instead of killing training."""

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: Callable[[Image.Image], torch.Tensor],
        min_size: int | None = None,
    ) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.min_size = min_size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | None:
        sample = self.samples[index]
        try:
            image = load_image(sample.path, self.min_size)
        except BadImage:
            return None
        return self.transform(image), sample.label


def collate_skip_bad(batch: list[tuple[torch.Tensor, int] | None]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Stack a batch without its unreadable items; None when nothing usable is left."""
    items = [item for item in batch if item is not None]
    if not items:
        return None
    images = torch.stack([image for image, _ in items])
    labels = torch.tensor([label for _, label in items], dtype=torch.long)
    return images, labels


def make_loader(samples: Sequence[Sample], transform: Callable[[Image.Image], torch.Tensor], min_size: int,
                batch_size: int, workers: int, pin_memory: bool = False) -> DataLoader:
    """Samples in order; decoding and transforms run in `workers` processes (0, or a small pass: here)."""
    return DataLoader(ImageDataset(samples, transform, min_size), batch_size=batch_size,
                      num_workers=pass_workers(len(samples), workers),
                      collate_fn=collate_skip_bad, persistent_workers=False,
                      generator=torch.Generator().manual_seed(0),  # else each pass draws from the global stream
                      pin_memory=pin_memory)


class EpochSampler(Sampler[list[tuple[int, int]]]):
    """Batches of (epoch, index) keys in a fresh seeded permutation per epoch. `epoch` counts the epochs started so
    far; a resumed run sets it.

    With `world_size` processes, `batch_size` is each process's share: global batch k is
    `order[k*B*W:(k+1)*B*W]` and this process (`rank`) takes every W-th key of it. So W processes see, step by
    step, the same images as one process with batches of B*W, and all have the same number of steps (the last
    share may be empty: see `loop.train_one_epoch`)."""

    def __init__(self, size: int, seed: int, batch_size: int, rank: int = 0, world_size: int = 1) -> None:
        self.size, self.seed, self.epoch = size, seed, 0
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size

    def __len__(self) -> int:
        return -(-self.size // (self.batch_size * self.world_size))

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        # A generator, so the epoch is counted when the first batch is drawn: a DataLoader with workers calls
        # iter() twice per pass and drops the first iterator unused.
        epoch, self.epoch = self.epoch, self.epoch + 1
        generator = torch.Generator().manual_seed(self.seed * _MIX + epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        step = self.batch_size * self.world_size
        for start in range(0, self.size, step):
            yield [(epoch, index) for index in order[start:start + step][self.rank::self.world_size]]


class SeededItems(Dataset):
    """`ImageDataset` indexed by (epoch, index): each item's random transform runs under its own seed."""

    def __init__(self, items: ImageDataset, seed: int) -> None:
        self.items, self.seed = items, seed

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int] | None:
        epoch, index = key
        with torch.random.fork_rng(devices=[]):  # the caller's random stream (dropout) is left untouched
            torch.manual_seed((self.seed * _MIX + epoch) * _MIX + index)
            return self.items[index]


def make_train_loader(samples: Sequence[Sample], transform: Callable[[Image.Image], torch.Tensor], min_size: int,
                      batch_size: int, workers: int, seed: int, pin_memory: bool = False, rank: int = 0,
                      world_size: int = 1) -> tuple[DataLoader, EpochSampler]:
    """The shuffled, augmented training loader and its sampler (whose `epoch` a resumed run restores); with
    `world_size` processes, this `rank`'s share of each global batch of `batch_size * world_size`."""
    sampler = EpochSampler(len(samples), seed, batch_size, rank, world_size)
    loader = DataLoader(SeededItems(ImageDataset(samples, transform, min_size), seed), batch_sampler=sampler,
                        num_workers=pass_workers(len(samples) // world_size, workers), collate_fn=collate_skip_bad,
                        generator=torch.Generator().manual_seed(seed),  # not the global stream dropout uses
                        persistent_workers=False, pin_memory=pin_memory)
    return loader, sampler
