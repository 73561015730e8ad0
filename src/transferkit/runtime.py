"""Where and how tensors run, decided once: device, autocast precision, micro-batch size, decoding workers, and
the process's place in a `torchrun` job (rank, world size, whether it is the one that writes and talks).

A `Runtime` is made once (by the CLI, or `Runtime.detect()` when a Python caller passes none) and handed to
everything that runs a model; nothing else decides where tensors live. Making one changes no process-wide
state: the CLI alone tunes the allocator (`transferkit.cli.allocator`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, replace

import torch
from torch import nn

__all__ = ["Runtime", "default_workers"]

CPU_MICRO_BATCH = 8  # images per forward pass on a CPU: small slices keep activations in cache (1.6-1.9x here)


def default_workers(device_type: str = "cpu") -> int:
    """Decoding processes per training process. Under torchrun the processes on one machine
    (`LOCAL_WORLD_SIZE`) share its cores, so each takes its part of them (at least one). A GPU waits on decoding,
    so there each takes its whole part, up to 8; on a CPU the model needs the cores itself, so at most 4."""
    local_processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    share = max(1, (os.cpu_count() or 1) // local_processes)
    return min(8 if device_type == "cuda" else 4, share)


@dataclass(frozen=True)
class Runtime:
    """The one place that knows the device. `micro_batch` is the most images per forward pass (None: 8 on a CPU,
    the whole batch on a GPU); `workers` decode images beside training (0: in this process)."""

    device: torch.device
    autocast_dtype: torch.dtype | None = None  # None: plain float32
    micro_batch: int | None = None
    workers: int = 0
    rank: int = 0
    world_size: int = 1

    @classmethod
    def detect(cls, device: str | None = None, workers: int | None = None,
               micro_batch: int | None = None) -> Runtime:
        """The runtime for this process: GPU `LOCAL_RANK` when launched by torchrun on a GPU machine, else GPU 0,
        else the CPU; bf16 autocast on a GPU, float32 on a CPU (where bf16 is slower without AMX)."""
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device is None:
            device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
        dev = torch.device(device)
        return cls(device=dev, autocast_dtype=torch.bfloat16 if dev.type == "cuda" else None,
                   micro_batch=micro_batch, workers=default_workers(dev.type) if workers is None else workers,
                   rank=int(os.environ.get("RANK", "0")), world_size=int(os.environ.get("WORLD_SIZE", "1")))

    @property
    def is_main(self) -> bool:
        """Only the main process writes files and talks."""
        return self.rank == 0

    @property
    def pin_memory(self) -> bool:
        return self.device.type == "cuda"

    def with_workers(self, workers: int) -> Runtime:
        return replace(self, workers=workers)

    def micro_batch_size(self, batch_size: int) -> int:
        """Images per forward pass for a batch of `batch_size`."""
        if self.micro_batch is not None:
            return min(self.micro_batch, batch_size)
        return min(CPU_MICRO_BATCH, batch_size) if self.device.type == "cpu" else batch_size

    def autocast(self) -> AbstractContextManager[object]:
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def place(self, module: nn.Module) -> nn.Module:
        """Move a module to the device, in the memory layout convolutions run fastest in."""
        return module.to(self.device).to(memory_format=torch.channels_last)

    def images(self, images: torch.Tensor) -> torch.Tensor:
        return images.to(self.device, memory_format=torch.channels_last, non_blocking=True)

    @contextmanager
    def no_sync(self, model: nn.Module, last: bool) -> Iterator[None]:
        """Gradient accumulation over micro-batches: a DistributedDataParallel model all-reduces its gradients only
        on the last slice of a batch; any other model is left alone."""
        sync_off = getattr(model, "no_sync", None)
        if last or sync_off is None:
            yield
        else:
            with sync_off():
                yield
