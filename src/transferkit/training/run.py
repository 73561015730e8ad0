"""What every training strategy shares: the run's inputs, its result, the data summary it logs and the bundle
it leaves in the run folder."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from transferkit.data.files import LabelledFiles, load_labelled
from transferkit.data.repeats import LEAK
from transferkit.data.split import ImageData
from transferkit.evaluation.metrics import Metrics
from transferkit.evaluation.predict import Scored
from transferkit.io.bundle import save_bundle
from transferkit.io.logfile import details
from transferkit.model import TransferModel
from transferkit.runtime import Runtime
from transferkit.training.config import TrainConfig
from transferkit.training.loop import EpochResult
from transferkit.training.resume import RESUME_FILE

__all__ = ["Run", "TrainResult", "log_data", "save_run"]

log = logging.getLogger(__name__)
LOG_FILE = "train.log"


@dataclass(frozen=True)
class Run:
    """One training job's inputs: the data, where the result goes, the options and where it runs."""

    data: Path | LabelledFiles  # a folder or CSV manifest, or samples indexed already (e.g. in-memory images)
    out: Path
    cfg: TrainConfig
    runtime: Runtime
    test: Path | None = None
    resume: bool = False
    features: Path | None = None  # the feature cache of the extract strategy (default out/features)
    started: float = 0.0  # time.perf_counter() at the start
    # A head fitted already on the training split (auto's probe): `finetune` starts from it and skips stage 1.
    head: dict[str, torch.Tensor] | None = field(default=None, compare=False, repr=False)

    @property
    def source(self) -> Path:
        """Where the data came from, for logs and the bundle."""
        return self.data.source if isinstance(self.data, LabelledFiles) else self.data

    def files(self) -> LabelledFiles:
        """The labelled samples: indexed from the folder or manifest now, or as they were passed."""
        return self.data if isinstance(self.data, LabelledFiles) else load_labelled(self.data)

    def test_files(self) -> LabelledFiles | None:
        return load_labelled(self.test) if self.test is not None else None


@dataclass
class TrainResult:
    model: TransferModel
    run_dir: Path
    history: list[EpochResult]
    val_metrics: Metrics
    test_metrics: Metrics | None
    skipped: list[tuple[Path, str]]
    validation: LabelledFiles | None = None  # the validation split, for a report on it
    val_scored: Scored | None = None  # the model's validation probabilities as held out (temperature 1)
    warm_start: dict[str, torch.Tensor] | None = None  # extract: the head fitted on the training split alone


def log_data(data: ImageData, out: Path) -> None:
    if data.train.empty_classes:
        log.info(f"ignored empty class folder(s): {', '.join(data.train.empty_classes)}")
    if data.skipped:
        log.info(f"skipped {len(data.skipped)} unreadable file(s); they are listed in {out / LOG_FILE}")
        leaks = sum(LEAK in reason for _, reason in data.skipped)
        if leaks:
            log.info(f"warning: {leaks} of them had the same content as a file in another class ({LEAK}); "
                     f"each was kept once, in the first class")
        for path, reason in data.skipped:
            details().info(f"  skipped {path}: {reason}")
    log.info(f"{len(data.classes)} classes, {len(data.train.samples)} training and {len(data.val.samples)} "
             f"validation images")


def log_backbone(model: TransferModel) -> None:
    depth = f", features from block {model.layer} ({model.feature_dim})" if model.layer else ""
    log.info(f"backbone {model.spec.name}, weights {model.weights_info.source}{depth}")


def save_run(run: Run, model: TransferModel, history: list[EpochResult], best: str, data: ImageData,
             val_metrics: Metrics, test_metrics: Metrics | None, features: dict[str, Any] | None = None,
             processes: dict[str, Any] | None = None, probe: dict[str, Any] | None = None) -> None:
    """The bundle, with what the run did in its metadata (`processes`: how a torchrun job was spread; `probe`:
    how a head on fixed features was fitted, beyond its epochs); the resume state is no longer needed after it."""
    extra = {
        "train_config": run.cfg.to_json(),
        "history": [h.to_json() for h in history],
        "best": best,
        "data": {"source": str(run.source), "classes": list(data.classes), "train": len(data.train.samples),
                 "validation": len(data.val.samples), "skipped": [[str(p), r] for p, r in data.skipped],
                 "class_counts": {"train": data.train.counts(), "validation": data.val.counts()}},
        "metrics": {"validation": val_metrics.to_json(), "test": test_metrics.to_json() if test_metrics else None},
        "seconds": round(time.perf_counter() - run.started, 1),
        **({"features": features} if features is not None else {}),
        **({"processes": processes} if processes is not None else {}),
        **({"probe": probe} if probe is not None else {}),
    }
    save_bundle(model, run.out, extra)
    (run.out / RESUME_FILE).unlink(missing_ok=True)  # the bundle is the result now; nothing is left to resume
    log.info(f"saved the model to {run.out} ({time.perf_counter() - run.started:.0f}s in all)")
