"""Serving a run on a CPU runs its ONNX graph: made and checked against PyTorch once, recorded in the cache by the
bundle's bytes, and found again by a later start without importing torch. A graph that changed since its check is
not trusted; a request with several bad files names each one."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from transferkit.errors import UserError
from transferkit.inference.bundle_graph import bundle_digest, cached_classifier
from transferkit.inference.session import OnnxClassifier
from transferkit.io.locations import cache_dir
from transferkit.serve.app import create_app
from transferkit.serve.classifier import load_classifier
from transferkit.serve.settings import ServeSettings
from transferkit.serve.torch_classifier import TorchClassifier
from transferkit.training.run import TrainResult

pytestmark = pytest.mark.slow  # each test exports or loads a graph

HEAVY = ("torch", "torchvision", "timm", "sklearn")


@pytest.fixture(scope="module")
def served(trained_run: TrainResult) -> OnnxClassifier:
    classifier = load_classifier(trained_run.run_dir)
    assert isinstance(classifier, OnnxClassifier)
    return classifier


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_a_run_is_served_by_its_graph_with_pytorchs_answers(served: OnnxClassifier, trained_run: TrainResult,
                                                             photo_test_data: Path) -> None:
    torch_model = TorchClassifier.load(trained_run.run_dir)
    images = _images(photo_test_data)
    pixels = np.stack([served.preprocess(p.read_bytes(), p.name) for p in images])
    assert np.array_equal(pixels, np.stack([torch_model.preprocess(p.read_bytes()) for p in images]))
    np.testing.assert_allclose(served.predict(pixels), torch_model.predict(pixels), atol=1e-4)
    assert served.classes == torch_model.classes
    info = served.info()
    assert info["engine"] == "onnxruntime" and info["bundle_sha256"] == torch_model.info()["bundle_sha256"]
    assert info["backbone"] == {"name": "efficientnet_lite0"}


def test_a_later_start_finds_the_checked_graph_without_torch(served: OnnxClassifier,
                                                             trained_run: TrainResult) -> None:
    script = ("import json, sys\nfrom transferkit.serve.classifier import load_classifier\n"
              "said = []\nc = load_classifier(sys.argv[1], say=said.append)\n"
              f"print(json.dumps({{'heavy': [m for m in {HEAVY!r} if m in sys.modules], 'said': said, "
              "'engine': c.info()['engine'], 'classes': c.classes}))")
    proc = subprocess.run([sys.executable, "-c", script, str(trained_run.run_dir)], capture_output=True, text=True,
                          timeout=120, check=True)
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["heavy"] == [] and found["engine"] == "onnxruntime" and found["classes"] == served.classes
    assert found["said"] == [found["said"][0]] and "the cached graph" in found["said"][0]


def test_a_changed_graph_or_bundle_is_not_trusted(trained_run: TrainResult, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run.run_dir, run)
    load_classifier(run)  # records the graph for this copy (same bytes: the same entry as the original)
    entry = cache_dir() / "onnx" / "bundles" / f"{bundle_digest(run)}.json"
    graph = entry.parent.parent / json.loads(entry.read_text())["graph"]
    assert cached_classifier(run).classifier is not None

    graph.write_bytes(b"not the graph that was checked")
    missed = cached_classifier(run)
    assert missed.classifier is None and "changed since it was checked" in missed.note
    said: list[str] = []
    again = load_classifier(run, say=said.append)  # the slow path: exported and checked again, then recorded
    assert isinstance(again, OnnxClassifier) and any("loading the run with PyTorch" in s for s in said)
    assert graph.read_bytes() != b"not the graph that was checked" and cached_classifier(run).classifier is not None

    meta = json.loads((run / "model.json").read_text())
    meta["class_names"] = list(reversed(meta["class_names"]))  # a different model.json: a different entry
    (run / "model.json").write_text(json.dumps(meta))
    assert cached_classifier(run).classifier is None


def test_engine_choice(trained_run: TrainResult, tmp_path: Path) -> None:
    said: list[str] = []
    assert isinstance(load_classifier(trained_run.run_dir, "torch", said.append), TorchClassifier)
    assert said == ["engine: PyTorch on cpu (asked for)"]
    (tmp_path / "model.onnx").write_bytes(b"x")
    with pytest.raises(UserError, match="only ONNX Runtime runs"):
        load_classifier(tmp_path / "model.onnx", "torch")


def test_every_bad_file_of_a_request_is_named(served: OnnxClassifier, photo_test_data: Path) -> None:
    good = _images(photo_test_data)[0]
    files = [("file", ("broken.png", b"\x89PNG\r\n\x1a\n broken", "image/png")),
             ("file", (good.name, good.read_bytes(), "image/jpeg")),
             ("file", ("empty.jpg", b"", "image/jpeg"))]
    with TestClient(create_app(lambda: served, ServeSettings())) as client:
        while client.get("/health").status_code != 200:
            pass
        response = client.post("/predict", files=files)
        assert response.status_code == 400
        error = response.json()["error"]
        assert "broken.png" in error and "empty.jpg" in error and good.name not in error
        assert client.post("/predict", files=files[1:2]).status_code == 200
