"""`transferkit export` on a text model: one ONNX graph from token ids to probabilities with the tokenizer beside
it, its metadata, the parity printed at batch sizes 1, 3 and 8 on real texts of different lengths, and ONNX
Runtime plus `tokenizers` alone (no transferkit, no torch) giving `transferkit predict`'s top-1."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from text_models import CHECK

from transferkit.cli.main import main


def test_export_writes_the_graph_and_tokenizer_and_prints_parity(text_export: tuple[Path, Path, Path, str]) -> None:
    run, out, _, console = text_export
    assert out.is_file() and out.with_name("model.tokenizer.json").is_file()
    assert f"on {len(CHECK)} texts from" in console
    for size in (1, 3, 8):
        line = next(x for x in console.splitlines() if x.strip().startswith(f"batch {size}:"))
        figure = float(line.split("|Δprobability|")[1].split(",")[0])
        assert figure <= 1e-4 and "top-1 agreement 100.0%" in line
    import onnxruntime

    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in session.get_inputs()}
    assert set(inputs) == {"input_ids", "attention_mask"}
    assert all(i.type == "tensor(int64)" and len(i.shape) == 2 and all(isinstance(d, str) for d in i.shape)
               for i in inputs.values())  # dynamic batch and sequence axes
    meta = session.get_modelmeta().custom_metadata_map
    bundle = json.loads((run / "model.json").read_text())
    assert meta["modality"] == "text" and json.loads(meta["classes"]) == ["ham", "spam"]
    assert meta["encoder"] == "all-MiniLM-L6-v2" and meta["max_tokens"] == "256"
    assert meta["bundle_sha256"] == bundle["weights_sha256"] and meta["transferkit_version"]
    assert meta["tokenizer"] == "model.tokenizer.json"


# What a deployment without transferkit does: ONNX Runtime, tokenizers and numpy only.
_DEPLOYED = """
import json, sys
import numpy as np, onnxruntime, tokenizers
graph, texts = sys.argv[1], json.loads(sys.argv[2])
session = onnxruntime.InferenceSession(graph, providers=["CPUExecutionProvider"])
meta = session.get_modelmeta().custom_metadata_map
classes, prefix = json.loads(meta["classes"]), json.loads(meta["preprocessing"])["prefix"]
tokenizer = tokenizers.Tokenizer.from_file(graph[:-len(".onnx")] + ".tokenizer.json")
rows = [e.ids for e in tokenizer.encode_batch([prefix + t for t in texts])]
ids = np.full((len(rows), max(map(len, rows))), int(meta["pad_id"]), dtype=np.int64)
mask = np.zeros_like(ids)
for i, row in enumerate(rows):
    ids[i, :len(row)], mask[i, :len(row)] = row, 1
probs = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
assert not any(name in sys.modules for name in ("torch", "transferkit", "transformers"))
print(json.dumps({"top1": [classes[int(j)] for j in probs.argmax(1)], "p": probs.max(1).tolist(),
                  "cut": sum(len(r) == int(meta["max_tokens"]) for r in rows)}))
"""


def test_onnxruntime_and_tokenizers_alone_reproduce_predict(text_export: tuple[Path, Path, Path, str],
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    run, out, check, _ = text_export
    assert main(["predict", str(run), "--file", str(check), "--json"]) == 0
    predicted = json.loads(capsys.readouterr().out)
    proc = subprocess.run([sys.executable, "-I", "-c", _DEPLOYED, str(out), json.dumps(CHECK)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    deployed = json.loads(proc.stdout)
    assert deployed["top1"] == [p["predictions"][0]["label"] for p in predicted]
    assert max(abs(a - p["predictions"][0]["probability"]) for a, p in zip(deployed["p"], predicted)) < 1e-4
    assert deployed["cut"] == 1  # the long text, cut at the window as predict cuts it


def test_without_check_the_runs_data_then_fixed_sentences(text_export: tuple[Path, Path, Path, str]) -> None:
    from transferkit.text.export import CHECK_SENTENCES, check_texts

    meta = json.loads((text_export[0] / "model.json").read_text())
    texts, said = check_texts(meta, None)
    assert "mail.csv" in said and len(texts) > 20 and texts[-1] == CHECK_SENTENCES[-1]
    unlabelled = text_export[2].with_name("unlabelled.csv")
    unlabelled.write_text("text\nhello there\nWIN a prize now\n", encoding="utf-8")
    assert check_texts(meta, unlabelled)[0] == ["hello there", "WIN a prize now"]  # --check needs no labels
    texts, said = check_texts({**meta, "data": {"source": "/gone/mail.csv"}}, None)
    assert texts == list(CHECK_SENTENCES) and "fixed sentences" in said


@pytest.mark.parametrize(("flags", "message"), [
    (("--check", "MISSING"), "texts not found"),
    (("--int8",), "--int8 and --calibrate quantize image models only"),
])
def test_bad_export_flags_for_a_text_model_are_one_line(flags: tuple[str, ...], message: str,
                                                        text_export: tuple[Path, Path, Path, str], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    args = [str(tmp_path / "nope.txt") if f == "MISSING" else f for f in flags]
    out = tmp_path / "m.onnx"
    assert main(["export", str(text_export[0]), "--out", str(out), *args]) == 2
    stderr = capsys.readouterr().err
    assert message in stderr and len(stderr.strip().splitlines()) == 1 and not out.exists()
