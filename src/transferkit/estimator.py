"""`TransferClassifier`: transfer learning as a scikit-learn classifier, for images in memory or on disk.

    clf = TransferClassifier()          # efficientnet_lite0, strategy "extract": a new head on cached features
    clf.fit(X_train, y_train)           # uint8 arrays (N, H, W[, 3]), PIL images or paths; names or integers
    clf.predict(X_test), clf.score(X_test, y_test)
    clf.model_.save("run/")             # the bundle (safetensors + JSON): how to ship the result

The parameters are `TrainConfig`'s fields -- same names, same defaults (except `strategy`: "extract", seconds
on a CPU), validated by `TrainConfig` when `fit` runs, as scikit-learn requires -- plus where it runs (`device`,
`workers`) and `run_dir`. `fit` turns X and y into files (`data.memory`) and runs `training.strategies.train`,
the same job as `transferkit train`, into `run_dir` (default: a temporary folder, deleted afterwards); so it holds
out `val_split` of X to pick the best epoch, and leaves out unreadable images and repeated pictures, with a
warning. The extract strategy's feature cache is shared by every fit with the same backbone, weights, layer and
views (`cache_dir()/features/...`), so the clones that `cross_val_score` and `GridSearchCV` fit run the base
only over images no earlier fit had. Importing this module loads torch (TrainConfig's defaults sit beside the
image transforms); `import transferkit` alone stays light.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from transferkit.data.images import skip_reason
from transferkit.data.memory import Images, Labels, image_files, labelled_images
from transferkit.data.preprocess import Augmentation
from transferkit.errors import InputError
from transferkit.evaluation.metrics import Metrics
from transferkit.evaluation.predict import infer_files
from transferkit.features.engine import cache_dir
from transferkit.model import TransferModel
from transferkit.runtime import Runtime
from transferkit.training.config import TEXT_ONLY_FIELDS, TrainConfig
from transferkit.training.loop import EpochResult
from transferkit.training.strategies import train

if TYPE_CHECKING:
    from sklearn.utils import Tags

__all__ = ["TransferClassifier", "feature_folder"]

log = logging.getLogger(__name__)

_D = TrainConfig()  # the defaults, taken from the one place that defines them


def feature_folder(cfg: TrainConfig) -> Path:
    """The extract strategy's cache for `cfg`: one folder per set of options that decide the features, so fits
    with the same ones share rows (keyed by file content) and fits with other ones never rebuild each other's."""
    key = {"backbone": cfg.backbone, "weights": cfg.weights, "layer": cfg.layer or "deep", "views": cfg.views,
           **({"input_size": cfg.input_size} if cfg.input_size is not None else {}),
           "augmentation": {**dataclasses.asdict(cfg.augmentation), "seed": cfg.seed} if cfg.views else None}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / "features" / f"{cfg.backbone}-{digest}"


@contextmanager
def _run_folder(run_dir: str | os.PathLike[str] | None) -> Iterator[Path]:
    if run_dir is not None:
        yield Path(run_dir)
        return
    with tempfile.TemporaryDirectory(prefix="transferkit-fit-") as tmp:
        yield Path(tmp)


