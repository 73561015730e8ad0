"""Several processes under `torchrun`: PyTorch's own process group, and the few collective steps transferkit needs.

`torchrun --nproc-per-node N -m transferkit train …` starts N copies of the command with `RANK`, `LOCAL_RANK`
and `WORLD_SIZE` set (`runtime.Runtime.detect` reads them). `start` joins the group (`nccl` on CUDA, `gloo` on a
CPU); everything else here is a no-op in a single process, so callers need no `if distributed:` branches.
Only rank 0 writes files and talks (`Runtime.is_main`); the others compute and wait.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from transferkit.runtime import Runtime

__all__ = ["active", "all_sum", "average_buffers", "barrier", "broadcast", "collect", "gather", "parameters_agree",
           "shard", "start", "stop", "wrap"]

T = TypeVar("T")


def start(runtime: Runtime) -> None:
    """Join the process group of a torchrun job (once; nothing in a single process)."""
    if runtime.world_size <= 1 or dist.is_initialized():
        return
    if runtime.device.type == "cuda":
        torch.cuda.set_device(runtime.device)
    # torchrun's agent keeps its key-value store across restarts (`--max-restarts`): without a prefix of its own,
    # a restarted group would read the addresses its killed predecessors published there, and fail to connect.
    store, rank, world_size = next(dist.rendezvous("env://"))
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    dist.init_process_group("nccl" if runtime.device.type == "cuda" else "gloo",
                            store=dist.PrefixStore(f"transferkit/attempt-{attempt}", store), rank=rank,
                            world_size=world_size)


def stop() -> None:
    """Leave the process group (the end of a command), after every rank got here."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if active():
        dist.barrier()


def shard(items: Sequence[T], runtime: Runtime) -> list[T]:
    """This process's share of `items`: every `world_size`-th one from `rank` (all of them in one process)."""
    return list(items[runtime.rank::runtime.world_size])


def gather(part: Any) -> list[Any]:
    """Every rank's `part`, in rank order, on every rank (`[part]` in one process)."""
    if not active():
        return [part]
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, part)
    return parts


def broadcast(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (what the other ranks pass is ignored; `obj` itself in one process). For a
    decision only rank 0 may take, such as which rows of a cache to compute, so that every rank follows it.
    Every rank must call it, at the same point."""
    if not active():
        return obj
    box: list[Any] = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def collect(part: Any) -> list[Any] | None:
    """Every rank's `part`, in rank order, on rank 0 only (None on the others, `[part]` in one process): results
    that only rank 0 writes, without a copy of all of them in every process."""
    if not active():
        return [part]
    parts: list[Any] | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(part, parts, dst=0)
    return parts


def all_sum(values: Sequence[float], runtime: Runtime) -> list[float]:
    """The sums of `values` over all ranks (the values themselves in one process)."""
    if not active():
        return list(values)
    tensor = torch.tensor(list(values), dtype=torch.float64, device=runtime.device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def wrap(model: nn.Module, runtime: Runtime) -> nn.Module:
    """`model` in DistributedDataParallel for one stage (rank 0's weights are broadcast to all); `model` itself in
    one process. Wrap again whenever the trainable parameters change: DDP only syncs those trainable when it was
    made. Buffers are not broadcast on every forward: BatchNorm statistics, when trained, are averaged after each
    epoch (`average_buffers`), since SyncBatchNorm does not run on a CPU."""
    if not active():
        return model
    device_ids = [runtime.device] if runtime.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, forward_sync_buffers=False)


def average_buffers(model: nn.Module) -> None:
    """Average the floating-point buffers (BatchNorm running statistics) of `model` over all ranks."""
    if not active():
        return
    world = dist.get_world_size()
    for buffer in model.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer)
            buffer.div_(world)


def parameters_agree(model: nn.Module) -> str:
    """The sha256 of `model`'s weights, checked to be the same on every rank (a RuntimeError names the ranks that
    differ: data-parallel training must leave every process with the same model)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    mine = digest.hexdigest()
    everyone = gather(mine)
    if any(other != mine for other in everyone):
        differ = [rank for rank, other in enumerate(everyone) if other != everyone[0]]
        raise RuntimeError(f"the processes ended with different weights (ranks {differ} differ from rank 0)")
    return mine
