"""`transferkit serve` on a text model: the app in-process over an exported .onnx (ONNX Runtime + tokenizers) and
over the run folder (its graph exported into the cache once; PyTorch when asked), good and bad requests, dynamic
batching of token rows of different lengths, and the page's text box in headless Chromium (skipped where Chromium
or Playwright is absent)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from text_models import CHECK, LONG

from transferkit.cli.main import main
from transferkit.serve.app import create_app
from transferkit.serve.batcher import Batcher
from transferkit.serve.classifier import load_classifier
from transferkit.serve.settings import ServeSettings


@pytest.fixture(scope="module")
def models(text_export: tuple[Path, Path, Path, str]) -> tuple[Path, Path]:
    """(the text run of the session, its exported model.onnx)."""
    return text_export[0], text_export[1]


@contextlib.contextmanager
def _client(model: Path, settings: ServeSettings = ServeSettings(max_files=4), engine: str = "auto"
            ) -> Iterator[TestClient]:
    with TestClient(create_app(lambda: load_classifier(model, engine), settings)) as client:
        for _ in range(600):
            if client.get("/health").status_code == 200:
                break
            time.sleep(0.1)
        yield client


def _predicted(run: Path, texts: list[str], capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    assert main(["predict", str(run), *texts, "--json"]) == 0
    return list(json.loads(capsys.readouterr().out))


@pytest.mark.parametrize(("which", "engine"), [("onnx", "auto"), ("run", "auto"), ("run", "torch")])
def test_predict_gives_the_json_of_predict(which: str, engine: str, models: tuple[Path, Path],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """An exported file and a run (its graph exported into the cache once; PyTorch when asked) answer alike."""
    run, onnx = models
    expected = _predicted(run, CHECK[:4], capsys)
    with _client(onnx if which == "onnx" else run, engine=engine) as client:
        info = client.get("/info").json()
        response = client.post("/predict", json={"texts": CHECK[:4]})
    assert info["modality"] == "text" and info["classes"] == ["ham", "spam"] and info["max_tokens"] == 256
    assert info["engine"] == ("pytorch" if engine == "torch" else "onnxruntime") and "input_size" not in info
    assert info["model"] == str(onnx if which == "onnx" else run)
    if which == "run" and engine == "auto":
        from transferkit.inference.text_graph import cached_text_graph

        assert cached_text_graph(run) is not None  # the next start needs no torch
    assert response.status_code == 200
    body = response.json()
    assert [b["text"] for b in body] == CHECK[:4]  # the long text comes back whole; the model read its window
    for got, want in zip(body, expected):
        assert set(got) == set(want)  # type: ignore[arg-type]
        assert [p["label"] for p in got["predictions"]] == [p["label"] for p in want["predictions"]]  # type: ignore
        assert np.allclose([p["probability"] for p in got["predictions"]],
                           [p["probability"] for p in want["predictions"]], atol=1e-4)  # type: ignore


BAD_REQUESTS: list[tuple[dict[str, object], int, str]] = [
    ({"json": {"texts": ["a"] * 5}}, 413, "at most 4 per request"),
    ({"json": {"texts": ["fine", "  "]}}, 400, "texts[1] is empty"),
    ({"json": {"texts": ["fine", 3]}}, 400, "texts[1] is int, not a string"),
    ({"json": {"texts": []}}, 400, "non-empty list"),
    ({"json": ["a text"]}, 400, "non-empty list"),
    ({"content": b"{not json", "headers": {"Content-Type": "application/json"}}, 400, "not JSON"),
    ({"content": b"a text", "headers": {"Content-Type": "text/plain"}}, 415, "application/json"),
    ({"files": {"file": ("a.png", b"\x89PNG", "image/png")}}, 415, "this is a text model"),
]


def test_bad_requests_are_one_line_errors_and_cost_nothing_else(models: tuple[Path, Path]) -> None:
    with _client(models[1]) as client:
        for request_kwargs, status, words in BAD_REQUESTS:
            response = client.post("/predict", **request_kwargs)  # type: ignore[arg-type]
            assert response.status_code == status and words in response.json()["error"], (request_kwargs, response)
        assert client.get("/health").status_code == 200
        assert client.post("/predict", json={"texts": [LONG]}).status_code == 200  # too long: cut, not refused
        metrics = client.get("/metrics").text
    for status in (400, 413, 415):
        count = sum(s == status for _, s, _ in BAD_REQUESTS)
        assert f'transferkit_http_requests_total{{method="POST",path="/predict",status="{status}"}} {count}' in metrics


def test_batched_rows_of_different_lengths_match_one_at_a_time(models: tuple[Path, Path]) -> None:
    classifier = load_classifier(models[1])
    rows, cut = classifier.tokenize(CHECK)  # type: ignore[union-attr]
    assert cut == [text == LONG for text in CHECK] and len({len(r) for r in rows}) > 3
    alone = np.concatenate([classifier.predict([row]) for row in rows])  # type: ignore[arg-type]
    sizes: list[int] = []

    async def together() -> list[np.ndarray]:
        batcher = Batcher(classifier.predict, 8, 0.05, lambda size, _: sizes.append(size), collate=list)
        batcher.start()
        try:
            with batcher.coming(len(rows)):
                return list(await asyncio.gather(*(batcher.submit(row) for row in rows)))
        finally:
            await batcher.stop()

    batched = np.stack(asyncio.run(together()))
    assert max(sizes) > 1 and np.abs(batched - alone).max() < 1e-5


def _chromium() -> str | None:
    return next((found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None)


@pytest.mark.skipif(_chromium() is None, reason="Chromium is not installed (Debian: apt-get install chromium)")
def test_page_shows_a_text_box_in_a_real_browser(models: tuple[Path, Path], tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")
    from test_serve_process import CHROMIUM_FLAGS, _free_port, _wait_healthy

    free_port = _free_port()
    base = f"http://127.0.0.1:{free_port}"
    with (tmp_path / "server.log").open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "transferkit.cli", "serve", str(models[1]), "--port",
                                 str(free_port)], stdout=log, stderr=subprocess.STDOUT, text=True)
    requested: list[str] = []
    try:
        _wait_healthy(base, proc)
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=_chromium(), args=CHROMIUM_FLAGS)
            try:
                page = browser.new_page()
                page.on("request", lambda request: requested.append(request.url))
                page.goto(f"{base}/")
                page.wait_for_function("document.getElementById('model').textContent.includes('classes')")
                assert page.is_visible("#text") and not page.is_visible("#drop")
                page.fill("#text", CHECK[1])
                page.click("#textform button")
                page.wait_for_selector(".card[data-state='done']", timeout=60_000)
                top1 = page.get_attribute(".card", "data-top1")
                shown = page.inner_text(".card .text")
                bars = page.locator(".card li").count()
            finally:
                browser.close()
        api = httpx.post(f"{base}/predict", json={"texts": [CHECK[1]]}, timeout=30).json()
    finally:
        proc.kill()
        proc.wait(10)
    assert top1 == api[0]["predictions"][0]["label"] and shown == CHECK[1] and bars == 2
    outside = [url for url in requested if not url.startswith((f"{base}/", "data:"))]
    assert outside == [], f"the page asked for something outside the server: {outside}"
