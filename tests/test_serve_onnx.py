"""Serving an `.onnx` file with ONNX Runtime: a graph in the layout `transferkit export` writes (uint8 NHWC in,
normalisation and softmax inside, classes and preprocessing in metadata_props) is made here from the tiny
trained run, and served like the run itself, with the same answers."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from fastapi.testclient import TestClient
from torch import nn

from transferkit.errors import UserError
from transferkit.inference.session import OnnxClassifier
from transferkit.io.bundle import load_bundle
from transferkit.serve.app import create_app
from transferkit.serve.classifier import load_classifier
from transferkit.serve.settings import ServeSettings
from transferkit.serve.torch_classifier import TorchClassifier
from transferkit.training.run import TrainResult

pytestmark = pytest.mark.slow


class _Graph(nn.Module):
    """What the exported graph computes: uint8 NHWC → normalised NCHW → model → softmax."""

    def __init__(self, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float() / 255.0
        return self.model((x - self.mean) / self.std).softmax(dim=1)


def _export(run: Path, out: Path, metadata: dict[str, str] | None = None) -> Path:
    bundle = load_bundle(run)
    p = bundle.model.preprocessing
    example = torch.zeros(2, p.input_size, p.input_size, 3, dtype=torch.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Graph(bundle.model.eval(), p.mean, p.std), (example,), str(out), input_names=["images"],
                          output_names=["probabilities"], dynamic_axes={"images": {0: "batch"}}, opset_version=18,
                          dynamo=False)
    graph = onnx.load(str(out))
    if metadata is None:  # the keys and values of the export branch's inference/export.py
        metadata = {"classes": json.dumps(bundle.meta["class_names"]),
                    "preprocessing": json.dumps({"input": "uint8 RGB (N, H, W, 3); the graph normalises",
                                                 "resize_size": p.resize_size, **p.to_json()}),
                    "bundle_sha256": bundle.meta["weights_sha256"], "transferkit_version": "0.1.0",
                    "backbone": bundle.meta["backbone"]["name"]}
    for key, value in metadata.items():
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, str(out))
    return out


@pytest.fixture(scope="module")
def exported(trained_run: TrainResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(trained_run.run_dir, tmp_path_factory.mktemp("onnx") / "model.onnx")


def test_onnx_file_serves_the_same_answers_as_the_run(exported: Path, trained_run: TrainResult,
                                                      photo_test_data: Path) -> None:
    onnx_model = load_classifier(exported)
    torch_model = TorchClassifier.load(trained_run.run_dir)
    assert isinstance(onnx_model, OnnxClassifier)
    assert onnx_model.classes == torch_model.classes and onnx_model.input_size == torch_model.input_size
    images = sorted(p for p in photo_test_data.rglob("*") if p.is_file())
    pixels = np.stack([onnx_model.preprocess(p.read_bytes(), p.name) for p in images])
    assert np.array_equal(pixels, np.stack([torch_model.preprocess(p.read_bytes()) for p in images]))
    np.testing.assert_allclose(onnx_model.predict(pixels), torch_model.predict(pixels), atol=1e-4)
    info = onnx_model.info()
    assert info["engine"] == "onnxruntime" and info["bundle_sha256"] == torch_model.info()["bundle_sha256"]
    assert info["backbone"] == {"name": "efficientnet_lite0"} and info["versions"]["onnxruntime"]
    with TestClient(create_app(lambda: onnx_model, ServeSettings())) as client:
        while client.get("/health").status_code != 200:
            pass
        response = client.post("/predict", files=[("file", (p.name, p.read_bytes(), "image/jpeg")) for p in images[:3]])
        assert response.status_code == 200
        expected = torch_model.predict(pixels[:3])
        for row, probs in zip(response.json(), expected):
            assert row["predictions"][0]["label"] == torch_model.classes[int(np.argmax(probs))]
        assert client.get("/info").json()["engine"] == "onnxruntime"


def test_onnx_file_without_transferkit_metadata_is_refused(trained_run: TrainResult, tmp_path: Path) -> None:
    bare = _export(trained_run.run_dir, tmp_path / "bare.onnx", metadata={})
    with pytest.raises(UserError, match="no usable transferkit metadata"):
        load_classifier(bare)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not onnx at all")
    with pytest.raises(UserError, match="cannot load"):
        load_classifier(garbage)
