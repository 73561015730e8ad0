"""`transferkit export` and the ONNX runner: the file's signature and metadata, the parity check at batch sizes
1/3/8 (and its refusal), the dependency-free deployment script against `transferkit predict`, the int8 rule, a
damaged or stale cached graph, and evaluate on ONNX Runtime against PyTorch."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

import transferkit.inference.runner as runner_module
from transferkit.cli.main import main
from transferkit.evaluation.predict import evaluate, expand_image_paths, infer_files, score
from transferkit.inference.graph import Probabilities, graph_path
from transferkit.inference.quantize import MIN_AGREEMENT, MIN_SPEEDUP
from transferkit.inference.runner import make_runner
from transferkit.inference.session import OnnxClassifier
from transferkit.io.bundle import load_bundle
from transferkit.runtime import Runtime
from transferkit.training.run import TrainResult

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "onnx_predict.py"
CPU = Runtime(torch.device("cpu"))


@pytest.fixture(scope="module")
def exported(trained_run: TrainResult, photo_test_data: Path,
             tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The trained run exported once (checked on the test photos), and what the command printed."""
    out = tmp_path_factory.mktemp("export") / "model.onnx"
    with pytest.MonkeyPatch.context() as mp:
        lines: list[str] = []
        mp.setattr("builtins.print", lambda *a, **k: lines.append(" ".join(map(str, a))))
        assert main(["export", str(trained_run.run_dir), "--out", str(out), "--check", str(photo_test_data)]) == 0
    return out, "\n".join(lines)


def test_export_signature_and_metadata(exported: tuple[Path, str], trained_run: TrainResult) -> None:
    out, _ = exported
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (inp,), (output,) = session.get_inputs(), session.get_outputs()
    assert inp.type == "tensor(uint8)" and inp.shape[1:] == [224, 224, 3] and isinstance(inp.shape[0], str)
    assert output.type == "tensor(float)" and output.shape[1:] == [3]
    meta = session.get_modelmeta().custom_metadata_map
    bundle = load_bundle(trained_run.run_dir)
    assert json.loads(meta["classes"]) == bundle.model.class_names
    prep = json.loads(meta["preprocessing"])
    p = bundle.model.preprocessing
    assert (prep["input_size"], prep["resize_size"], prep["interpolation"]) == (224, p.resize_size, p.interpolation)
    assert prep["mean"] == list(p.mean) and prep["std"] == list(p.std) and prep["crop"] == "center"
    assert meta["bundle_sha256"] == bundle.meta["weights_sha256"]
    assert meta["backbone"] == bundle.meta["backbone"]["name"] and meta["transferkit_version"]
    assert not list(out.parent.glob("*.tmp*")), "written atomically: no temporary left behind"


def test_export_prints_parity_at_three_batch_sizes(exported: tuple[Path, str]) -> None:
    _, printed = exported
    assert "12 images from" in printed
    for size in (1, 3, 8):
        found = re.search(rf"batch {size}: max \|Δprobability\| ([0-9.e+-]+), top-1 agreement 100.0%", printed)
        assert found and float(found.group(1)) <= 1e-4


def test_batch_sizes_agree_with_predict(exported: tuple[Path, str], trained_run: TrainResult,
                                        photo_test_data: Path) -> None:
    from transferkit.inference.export import check_images

    model = load_bundle(trained_run.run_dir).model
    images, _ = check_images({}, model.preprocessing, photo_test_data)
    classifier = OnnxClassifier.load(exported[0])
    paths = expand_image_paths([photo_test_data])
    reference, kept = infer_files(model, model.preprocessing, paths, CPU, runner="torch")
    assert kept == list(range(len(paths)))
    for size in (1, 3, 8):
        ours = np.concatenate([classifier.predict(images[i:i + size]) for i in range(0, len(images), size)])
        assert np.abs(ours - reference).max() <= 1e-4
    with pytest.raises(ValueError, match=r"uint8 images of shape \(N, 224, 224, 3\)"):
        classifier.predict(images.astype(np.float32))


def test_export_default_check_is_the_validation_split(trained_run: TrainResult, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(trained_run.run_dir), "--out", str(tmp_path / "m.onnx")]) == 0
    assert "validation images of" in capsys.readouterr().out


