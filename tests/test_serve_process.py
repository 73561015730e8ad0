"""`transferkit serve` as a real process on a free port (polled until /health says ready, asked, stopped with
SIGTERM), its one-line errors, and the page in a real browser: headless Chromium (system package, driven by
Playwright) uploads an image, shows the same top-1 class as the API, and asks nothing of any other host.
The browser test is skipped, with the reason, where Chromium or Playwright is missing (`.ci/run` installs
Chromium)."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from transferkit.training.run import TrainResult

HEAVY = ("torch", "torchvision", "timm", "sklearn", "fastapi", "uvicorn")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "transferkit.cli", *args]


def _wait_healthy(base: str, proc: subprocess.Popen[str], timeout: float = 120.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        assert proc.poll() is None, f"the server exited with {proc.returncode}"
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{base}/health never said ready")


@pytest.fixture(scope="module")
def server(trained_run: TrainResult,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(_cli("serve", str(trained_run.run_dir), "--port", str(port)), stdout=out,
                                stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(base, proc)
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.slow
def test_real_server_answers_and_survives_bad_input(server: tuple[str, subprocess.Popen[str]],
                                                    photo_test_data: Path) -> None:
    base, _ = server
    image = photo_test_data / "coffee" / "00.jpg"
    response = httpx.post(f"{base}/predict", files={"file": (image.name, image.read_bytes(), "image/jpeg")},
                          timeout=30)
    assert response.status_code == 200 and response.json()[0]["predictions"][0]["label"] == "coffee"
    bad = httpx.post(f"{base}/predict", content=b"\x89PNG\r\n\x1a\n broken", headers={"Content-Type": "image/png"},
                     timeout=30)
    assert bad.status_code == 400 and "error" in bad.json()
    assert httpx.post(f"{base}/predict", content=b"x", headers={"Content-Type": "text/plain"}).status_code == 415
    assert httpx.get(f"{base}/health").status_code == 200
    assert httpx.get(f"{base}/info").json()["classes"] == ["astronaut", "cat", "coffee"]


def _chromium() -> str | None:
    return next((found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None)


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="Chromium is not installed (Debian: apt-get install chromium; "
                                                "the CI script .ci/run installs it)")
def test_page_in_a_real_browser(server: tuple[str, subprocess.Popen[str]], photo_test_data: Path,
                                tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")
    base, _ = server
    image = photo_test_data / "cat" / "01.png"
    requested: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=_chromium(), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            page.on("request", lambda request: requested.append(request.url))
            page.goto(f"{base}/")
            page.wait_for_function("document.getElementById('model').textContent.includes('classes')")
            page.set_input_files("#files", str(image))
            page.wait_for_selector(".card[data-state='done']", timeout=60_000)
            shown = page.inner_text(".card li:first-child .label")
            top1 = page.get_attribute(".card", "data-top1")
            bars = page.locator(".card li").count()
            width = page.eval_on_selector(".card li:first-child .fill", "e => e.getBoundingClientRect().width")
            page.screenshot(path=str(tmp_path / "page.png"))
        finally:
            browser.close()
    api = httpx.post(f"{base}/predict", files={"file": (image.name, image.read_bytes(), "image/png")}, timeout=30)
    assert shown == top1 == api.json()[0]["predictions"][0]["label"]
    assert bars == 3 and width > 0
    assert any(url.startswith(f"{base}/predict") for url in requested)
    outside = [url for url in requested
               if not url.startswith((f"{base}/", f"blob:{base}/", "data:"))]
    assert outside == [], f"the page asked for something outside the server: {outside}"


@pytest.mark.slow
def test_sigterm_stops_the_server_cleanly(server: tuple[str, subprocess.Popen[str]]) -> None:
    """Last in this file: it stops the shared server."""
    base, proc = server
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) in (0, -signal.SIGTERM)  # uvicorn shuts down, then re-raises the signal it caught
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{base}/health", timeout=2)


_WRAPPER = """
import json, sys
from transferkit.cli.main import main
code = main(sys.argv[2:])
with open(sys.argv[1], "w") as f:
    json.dump({"code": code, "heavy": sorted(m for m in HEAVY if m in sys.modules)}, f)
""".replace("HEAVY", repr(HEAVY))


@pytest.mark.parametrize("what", ["missing", "text-file"])
def test_a_bad_model_path_is_one_line_before_any_heavy_import(what: str, tmp_path: Path) -> None:
    model = tmp_path / "nope"
    if what == "text-file":
        model = tmp_path / "model.txt"
        model.write_text("not a model")
    result = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, "-c", _WRAPPER, str(result), "serve", str(model)], capture_output=True,
                          text=True, timeout=120)
    found = json.loads(result.read_text())
    lines = proc.stderr.strip().splitlines()
    assert found["code"] == 2 and found["heavy"] == []
    assert len(lines) == 1 and lines[0].startswith("transferkit: error:") and str(model) in lines[0]


def test_a_busy_port_is_one_line(trained_run: TrainResult) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(_cli("serve", str(trained_run.run_dir), "--port", str(port)), capture_output=True,
                              text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and f"cannot listen on 127.0.0.1:{port}" in lines[0]


@pytest.mark.parametrize("flag, value", [("--port", "0"), ("--max-batch", "0"), ("--max-wait-ms", "-1"),
                                         ("--max-upload-mb", "nan"), ("--top", "0"),
                                         ("--max-concurrency", "0"), ("--engine", "tpu")])
def test_bad_flag_values_are_one_line(flag: str, value: str, trained_run: TrainResult) -> None:
    proc = subprocess.run(_cli("serve", str(trained_run.run_dir), flag, value), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and f"argument {flag}" in proc.stderr


@pytest.mark.slow
def test_a_damaged_bundle_stops_the_server_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()  # a folder, but no model.json in it
    proc = subprocess.run(_cli("serve", str(tmp_path / "run"), "--port", str(_free_port())), capture_output=True,
                          text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "no model bundle" in lines[0], proc.stderr