class TransferClassifier(ClassifierMixin, BaseEstimator):
    """A pretrained backbone with a new head, trained by `fit(X, y)` (see the module docstring).

    Fitted attributes: `model_` (the `TransferModel`; class names are the label strings, "0", "1", ... for
    integer labels), `classes_` (the label values as given, in the order of `predict_proba`'s columns),
    `history_` (one `EpochResult` per epoch) and `validation_metrics_` (on the held-out `val_split`).

    A fitted classifier can be pickled (joblib does, for `n_jobs`), but a pickle runs code when loaded: save
    `model_.save(folder)` to keep or share it, and load it with `transferkit.TransferModel.load(folder)`."""

    def __init__(self, backbone: str = _D.backbone, *, weights: str | None = _D.weights, layer: str | None = _D.layer,
                 input_size: int | None = _D.input_size, strategy: str = "extract", views: int = _D.views,
                 probe_epochs: int = _D.probe_epochs, epochs: int = _D.epochs,
                 fine_tune_epochs: int = _D.fine_tune_epochs, unfreeze_blocks: int | None = _D.unfreeze_blocks,
                 lr: float = _D.lr, fine_tune_lr: float = _D.fine_tune_lr, lr_spread: float = _D.lr_spread,
                 batch_size: int = _D.batch_size, val_split: float = _D.val_split, seed: int = _D.seed,
                 class_weights: bool = _D.class_weights, patience: int = _D.patience,
                 warmup_epochs: float = _D.warmup_epochs, weight_decay: float = _D.weight_decay,
                 label_smoothing: float = _D.label_smoothing, hidden: int = _D.hidden, dropout: float = _D.dropout,
                 train_bn: bool = _D.train_bn, augmentation: Augmentation | None = None, device: str | None = None,
                 workers: int | None = None, run_dir: str | os.PathLike[str] | None = None) -> None:
        """Stores the parameters and nothing else (scikit-learn's rule: `clone` and `set_params` rely on it).
        `augmentation` None is TrainConfig's default; `device` None picks the GPU if there is one; `workers`
        None decodes in `Runtime.detect`'s default number of processes."""
        self.backbone = backbone
        self.weights = weights
        self.layer = layer
        self.input_size = input_size
        self.strategy = strategy
        self.views = views
        self.probe_epochs = probe_epochs
        self.epochs = epochs
        self.fine_tune_epochs = fine_tune_epochs
        self.unfreeze_blocks = unfreeze_blocks
        self.lr = lr
        self.fine_tune_lr = fine_tune_lr
        self.lr_spread = lr_spread
        self.batch_size = batch_size
        self.val_split = val_split
        self.seed = seed
        self.class_weights = class_weights
        self.patience = patience
        self.warmup_epochs = warmup_epochs
        self.weight_decay = weight_decay
        self.label_smoothing = label_smoothing
        self.hidden = hidden
        self.dropout = dropout
        self.train_bn = train_bn
        self.augmentation = augmentation
        self.device = device
        self.workers = workers
        self.run_dir = run_dir

    def train_config(self) -> TrainConfig:
        """The parameters as a `TrainConfig`, which checks them (a `UserError` names the bad value)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(TrainConfig)
                  if f.name not in TEXT_ONLY_FIELDS}
        if values["augmentation"] is None:
            del values["augmentation"]
        return TrainConfig(**values)

    def _runtime(self) -> Runtime:
        return Runtime.detect(self.device, self.workers)

    def fit(self, X: Images, y: Labels) -> TransferClassifier:
        """Train on images X with labels y (see `transferkit.data.memory` for what both may be)."""
        cfg = self.train_config()
        data = labelled_images(X, y)
        with _run_folder(self.run_dir) as out:
            result = train(data.files, out, cfg, features=feature_folder(cfg), runtime=self._runtime())
        if result.skipped:
            (path, reason), more = result.skipped[0], len(result.skipped) - 1
            log.warning(f"fit left out {len(result.skipped)} of {len(data.files.samples)} images: {path}: {reason}"
                        + (f" (and {more} more)" if more else ""))
        self.model_: TransferModel = result.model.eval()
        self.classes_: np.ndarray = data.classes
        self.history_: list[EpochResult] = result.history
        self.validation_metrics_: Metrics = result.val_metrics
        return self

    def predict_proba(self, X: Images) -> np.ndarray:
        """Class probabilities, one row per image of X in order, columns in the order of `classes_`. Every
        image must be readable: unlike training, prediction leaves nothing out."""
        check_is_fitted(self, "model_")
        paths = image_files(X)
        probs, kept = infer_files(self.model_, self.model_.preprocessing, paths, self._runtime())
        if kept != list(range(len(paths))):
            i = min(set(range(len(paths))) - set(kept))
            raise InputError(f"X[{i}] ({paths[i]}) cannot be read: {skip_reason(paths[i])} — pass image files "
                             f"(JPEG, PNG, ...) or arrays")
        return probs

    def predict_log_proba(self, X: Images) -> np.ndarray:
        with np.errstate(divide="ignore"):  # a probability that underflowed to 0 is log 0 = -inf
            return np.log(self.predict_proba(X))

    def predict(self, X: Images) -> np.ndarray:
        """The most probable label of each image, as a value of `classes_` (the labels' own type)."""
        probs = self.predict_proba(X)  # first: it says NotFittedError before `classes_` is looked up
        return self.classes_[probs.argmax(axis=1)]

    def __sklearn_tags__(self) -> Tags:
        """X is images (a 3-d or 4-d array, or a list), not a 2-d table of features: scikit-learn's generic
        checks, which feed tables, do not apply (README, "scikit-learn and in-memory data")."""
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        return tags
