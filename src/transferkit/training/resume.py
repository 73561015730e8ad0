"""Resume state: everything a killed training run needs to continue exactly where its last epoch ended.

One safetensors file (`RUN/resume.safetensors`), rewritten atomically after every epoch, holds the model's
weights, the AdamW moments, the best weights so far, and the random states (torch, numpy, python) as tensors,
and in its JSON header the stage, epoch and step, the early-stopping count, the history, the optimizer's
hyper-parameters, the training config and a fingerprint of the data split. Because it is one file replaced by
a rename, a crash leaves either the previous epoch's state or the new one, never a mix. With it (and the
epoch-seeded batches of `data/loaders.py`) a run killed and resumed any number of times ends with the same weights,
bit for bit on a CPU, as a run never interrupted. Under torchrun, rank 0 writes it with every rank's torch random
state (dropout draws differ between processes), and every rank reads it back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

import transferkit.distributed as distributed
from transferkit.data.split import ImageData
from transferkit.errors import UserError
from transferkit.io.atomic import atomic_write_bytes, remove_stale_temporaries
from transferkit.training.config import TrainConfig
from transferkit.training.learner import Learner
from transferkit.training.loop import Callback, EpochResult, LoopState, Stage

__all__ = ["RESUME_FILE", "ResumeState", "SaveResume", "fingerprint", "load_resume", "restore", "resume_point",
           "save_resume"]

RESUME_FILE = "resume.safetensors"
log = logging.getLogger(__name__)
_KEY = "transferkit.resume"
_VERSION = 1


@dataclass(frozen=True)
class ResumeState:
    stage: str  # the stage of the last complete epoch: "probe", "head" or "fine-tune"
    meta: dict[str, Any]
    tensors: dict[str, torch.Tensor]

    @property
    def where(self) -> str:
        progress = self.meta["progress"]
        return "the probe" if self.stage == "probe" else f"{self.stage} epoch {progress['epoch']}"


def fingerprint(cfg: TrainConfig, data: ImageData, world_size: int = 1) -> dict[str, Any]:
    """What must not change between a run and its resumption: the options, the exact split and the number of
    torchrun processes (the global batch is the per-process batch times it)."""
    split = [[str(s.path), s.label] for s in data.train.samples], [[str(s.path), s.label] for s in data.val.samples]
    digest = hashlib.sha256(json.dumps([list(data.classes), *split]).encode()).hexdigest()
    return {"train_config": cfg.to_json(), "data_sha256": digest, "world_size": world_size}


class SaveResume(Callback):
    """After every epoch, the learner's whole state (and the random states) to `path`, atomically."""

    def __init__(self, path: Path, learner: Learner, fp: dict[str, Any]) -> None:
        self.path, self.learner, self.fp = path, learner, fp

    def after_epoch(self, stage: Stage, result: EpochResult, improved: bool, state: LoopState) -> None:
        save_resume(self.path, self.learner, result.stage, self.fp)


def save_resume(path: Path, learner: Learner, stage: str, fp: dict[str, Any]) -> None:
    """Write the state after an epoch of `stage` (atomically: temp file, fsync, rename). Every rank of a
    torchrun job calls this (their random states are gathered); rank 0 writes."""
    torch_states = distributed.gather(torch.get_rng_state())
    if not learner.runtime.is_main:
        return
    state = learner.state_dict()
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in state["model"].items()}
    if state["best"]["state"] is not None:
        tensors |= {f"best.{k}": v.detach().cpu().contiguous() for k, v in state["best"]["state"].items()}
    optimizer = state["optimizer"]
    for index, slots in optimizer["state"].items():
        tensors |= {f"optim.{index}.{name}": v.detach().cpu().contiguous() for name, v in slots.items()}
    np_state = cast(tuple[Any, ...], np.random.get_state())  # the legacy tuple form
    tensors["rng.torch"] = torch_states[0]
    tensors |= {f"rng.torch.{rank}": other for rank, other in enumerate(torch_states[1:], 1)}
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(np_state[1], dtype=np.int64))
    if torch.cuda.is_available():
        for i, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = cuda_state
    meta = {
        "version": _VERSION,
        **fp,
        "stage": stage,
        "progress": state["loop"],
        "sampler_epoch": state["sampler_epoch"],
        "best": {"val_loss": state["best"]["val_loss"], "where": state["best"]["where"]},
        "optimizer_groups": optimizer["param_groups"],
        "history": state["history"],
        "rng": {"numpy": [np_state[0], *np_state[2:]], "python": random.getstate()},
    }
    atomic_write_bytes(path, save(tensors, metadata={_KEY: json.dumps(meta)}))