def test_export_refuses_a_graph_that_differs(trained_run: TrainResult, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    real = make_runner

    def shifted(*args: object, **kwargs: object) -> object:
        run = real(*args, **kwargs)  # type: ignore[arg-type]
        return lambda images: np.roll(run(images), 1, axis=1)  # another class wins

    monkeypatch.setattr("transferkit.inference.export.make_runner", shifted)
    out = tmp_path / "model.onnx"
    assert main(["export", str(trained_run.run_dir), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not match PyTorch" in err and "batch 1" in err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_deploy_script_matches_predict(exported: tuple[Path, str], trained_run: TrainResult, photo_test_data: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    images = [str(p) for p in expand_image_paths([photo_test_data])]
    done = subprocess.run([sys.executable, str(EXAMPLE), str(exported[0]), *images], capture_output=True,
                          text=True, check=True)
    script = {}
    for line in done.stdout.splitlines():
        path, ranked = line.rsplit(": ", 1)
        script[path] = [(cell.rsplit(" ", 1)[0], float(cell.rsplit(" ", 1)[1])) for cell in ranked.split(", ")]
    assert main(["predict", str(trained_run.run_dir), *images, "--json", "--top", "3"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == len(script) == len(images)
    for row in rows:
        ours = script[row["path"]]
        assert [label for label, _ in ours] == [r["label"] for r in row["predictions"]]
        assert np.allclose([p for _, p in ours], [r["probability"] for r in row["predictions"]], atol=1e-4)


@pytest.mark.slow
def test_int8_kept_only_when_accurate_and_fast(exported: tuple[Path, str], trained_run: TrainResult,
                                               photo_test_data: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "model.onnx"
    code = main(["export", str(trained_run.run_dir), "--out", str(out), "--check", str(photo_test_data), "--int8"])
    captured = capsys.readouterr()
    int8 = tmp_path / "model.int8.onnx"
    text = captured.out if code == 0 else captured.err
    agreement = float(re.search(r"top-1 agreement ([0-9.]+)% \(need", text).group(1)) / 100  # type: ignore[union-attr]
    speedup = float(re.search(r"([0-9.]+)x \(need", text).group(1))  # type: ignore[union-attr]
    assert out.is_file()  # the float file is written and checked either way
    if agreement >= MIN_AGREEMENT and speedup >= MIN_SPEEDUP:
        assert code == 0 and int8.is_file() and int8.stat().st_size < out.stat().st_size
        classifier = OnnxClassifier.load(int8)
        assert classifier.classes == load_bundle(trained_run.run_dir).model.class_names
    else:
        assert code == 2 and not int8.exists() and captured.err.count("\n") == 1 and "int8 not kept" in captured.err


def _runner_with_cached(trained_run: TrainResult, content: bytes, monkeypatch: pytest.MonkeyPatch) -> object:
    """The runner for the trained model when its cached graph holds `content` and exporting again fails."""
    model = load_bundle(trained_run.run_dir).model
    path = graph_path(Probabilities(model, model.preprocessing).eval(), 224)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    monkeypatch.setattr(runner_module, "_LOADED", {})

    def cannot(*args: object) -> None:
        raise RuntimeError("exporter broke")

    monkeypatch.setattr(runner_module, "export_graph", cannot)
    return make_runner(model, model.preprocessing, CPU, prefer="onnx")


def test_corrupt_cached_graph_falls_back_to_pytorch(exported: tuple[Path, str], trained_run: TrainResult,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="transferkit"):
        run = _runner_with_cached(trained_run, b"not an onnx file", monkeypatch)
    assert run.name == "pytorch" and "exporter broke" in run.note  # type: ignore[attr-defined]
    assert "running on PyTorch" in caplog.text


def test_stale_cached_graph_falls_back_to_pytorch(exported: tuple[Path, str], trained_run: TrainResult,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import onnx

    other = onnx.load(str(exported[0]))  # a valid graph of this model, but with its last layer changed
    bias = next(t for t in other.graph.initializer if tuple(t.dims) == (3,))
    values = onnx.numpy_helper.to_array(bias) + np.array([5.0, 0.0, -5.0], dtype=np.float32)
    bias.CopyFrom(onnx.numpy_helper.from_array(values, bias.name))
    run = _runner_with_cached(trained_run, other.SerializeToString(), monkeypatch)
    assert run.name == "pytorch" and "exporter broke" in run.note  # type: ignore[attr-defined]


def test_evaluate_on_onnx_runtime_matches_pytorch(exported: tuple[Path, str], trained_run: TrainResult,
                                                  photo_test_data: Path) -> None:
    model = load_bundle(trained_run.run_dir).model
    runtime = Runtime(torch.device("cpu"), workers=0)
    onnx_run, torch_run = (evaluate(model, photo_test_data, runtime, runner=r) for r in ("onnx", "torch"))
    assert onnx_run.metrics.to_json() == torch_run.metrics.to_json()
    on, pt = (score(model, photo_test_data, runtime, runner=r) for r in ("onnx", "torch"))
    assert np.abs(on.probs - pt.probs).max() <= 1e-4


def test_readme_deploy_script_is_the_example() -> None:
    readme = (EXAMPLE.parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Deploy"):]
    block = section[section.index("```python\n") + 10:section.index("```\n", section.index("```python\n") + 10)]
    example = EXAMPLE.read_text(encoding="utf-8")
    assert block == example[example.index("import json"):].rstrip() + "\n"


def test_loaded_classifier_knows_its_preprocessing(exported: tuple[Path, str], trained_run: TrainResult) -> None:
    classifier = OnnxClassifier.load(exported[0])
    assert classifier.preprocessing == load_bundle(trained_run.run_dir).model.preprocessing
    assert classifier.input_size == 224 and classifier.meta["backbone"]
