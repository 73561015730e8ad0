"""Which training-time augmentations suit these images? Each one the configuration turns on (horizontal flip,
small rotation, zoom/crop) is measured before fine-tuning uses it, on the frozen base's cached features: a
5-fold cross-validated linear probe trained on the plain features alone, and with one view of each training
image under that augmentation alone added as one more example of its class, tested on the plain features of the
held-out fold. An augmentation that costs the probe more than `TOLERANCE` accuracy is left out: a flip for
digits, text or anything with handedness, rotation where orientation is the class, zoom where size is.

The views, each seeded: the flip is the mirror image of the evaluation crop (every image flipped: the strongest
form of it); rotation turns the evaluation crop by an angle drawn uniformly within +-`rotation_degrees`; zoom is
a random resized crop of `min_scale` to all of the image's area, as training draws it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

from transferkit.data.images import BadImage, load_image
from transferkit.data.preprocess import Augmentation, Preprocessing
from transferkit.data.transforms import eval_transform, random_rotation, random_zoom
from transferkit.features.engine import make_engine
from transferkit.features.extract import extract_features
from transferkit.model import Backbone
from transferkit.runtime import Runtime
from transferkit.selection.rank import stratified_rows
from transferkit.selection.scores import probe_accuracy_with_views
from transferkit.training.run import Run

__all__ = ["MOST", "TOLERANCE", "AugmentationTest", "augmentation_test"]

TOLERANCE = 0.005  # cross-validated probe accuracy an augmentation may cost and still be kept (noise)
MOST = 1000  # images the test looks at, at most (a stratified, seeded sample)

View = Callable[[Image.Image, torch.Tensor], torch.Tensor]  # (the image, its eval crop as uint8) -> the view


@dataclass(frozen=True)
class AugmentationTest:
    """Cross-validated probe accuracy on `images` images without views, and with each augmentation's views."""

    without: float
    with_views: dict[str, float]  # flip | rotation | zoom: those the configuration turns on
    images: int

    def keeps(self, name: str) -> bool:
        """Whether the augmentation `name` is kept (one that was not tested is left as configured)."""
        return name not in self.with_views or self.with_views[name] >= self.without - TOLERANCE

    def apply(self, aug: Augmentation) -> Augmentation:
        """`aug` without the augmentations that cost the probe accuracy."""
        return replace(aug, hflip=aug.hflip and self.keeps("flip"),
                       rotation_degrees=aug.rotation_degrees if self.keeps("rotation") else 0.0,
                       min_scale=aug.min_scale if self.keeps("zoom") else 1.0)

    def describe(self) -> str:
        tried = [f"{v:.3f} with {name} ({'kept' if self.keeps(name) else 'left out'})"
                 for name, v in self.with_views.items()]
        return ", ".join([f"{self.without:.3f} without views", *tried])

    def to_json(self) -> dict[str, Any]:
        return {"images": self.images, "probe_accuracy": round(self.without, 4),
                "with_views": {name: round(v, 4) for name, v in self.with_views.items()},
                "kept": [name for name in self.with_views if self.keeps(name)]}


def _views(p: Preprocessing, aug: Augmentation) -> dict[str, View]:
    """The augmentations `aug` turns on, each alone, as training draws it (torchvision's own transforms; their
    randomness from torch's global generator, which the caller seeds)."""
    views: dict[str, View] = {}
    if aug.hflip:
        views["flip"] = lambda image, crop: crop.flip(-1)
    if aug.rotation_degrees > 0:
        rotate = random_rotation(aug.rotation_degrees)
        views["rotation"] = lambda image, crop: rotate(crop)
    if aug.min_scale < 1.0:
        zoom = v2.Compose([random_zoom(p, aug.min_scale), v2.ToImage()])
        views["zoom"] = lambda image, crop: zoom(image)
    return views


@torch.inference_mode()
def _view_features(backbone: Backbone, paths: Sequence[Path], views: dict[str, View], seed: int,
                   runtime: Runtime) -> dict[str, np.ndarray]:
    """Pooled features of one view of each image under each augmentation (each image read once)."""
    p = backbone.preprocessing
    crop = eval_transform(p, normalise=False)
    engine = make_engine(backbone.module, p, runtime)
    out = {name: np.zeros((len(paths), backbone.feature_dim), dtype=np.float32) for name in views}
    blank = torch.zeros(3, p.input_size, p.input_size, dtype=torch.uint8)
    with torch.random.fork_rng(devices=[]):  # seeded views; the caller's random state is left as it was
        torch.manual_seed(seed)
        for start in range(0, len(paths), engine.batch_size):
            batches: dict[str, list[torch.Tensor]] = {name: [] for name in views}
            for path in paths[start:start + engine.batch_size]:
                try:
                    image = load_image(path, p.resize_size)
                    cropped = crop(image)
                    made = {name: view(image, cropped) for name, view in views.items()}
                except BadImage:  # read once already; changed since: its row keeps the plain features' place
                    made = dict.fromkeys(views, blank)
                for name, view_of_image in made.items():
                    batches[name].append(view_of_image)
            for name, batch in batches.items():
                out[name][start:start + len(batch)] = engine(torch.stack(batch))
    return out


def augmentation_test(run: Run, backbone: Backbone, folder: Path) -> AugmentationTest | None:
    """What each augmentation the configuration turns on does to a cross-validated probe on these images (None
    when it turns none on)."""
    cfg = run.cfg
    turned_on = _views(backbone.preprocessing, cfg.augmentation)
    if not turned_on:
        return None
    cache = extract_features(run.files(), backbone, folder, 0, Augmentation(), cfg.seed, run.runtime)
    rows = stratified_rows(cache.labels, MOST, cfg.seed, per_class=2)  # 2: a fold needs both
    views = _view_features(backbone, [cache.paths[i] for i in rows], turned_on, cfg.seed, run.runtime)
    without, with_views = probe_accuracy_with_views(np.asarray(cache.features[rows]), views, cache.labels[rows],
                                                    seed=cfg.seed)
    return AugmentationTest(without, with_views, len(rows))
