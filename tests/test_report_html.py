"""The HTML report end to end: `transferkit report` and `train --report` write a self-contained page and
metrics.json with the same numbers as `evaluate`, warnings reach the console, and headless Chromium renders
every section (skipped, with the reason, where Chromium is not installed; `.ci/run` installs it)."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transferkit.cli.main import main
from transferkit.evaluation.html import SECTIONS, render_html
from transferkit.evaluation.predict import evaluate
from transferkit.evaluation.report import build_report
from transferkit.io.bundle import load_bundle
from transferkit.training.run import TrainResult


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def test_data_with_a_broken_file(tmp_path_factory: pytest.TempPathFactory, photo_test_data: Path) -> Path:
    """The 12 test photos, one truncated file, and a photo of coffee filed under cat: a mislabelled file, the
    kind of mistake the gallery exists to show."""
    data = Path(shutil.copytree(photo_test_data, tmp_path_factory.mktemp("report_data") / "test"))
    (data / "cat" / "truncated.jpg").write_bytes((data / "cat" / "00.jpg").read_bytes()[:200])
    shutil.copy(data / "coffee" / "00.jpg", data / "cat" / "mislabelled.jpg")
    return data


@pytest.fixture(scope="module")
def report_file(tmp_path_factory: pytest.TempPathFactory, trained_run: TrainResult,
                test_data_with_a_broken_file: Path) -> tuple[Path, str, str]:
    """`transferkit report` run once (in this process, output captured by hand: capsys is per test)."""
    out = tmp_path_factory.mktemp("report") / "nested" / "report.html"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["report", str(trained_run.run_dir), str(test_data_with_a_broken_file), "--out", str(out)])
    assert code == 0, stderr.getvalue()
    return out, stdout.getvalue(), stderr.getvalue()


def test_report_command_writes_html_and_the_same_numbers_as_evaluate(
        report_file: tuple[Path, str, str], trained_run: TrainResult, test_data_with_a_broken_file: Path) -> None:
    out, stdout, stderr = report_file
    assert f"report: {out}" in stdout
    # warnings on the console: the broken file, and 13 images are far too few for any accuracy claim
    assert "warning: 1 unreadable file(s) in the evaluated data were skipped" in stderr and "truncated.jpg" in stderr
    assert "warning: the evaluated data" in stderr and "95% interval" in stderr
    metrics = json.loads((out.parent / "metrics.json").read_text())
    model = load_bundle(trained_run.run_dir).model
    evaluation = evaluate(model, test_data_with_a_broken_file)
    expected, skipped = evaluation.metrics, evaluation.skipped
    assert metrics["accuracy"] == pytest.approx(expected.accuracy) and metrics["count"] == expected.count == 13
    for name, figures in expected.per_class.items():
        assert metrics["per_class"][name] == pytest.approx(figures)
    assert metrics["confusion_matrix"]["matrix"] == expected.confusion_matrix
    assert metrics["skipped"] == [str(p) for p in skipped]
    lo, hi = metrics["accuracy_ci95"]
    assert 0 <= lo <= metrics["accuracy"] <= hi <= 1
    assert sum(b["count"] for b in metrics["calibration"]["bins"]) == 13
    worst = metrics["most_confident_mistakes"][0]
    assert Path(worst["path"]).name == "mislabelled.jpg" and (worst["true"], worst["predicted"]) == ("cat", "coffee")
    assert {w["kind"] for w in metrics["warnings"]} >= {"skipped", "small-set"}
    page = out.read_text()
    for message in (w["message"] for w in metrics["warnings"]):
        assert message.replace("'", "&#x27;") in page  # every console warning is at the top of the page too
    assert page.index("id='warnings'") < page.index("id='summary'")


def test_report_is_self_contained(report_file: tuple[Path, str, str]) -> None:
    page = report_file[0].read_text()
    sources = re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]*)""", page)
    assert len(sources) >= 3 and all(s.startswith("data:image/") for s in sources)
    assert "http://" not in page and "https://" not in page and "<script" not in page
    for section in SECTIONS:
        assert f"<section id='{section}'>" in page