def load_resume(path: Path, fp: dict[str, Any]) -> ResumeState | None:
    """The saved state, or None when there is none; refuses a damaged one or one from other options or data."""
    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})[_KEY])
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError, KeyError) as exc:
        raise UserError(f"cannot read the resume state {path} ({exc}): delete it and train again without "
                        f"--resume") from None
    if meta.get("version") != _VERSION:
        raise UserError(f"{path} was written by another transferkit version: train again without --resume")
    if meta["train_config"] != fp["train_config"]:
        old, new = meta["train_config"], fp["train_config"]
        changed = ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(new) if old.get(k) != new.get(k))
        raise UserError(f"cannot resume {path.parent}: the options differ from the interrupted run's ({changed}); "
                        f"pass the same flags, or train without --resume to start over")
    if meta.get("world_size", 1) != fp["world_size"]:  # states written before torchrun support: 1 process
        raise UserError(f"cannot resume {path.parent}: the interrupted run had {meta.get('world_size', 1)} "
                        f"process(es), this one has {fp['world_size']}; start it the same way (torchrun "
                        f"--nproc-per-node), or train without --resume to start over")
    if meta["data_sha256"] != fp["data_sha256"]:
        raise UserError(f"cannot resume {path.parent}: the data (its files or split) changed since the interrupted "
                        f"run; restore it, or train without --resume to start over")
    return ResumeState(meta["stage"], meta, tensors)


def resume_point(out: Path, fp: dict[str, Any], tidy: bool = True) -> ResumeState | None:
    """`train --resume`: the state to continue from, or None (and a log line) when the run never finished an
    epoch; a run that already finished is refused, since there is nothing to continue. `tidy`: remove what an
    interrupted write left (only the process that writes should)."""
    for path in remove_stale_temporaries(out) if tidy else ():
        log.info(f"removed {path}, a temporary file of a write that was interrupted")
    state = load_resume(out / RESUME_FILE, fp)
    if state is None and (out / "model.json").is_file():
        raise UserError(f"nothing to resume in {out}: its training finished (model.json is there); "
                        f"train without --resume to train again")
    log.info(f"resuming after {state.where}" if state
             else f"nothing to resume in {out} yet: starting from the beginning")
    return state


def _with_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def restore(state: ResumeState, learner: Learner) -> None:
    """Put the learner (model, optimizer, best weights, stage progress, batch order, history) and the random
    states back as they were after the saved epoch."""
    meta, tensors = state.meta, state.tensors
    slots: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in _with_prefix(tensors, "optim.").items():
        index, name = key.split(".", 1)
        slots.setdefault(int(index), {})[name] = value
    learner.load_state_dict({
        "model": _with_prefix(tensors, "model."),
        "optimizer": {"state": slots, "param_groups": meta["optimizer_groups"]},
        "best": {**meta["best"], "state": _with_prefix(tensors, "best.") or None},
        "loop": meta["progress"],
        "sampler_epoch": meta["sampler_epoch"],
        "history": meta["history"],
    })
    rank = learner.runtime.rank
    torch.set_rng_state(tensors.get(f"rng.torch.{rank}", tensors["rng.torch"]) if rank else tensors["rng.torch"])
    cuda = [tensors[f"rng.cuda.{i}"] for i in range(len(_with_prefix(tensors, "rng.cuda.")))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    np_kind, *np_rest = meta["rng"]["numpy"]
    np.random.set_state((np_kind, tensors["rng.numpy"].numpy().astype(np.uint32), *np_rest))
    version, internal, gauss = meta["rng"]["python"]
    random.setstate((version, tuple(internal), gauss))
