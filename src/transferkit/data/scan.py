"""Decode every file once before training and set aside what cannot be used: unreadable files, paths listed
twice, and copies of one picture (kept once; a copy in another class is a leak between classes)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from transferkit.data.files import LabelledFiles
from transferkit.data.images import BadImage, load_image
from transferkit.data.repeats import copy_reasons, duplicate_reasons
from transferkit.errors import UserError

__all__ = ["scan_images"]

_SCAN_BATCH_SIZE = 16


class _DecodeCheck(Dataset):
    """Decodes one file per item and reports ("" = fine); a Dataset so DataLoader workers can share the work."""

    def __init__(self, paths: Sequence[Path], min_size: int | None) -> None:
        self.paths = list(paths)
        self.min_size = min_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, str, str]:
        """(index, why it is unusable or "", sha256 of its bytes: how copies of one file are found)."""
        try:
            load_image(self.paths[index], self.min_size)
            digest = hashlib.sha256(self.paths[index].read_bytes()).hexdigest()
        except BadImage as exc:
            return index, exc.reason, ""
        except OSError as exc:  # changed between the decode and the read: unusable all the same
            return index, f"cannot read ({exc.strerror})", ""
        return index, "", digest


def _collate_lists(batch: list[tuple[int, str, str]]) -> tuple[list[int], list[str], list[str]]:
    return [item[0] for item in batch], [item[1] for item in batch], [item[2] for item in batch]


def scan_images(
    files: LabelledFiles, num_workers: int, min_size: int | None = None
) -> tuple[LabelledFiles, list[tuple[Path, str]]]:
    """Decode every file once, up front, and split the usable ones from (path, reason) for the rest.

    Catching bad files here, before training, turns a crash at epoch 7 into one report at startup.
    The classes tuple is kept even when a class loses every image, so label indices never shift.
    """
    if num_workers < 0:
        raise UserError(f"number of workers must be 0 or more, got {num_workers} — use 0 to decode in-process")
    reasons: dict[int, str] = duplicate_reasons(files)
    to_check = [i for i in range(len(files.samples)) if i not in reasons]
    loader = DataLoader(
        _DecodeCheck([files.samples[i].path for i in to_check], min_size),
        batch_size=_SCAN_BATCH_SIZE,
        num_workers=num_workers,
        collate_fn=_collate_lists,
    )
    digests: dict[int, str] = {}
    for positions, batch_reasons, batch_digests in tqdm(loader, desc="checking images", unit="batch", leave=False,
                                                        disable=None):
        for position, reason, digest in zip(positions, batch_reasons, batch_digests):
            if reason:
                reasons[to_check[position]] = reason
            else:
                digests[to_check[position]] = digest
    reasons |= copy_reasons(files, digests)
    good = [i for i in range(len(files.samples)) if i not in reasons]
    bad = [(files.samples[i].path, reasons[i]) for i in sorted(reasons)]
    return files.subset(good), bad
