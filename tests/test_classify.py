"""`transferkit classify`: the pretrained ImageNet head of the packaged Lite0 weights names real photos."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import skimage.data
from PIL import Image

from transferkit.cli.main import main

CATS = {"tabby, tabby cat", "tiger cat", "Egyptian cat"}


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(skimage.data.chelsea()).save(folder / "chelsea.png")
    Image.fromarray(skimage.data.coffee()).save(folder / "coffee.png")
    return folder


def _classify(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict]:  # type: ignore[type-arg]
    assert main(["classify", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_chelsea_is_a_cat_and_coffee_is_espresso(photos: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = {Path(r["path"]).name: r["predictions"] for r in _classify(capsys, str(photos), "--top", "3")}
    assert set(results) == {"chelsea.png", "coffee.png"}
    assert CATS & {p["label"] for p in results["chelsea.png"]}
    assert results["coffee.png"][0]["label"] == "espresso"
    for predictions in results.values():
        probs = [p["probability"] for p in predictions]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001


def test_classify_text_output_and_skips_bad_files(photos: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_text("<html>not an image</html>")
    assert main(["classify", str(photos / "coffee.png"), str(broken), "--top", "1"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip().endswith("espresso " + captured.out.strip().split()[-1])
    assert "skipped" in captured.err and "broken.jpg" in captured.err
