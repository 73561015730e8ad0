"""`transferkit rank`: candidates from the weights on this machine, a cached extraction per candidate, a table
best first."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from transferkit.backbones.table import BACKBONES
from transferkit.backbones.weights import weights_available
from transferkit.cli.main import main
from transferkit.data.files import load_labelled
from transferkit.errors import UserError
from transferkit.runtime import Runtime
from transferkit.selection.rank import Candidate, available_candidates, features_folder, rank, stratified_rows


def test_default_candidates_are_the_backbones_whose_weights_are_here() -> None:
    here = [spec.name for spec in BACKBONES if weights_available(spec)]
    candidates = available_candidates(None, ["deep", "mid"])
    assert "efficientnet_lite0" in here
    assert [str(c) for c in candidates] == [f"{name}/{layer}" for name in here for layer in ("deep", "mid")]


def test_named_backbones_are_resolved_by_alias_and_unknown_ones_refused() -> None:
    assert available_candidates(["EfficientNetLite0"], ["deep"]) == [Candidate("efficientnet_lite0", "deep")]
    with pytest.raises(UserError, match="unknown backbone"):
        available_candidates(["resnet5000"], ["deep"])


def teststratified_rows_keep_every_class_in_proportion() -> None:
    labels = np.array([0] * 900 + [1] * 100)
    rows = stratified_rows(labels, 100, seed=0)
    assert len(rows) == 100 and np.all(np.diff(rows) > 0)
    assert np.bincount(labels[rows]).tolist() == [90, 10]


def test_rank_orders_by_the_chosen_score_and_reuses_the_caches(photo_data: Path, tmp_path: Path) -> None:
    files = load_labelled(photo_data)
    candidates = [Candidate("efficientnet_lite0", "deep"), Candidate("efficientnet_lite0", "shallow")]
    runtime = Runtime.detect(workers=0)
    first = rank(files, candidates, tmp_path, runtime, by="knn")
    assert [r.scores["knn"] for r in first] == sorted((r.scores["knn"] for r in first), reverse=True)
    assert {str(r.candidate) for r in first} == {str(c) for c in candidates}
    assert all(r.images == len(files.samples) and set(r.scores) == {"logme", "knn", "probe"} for r in first)
    assert {r.feature_dim for r in first} == {1280, 24}
    for c in candidates:
        assert (features_folder(tmp_path, files, c) / "features.npy").is_file()
    again = rank(files, candidates, tmp_path, runtime, by="knn")
    assert [r.scores for r in again] == [r.scores for r in first]  # same features, read back from the caches


def test_rank_cli_prints_json_with_the_best_first(photo_data: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["rank", str(photo_data), "--backbones", "efficientnet_lite0", "--layers", "deep,shallow",
                 "--features", str(tmp_path), "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    logmes = [row["scores"]["logme"] for row in out["ranking"]]
    assert out["by"] == "logme" and len(logmes) == 2 and logmes == sorted(logmes, reverse=True)


def test_rank_cli_refuses_an_unknown_layer_in_one_line(photo_data: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["rank", str(photo_data), "--backbones", "efficientnet_lite0", "--layers", "deepest",
                 "--features", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "unknown layer 'deepest'" in err and len(err.strip().splitlines()) == 1