def test_class_names_and_paths_are_escaped() -> None:
    names = ["<script>alert(1)</script>", "a&b"]
    labels = np.array([0, 1, 1, 0])
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    meta = {"class_names": names, "history": []}
    page = render_html(build_report(meta, labels, probs, [Path(f"<{i}>.png") for i in range(4)], [], "x"), "t")
    assert "<script>" not in page and "&lt;script&gt;" in page and "a&amp;b" in page
    assert "image unavailable" in page  # the mistake's file is gone: a placeholder, not a crash


@pytest.mark.slow
def test_train_with_report_evaluates_the_validation_split(tmp_path: Path, photo_data: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    data = Path(shutil.copytree(photo_data, tmp_path / "data"))
    (data / "coffee" / "page.jpg").write_text("<html>404</html>")
    out = tmp_path / "run"
    code, stdout, stderr = _cli(capsys, "train", str(data), "--out", str(out), "--strategy", "frozen",
                                "--probe-epochs", "0", "--epochs", "1", "--batch-size", "8", "--report")
    assert code == 0, stderr
    assert f"report: {out / 'report.html'}" in stdout
    assert "unreadable file(s) in the training data were skipped" in stderr and "page.jpg" in stderr
    metrics = json.loads((out / "metrics.json").read_text())
    meta = json.loads((out / "model.json").read_text())
    assert metrics["evaluated_on"] == f"the validation split of {data}"
    assert metrics["count"] == meta["data"]["validation"] == meta["metrics"]["validation"]["count"]
    assert metrics["accuracy"] == pytest.approx(meta["metrics"]["validation"]["accuracy"])
    assert sum(meta["data"]["class_counts"]["train"].values()) == meta["data"]["train"]


def test_report_out_must_be_a_file(trained_run: TrainResult, photo_test_data: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, _, stderr = _cli(capsys, "report", str(trained_run.run_dir), str(photo_test_data), "--out", str(tmp_path))
    assert code == 2 and stderr.count("\n") == 1 and "is a folder" in stderr and "report.html" in stderr


def _chromium() -> str | None:
    return next((found for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
                 if (found := shutil.which(name))), None)


_IMAGES_LOADED = """<script>window.addEventListener('load', () => {
  document.body.setAttribute('data-image-widths', [...document.images].map(i => i.naturalWidth).join(','));
  document.body.setAttribute('data-section-heights',
    [...document.querySelectorAll('section')].map(s => s.id + ':' + s.getBoundingClientRect().height).join(','));
});</script>"""


@pytest.mark.skipif(_chromium() is None, reason="Chromium is not installed (Debian: apt-get install chromium; "
                                                "the CI script .ci/run installs it)")
@pytest.mark.slow
def test_report_renders_in_headless_chromium(report_file: tuple[Path, str, str], tmp_path: Path) -> None:
    browser = _chromium()
    assert browser is not None
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
             "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"]
    shot = tmp_path / "report.png"
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1200,2400", report_file[0].as_uri()],
                   capture_output=True, timeout=120, check=True)
    with Image.open(shot) as image:
        assert image.size == (1200, 2400)
        rgb = np.asarray(image.convert("RGB"))
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 500  # text, plots and photos, not a blank or error page
    assert (rgb[:400] < 100).all(axis=2).mean() > 0.002  # dark text near the top (title, warnings)
    # The DOM as Chromium rendered it, with a probe script added to a copy: every image decoded, sections laid out.
    probed = tmp_path / "probed.html"
    probed.write_text(report_file[0].read_text().replace("</body>", _IMAGES_LOADED + "</body>"))
    dom = subprocess.run([*flags, "--dump-dom", probed.as_uri()], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    for section in SECTIONS:
        assert f'id="{section}"' in dom
    widths = re.search(r'data-image-widths="([^"]*)"', dom)
    assert widths is not None, "the page's load event never fired"
    decoded = [int(w) for w in widths.group(1).split(",")]
    assert len(decoded) >= 4 and all(w > 0 for w in decoded)  # curves, confusion, calibration, thumbnails
    heights = dict(item.split(":") for item in re.search(r'data-section-heights="([^"]*)"', dom).group(1).split(","))  # type: ignore[union-attr]
    assert set(heights) == set(SECTIONS) and all(float(h) > 20 for h in heights.values())
