"""The Runtime: where tensors live and how the process sits in a torchrun job, decided once from the
environment, and the gradient-sync switch micro-batches rely on (with a real DistributedDataParallel)."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
from conftest import free_port
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from transferkit.runtime import CPU_MICRO_BATCH, Runtime, default_workers


def test_detect_reads_the_torchrun_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    runtime = Runtime.detect(workers=0)
    assert (runtime.rank, runtime.world_size, runtime.is_main) == (3, 4, False)
    expected = "cuda:1" if torch.cuda.is_available() else "cpu"  # LOCAL_RANK picks the GPU
    assert runtime.device == torch.device(expected) and runtime.workers == 0


def test_a_single_process_is_the_main_one_and_runs_float32_on_a_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    runtime = Runtime.detect(device="cpu")
    assert runtime.is_main and runtime.world_size == 1 and runtime.autocast_dtype is None
    assert runtime.workers >= 1 and not runtime.pin_memory
    x = torch.randn(2, 3)
    with runtime.autocast():
        assert (x @ x.T).dtype == torch.float32


def test_micro_batch_size_follows_the_device_unless_given() -> None:
    cpu = Runtime(torch.device("cpu"))
    assert cpu.micro_batch_size(32) == CPU_MICRO_BATCH and cpu.micro_batch_size(4) == 4
    assert Runtime(torch.device("cuda:0")).micro_batch_size(32) == 32  # no CUDA needed to decide
    assert Runtime(torch.device("cpu"), micro_batch=3).micro_batch_size(32) == 3


def test_no_sync_turns_gradient_all_reduce_off_on_all_but_the_last_slice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(os.environ, "MASTER_ADDR", "127.0.0.1")
    monkeypatch.setitem(os.environ, "MASTER_PORT", str(free_port()))
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        model = DistributedDataParallel(nn.Linear(4, 2))
        runtime = Runtime(torch.device("cpu"))
        with runtime.no_sync(model, last=False):
            assert model.require_backward_grad_sync is False
        with runtime.no_sync(model, last=True):
            assert model.require_backward_grad_sync is True
        plain = nn.Linear(4, 2)  # no DDP: nothing to switch, and nothing breaks
        with runtime.no_sync(plain, last=False):
            plain(torch.randn(1, 4)).sum().backward()
        assert plain.weight.grad is not None
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(("cores", "local", "device", "expected"), [
    (2, None, "cpu", 2), (16, None, "cpu", 4), (16, "2", "cpu", 4), (16, "8", "cpu", 2), (2, "2", "cpu", 1),
    (2, "4", "cpu", 1), (64, None, "cuda", 8), (64, "8", "cuda", 8), (32, "8", "cuda", 4), (8, "16", "cuda", 1)])
def test_decoding_workers_share_the_cores_between_the_processes_of_one_machine(
        monkeypatch: pytest.MonkeyPatch, cores: int, local: str | None, device: str, expected: int) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    if local is None:
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", local)
    assert default_workers(device) == expected
    assert Runtime.detect(device="cpu").workers == default_workers("cpu")


@pytest.mark.parametrize(("cores", "local", "expected"), [(2, None, 1), (16, None, 4), (16, "2", 2), (16, "8", 1)])
def test_extract_workers_share_the_cores_too(monkeypatch: pytest.MonkeyPatch, cores: int, local: str | None,
                                              expected: int) -> None:
    from transferkit.features.extract import extract_workers

    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    if local is None:
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", local)
    assert extract_workers() == expected
