"""Shared fixtures: a tiny real-photo data set written at test time, and one trained run reused by many tests.

The images are random crops of scikit-image's bundled photographs (a cat, a cup of coffee, an astronaut):
real pixels, three visually distinct classes, small enough to train on in seconds with the real Lite0 weights.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # no test ever waits on the network (subprocesses inherit it)

import contextlib  # noqa: E402
import io  # noqa: E402
import socket  # noqa: E402
from pathlib import Path  # noqa: E402

import huggingface_hub.constants  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import skimage.data  # noqa: E402
from fashion_mnist import CLASSES  # noqa: E402  # benchmarks/, on pytest's path
from PIL import Image  # noqa: E402

from transferkit.data.files import EXAMPLE_DATA  # noqa: E402
from transferkit.training.config import TrainConfig  # noqa: E402
from transferkit.training.run import TrainResult  # noqa: E402
from transferkit.training.strategies import train  # noqa: E402


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hub look-ups answer at once, as on a machine without internet (also if huggingface_hub was imported
    before the environment variable was set)."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Exported engines go to a cache of this test session, not the user's (subprocesses inherit it)."""
    os.environ["TRANSFERKIT_CACHE"] = str(tmp_path_factory.mktemp("transferkit-cache"))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that no one listens on now: for a process group's address, so that test runs in
    parallel (pytest-xdist, two checkouts) do not meet on a fixed port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


PHOTOS = {"cat": skimage.data.chelsea, "coffee": skimage.data.coffee, "astronaut": skimage.data.astronaut}


def write_photo_dataset(root: Path, per_class: int, seed: int = 0, size: int = 96) -> Path:
    """Class folders of `per_class` random crops (alternating PNG and JPEG) of each photo, resized to `size`."""
    rng = np.random.default_rng(seed)
    for name, load in PHOTOS.items():
        photo = load()
        h, w = photo.shape[:2]
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            side = int(rng.integers(min(h, w) // 2, min(h, w)))
            top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            crop = Image.fromarray(photo[top:top + side, left:left + side]).resize((size, size))
            crop.save(folder / f"{i:02d}.{'png' if i % 2 else 'jpg'}")
    return root


@pytest.fixture(scope="session")
def photo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_photo_dataset(tmp_path_factory.mktemp("photos") / "train", per_class=8)


@pytest.fixture(scope="session")
def photo_test_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_photo_dataset(tmp_path_factory.mktemp("photos_test") / "test", per_class=4, seed=1)


TINY_CONFIG = TrainConfig(strategy="finetune", epochs=2, fine_tune_epochs=1, batch_size=8, val_split=0.25, lr=3e-3)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, photo_data: Path) -> TrainResult:
    """One real two-stage run (2 head epochs, 1 fine-tune epoch) shared by the bundle/evaluate/predict tests."""
    out = tmp_path_factory.mktemp("run")
    return train(photo_data, out, TINY_CONFIG)


@pytest.fixture(scope="session")
def tuned_text_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny trained text run (`text_models.train_text_run`), shared by the text export and serve tests, which
    only read it."""
    from text_models import train_text_run  # tests/, beside this file

    run, _ = train_text_run(tmp_path_factory.mktemp("text-run"))
    return run


@pytest.fixture(scope="session")
def text_export(tuned_text_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, str]:
    """`transferkit export` of the session's text run with `--check` texts: (run, model.onnx, the check texts, the
    console of export). The export tests check it; the serve tests serve the file."""
    from text_models import write_check_texts

    from transferkit.cli.main import main

    root = tmp_path_factory.mktemp("text-export")
    check = write_check_texts(root / "check.txt")
    out = root / "deploy" / "model.onnx"
    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        assert main(["export", str(tuned_text_run), "--out", str(out), "--check", str(check)]) == 0
    return tuned_text_run, out, check, console.getvalue()


def photo_arrays(per_class: int, seed: int = 0, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """The same kind of crops as `write_photo_dataset`, in memory: uint8 (N, size, size, 3) and class names."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for name, load in PHOTOS.items():
        photo = load()
        h, w = photo.shape[:2]
        for _ in range(per_class):
            side = int(rng.integers(min(h, w) // 2, min(h, w)))
            top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            images.append(np.asarray(Image.fromarray(photo[top:top + side, left:left + side]).resize((size, size))))
            labels.append(name)
    return np.stack(images), np.array(labels)


def fashion_arrays(labels: tuple[int, ...], per_class: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Real Fashion-MNIST images from the bundled example data as Keras hands them out: uint8 (N, 28, 28) and the
    data set's integer labels (0 = T-shirt/top ... 9 = ankle boot)."""
    images, targets = [], []
    for label in labels:
        files = sorted((EXAMPLE_DATA / "train" / CLASSES[label]).glob("*.png"))[offset:offset + per_class]
        images += [np.asarray(Image.open(f)) for f in files]
        targets += [label] * len(files)
    return np.stack(images), np.array(targets)
