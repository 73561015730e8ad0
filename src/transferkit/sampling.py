"""Training batches whose order and augmentation depend only on (seed, epoch, position), never on history.

A stock DataLoader draws the shuffle order and each worker's augmentation randomness from generators that
advance from epoch to epoch (and, with persistent workers, live inside the worker processes). A run resumed at
epoch 5 would then see different batches from an uninterrupted one. Here the sampler derives epoch e's order
from seed + e, and passes (epoch, index) to the dataset, which seeds the augmentation of that one item from
them. So a resumed run is bit-identical to an uninterrupted one, whatever the number of decoding workers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from transferkit.data import ImageDataset, Sample, collate_skip_bad

__all__ = ["EpochSampler", "SeededItems", "make_train_loader"]

_MIX = 1_000_003  # spreads (seed, epoch, index) over seeds; any odd constant would do


class EpochSampler(Sampler[tuple[int, int]]):
    """A fresh seeded permutation per epoch. `epoch` counts the epochs started so far; a resumed run sets it."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        generator = torch.Generator().manual_seed(self.seed * _MIX + epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        return iter([(epoch, index) for index in order])


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
                      batch_size: int, workers: int, seed: int) -> tuple[DataLoader, EpochSampler]:
    """The shuffled, augmented training loader and its sampler (whose `epoch` a resumed run restores)."""
    sampler = EpochSampler(len(samples), seed)
    loader = DataLoader(SeededItems(ImageDataset(samples, transform, min_size), seed), batch_size=batch_size,
                        sampler=sampler, num_workers=workers, collate_fn=collate_skip_bad,
                        generator=torch.Generator().manual_seed(seed),  # not the global stream dropout uses
                        persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())
    return loader, sampler
