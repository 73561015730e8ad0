"""Batched inference over image files: the one place that turns paths into class probabilities."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from transferkit.data import ImageDataset, Sample, collate_skip_bad, image_files_under
from transferkit.errors import UserError
from transferkit.images import IMAGE_EXTENSIONS
from transferkit.preprocess import Preprocessing, eval_transform

__all__ = ["Prediction", "autocast", "default_workers", "expand_image_paths", "infer_files", "make_loader",
           "micro_batch_size", "pick_device", "top_k"]


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device) -> torch.autocast:
    """bf16 autocast on a GPU; plain float32 on the CPU (where bf16 is slower without AMX)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def micro_batch_size(device: torch.device, batch_size: int) -> int:
    """Images per forward pass. CPUs run small slices faster (the activations stay in cache); GPUs want it all."""
    return min(8, batch_size) if device.type == "cpu" else batch_size


def default_workers() -> int:
    """Decode in worker processes, but never more than the cores we have (2 here, more on a workstation)."""
    return min(4, os.cpu_count() or 1)


def make_loader(samples: Sequence[Sample], transform: Callable[[Image.Image], torch.Tensor], min_size: int,
                batch_size: int, workers: int | None) -> DataLoader:
    """Samples in order; decoding and transforms run in `workers` processes (None: `default_workers()`, 0: in
    this process). Shuffled training batches come from `sampling.make_train_loader`."""
    workers = default_workers() if workers is None else workers
    return DataLoader(ImageDataset(samples, transform, min_size), batch_size=batch_size, num_workers=workers,
                      collate_fn=collate_skip_bad, persistent_workers=workers > 0,
                      generator=torch.Generator().manual_seed(0),  # else each pass draws from the global stream
                      pin_memory=torch.cuda.is_available())


def expand_image_paths(inputs: Sequence[Path]) -> list[Path]:
    """Files as given; folders searched recursively for image files (hidden and system files ignored)."""
    paths: list[Path] = []
    for item in inputs:
        if item.is_dir():
            found = image_files_under(item)
            if not found:
                raise UserError(f"no image files in {item}: expected {', '.join(sorted(IMAGE_EXTENSIONS))} files")
            paths.extend(found)
        elif item.exists():
            paths.append(item)
        else:
            raise UserError(f"image not found: {item} — check the path")
    return paths


@torch.inference_mode()
def infer_files(net: nn.Module, preprocessing: Preprocessing, paths: Sequence[Path], batch_size: int = 32,
                workers: int | None = None, softmax: bool = True) -> tuple[np.ndarray, list[int]]:
    """The network's outputs (softmaxed unless `softmax=False`) for every file that decodes, and the indices
    (into `paths`) of those files."""
    device = pick_device()
    net = net.to(device).to(memory_format=torch.channels_last).eval()
    samples = [Sample(Path(p), i) for i, p in enumerate(paths)]
    loader = make_loader(samples, eval_transform(preprocessing), preprocessing.resize_size,
                         micro_batch_size(device, batch_size), workers)
    outputs: list[np.ndarray] = []
    kept: list[int] = []
    for batch in loader:
        if batch is None:
            continue
        images, index = batch
        images = images.to(device, memory_format=torch.channels_last)
        with autocast(device):
            out = net(images).float()
        outputs.append((out.softmax(dim=1) if softmax else out).cpu().numpy())
        kept.extend(index.tolist())
    return (np.concatenate(outputs) if outputs else np.zeros((0, 0), dtype=np.float32)), kept


@dataclass(frozen=True)
class Prediction:
    path: str
    predictions: list[dict[str, float | str]]


def top_k(probs: np.ndarray, names: Sequence[str], k: int) -> list[list[dict[str, float | str]]]:
    """For each row, the k most probable classes as {"label", "probability"}, most probable first."""
    k = min(k, probs.shape[1]) if probs.ndim == 2 else 0
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [[{"label": names[j], "probability": float(row[j])} for j in idx] for row, idx in zip(probs, order)]
