"""`transferkit serve` in this process (FastAPI's TestClient over the real app and the tiny trained run): every
endpoint, every bad-input status (and the server answering after each), the API key, CORS, dynamic batching, and
predictions equal to `transferkit predict --json` for the same images."""

from __future__ import annotations

import contextlib
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from bad_inputs import CASES, SKIPPED, USED
from fastapi.testclient import TestClient
from PIL import Image

from transferkit.cli.main import main
from transferkit.serve.app import create_app
from transferkit.serve.classifier import Classifier
from transferkit.serve.settings import ServeSettings
from transferkit.serve.torch_classifier import TorchClassifier
from transferkit.training.run import TrainResult


@pytest.fixture(scope="module")
def classifier(trained_run: TrainResult) -> TorchClassifier:
    return TorchClassifier.load(trained_run.run_dir)


def _wait_ready(client: TestClient, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/health").status_code != 200:
        assert time.monotonic() < deadline, client.get("/health").json()
        time.sleep(0.02)


@contextlib.contextmanager
def _serving(classifier: Classifier, **settings: object) -> Iterator[TestClient]:
    app = create_app(lambda: classifier, ServeSettings(**settings))  # type: ignore[arg-type]
    with TestClient(app) as client:
        _wait_ready(client)
        yield client


@pytest.fixture(scope="module")
def client(classifier: TorchClassifier) -> Iterator[TestClient]:
    with _serving(classifier, max_upload_mb=0.25, max_files=4) as c:
        yield c


def _files(*paths: Path) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("file", (p.name, p.read_bytes(), "application/octet-stream")) for p in paths]


def _metric(client: TestClient, line_start: str) -> float:
    text = client.get("/metrics").text
    found = [line.split()[-1] for line in text.splitlines() if line.startswith(line_start)]
    assert found, (line_start, text)
    return float(found[0])


def _still_answers(client: TestClient, image: Path) -> None:
    assert client.get("/health").status_code == 200
    response = client.post("/predict", files=_files(image))
    assert response.status_code == 200 and response.json()[0]["predictions"]


def test_predict_equals_the_predict_command(client: TestClient, trained_run: TrainResult, photo_test_data: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    images = sorted((photo_test_data / "cat").iterdir())[:2] + sorted((photo_test_data / "coffee").iterdir())[:2]
    assert main(["predict", str(trained_run.run_dir), *map(str, images), "--top", "3", "--json"]) == 0
    expected = json.loads(capsys.readouterr().out)
    response = client.post("/predict?top=3", files=_files(*images))
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    served = response.json()
    assert [row["path"] for row in served] == [p.name for p in images]
    for got, want in zip(served, expected):
        assert set(got) == set(want) == {"path", "predictions"}
        assert [p["label"] for p in got["predictions"]] == [p["label"] for p in want["predictions"]]
        assert [p["probability"] for p in got["predictions"]] == pytest.approx(
            [p["probability"] for p in want["predictions"]], abs=1e-4)
    raw = client.post("/predict?top=3", content=images[0].read_bytes(), headers={"Content-Type": "image/jpeg"})
    assert raw.status_code == 200 and raw.json()[0]["path"] == "-"
    assert [p["label"] for p in raw.json()[0]["predictions"]] == [p["label"] for p in served[0]["predictions"]]
    assert [p["probability"] for p in raw.json()[0]["predictions"]] == pytest.approx(
        [p["probability"] for p in served[0]["predictions"]], abs=1e-5)


def test_top_and_default_top(client: TestClient, photo_test_data: Path) -> None:
    image = photo_test_data / "cat" / "00.jpg"
    assert len(client.post("/predict", files=_files(image)).json()[0]["predictions"]) == 3  # --top default
    assert len(client.post("/predict?top=1", files=_files(image)).json()[0]["predictions"]) == 1
    assert len(client.post("/predict?top=99", files=_files(image)).json()[0]["predictions"]) == 3  # all classes
    for bad in ("0", "-1", "two"):
        response = client.post(f"/predict?top={bad}", files=_files(image))
        assert response.status_code == 400 and "top" in response.json()["error"]


def test_health_info_metrics_and_page(client: TestClient, trained_run: TrainResult) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/info").json()
    meta = json.loads((trained_run.run_dir / "model.json").read_text())
    assert info["classes"] == meta["class_names"] == ["astronaut", "cat", "coffee"]
    assert info["backbone"]["name"] == "efficientnet_lite0" and info["engine"] == "pytorch"
    assert info["preprocessing"]["input_size"] == info["input_size"] == 224
    assert info["bundle_sha256"] == meta["weights_sha256"]
    assert info["versions"]["transferkit"] and info["versions"]["torch"]
    assert info["server"]["max_files"] == 4
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = metrics.text
    for name in ("transferkit_http_requests_total", "transferkit_errors_total", "transferkit_batch_size_bucket",
                 "transferkit_request_duration_seconds_bucket", "transferkit_model_ready 1"):
        assert name in text
    assert 'transferkit_http_requests_total{method="GET",path="/health",status="200"}' in text
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    html = page.text
    assert 'type="file"' in html and "<style>" in html and "<script>" in html
    assert "http://" not in html and "https://" not in html  # no font, CDN or analytics: nothing leaves
    assert not any(tag in html for tag in ("<link rel=\"stylesheet\"", "<script src", "@import", "url("))


def test_unknown_paths_and_methods_are_json(client: TestClient) -> None:
    assert client.get("/nope").status_code == 404 and "error" in client.get("/nope").json()
    response = client.get("/predict")
    assert response.status_code == 405 and "error" in response.json()
    assert client.get("/docs").status_code == 404  # no schema browser that would load assets from a CDN


BAD_FILES = [c for c in CASES if c.kind == "file" and c.expect.outcome == SKIPPED and not c.unprivileged]
ODD_BUT_VALID = [c for c in CASES if c.kind == "file" and c.expect.outcome == USED]


@pytest.mark.parametrize("case", BAD_FILES, ids=lambda c: c.name)
def test_bad_image_is_400_and_the_server_goes_on(case, client: TestClient, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                 photo_test_data: Path) -> None:
    (tmp_path / "class").mkdir()
    made = case.make(tmp_path / "class")
    if made.is_symlink() or not made.is_file():
        pytest.skip("a file-system oddity (symlink, pipe), not something an upload can carry")
    response = client.post("/predict", files=_files(made))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert case.expect.fragment in error and made.name in error and "\n" not in error
    _still_answers(client, photo_test_data / "cat" / "00.jpg")


@pytest.mark.parametrize("case", ODD_BUT_VALID, ids=lambda c: c.name)
def test_odd_but_valid_images_are_classified(case, client: TestClient, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "class").mkdir()
    made = case.make(tmp_path / "class")
    if made.is_symlink() or not made.is_file():
        pytest.skip("not a single regular file")
    response = client.post("/predict", files=_files(made))
    assert response.status_code == 200, response.text
    assert len(response.json()[0]["predictions"]) == 3


def test_one_bad_file_fails_the_request_and_names_it(client: TestClient, photo_test_data: Path,
                                                     tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes((photo_test_data / "cat" / "00.jpg").read_bytes()[:300])
    response = client.post("/predict", files=_files(photo_test_data / "cat" / "00.jpg", broken))
    assert response.status_code == 400 and "broken.jpg" in response.json()["error"]


def test_raw_body_bad_image_is_400(client: TestClient, photo_test_data: Path) -> None:
    response = client.post("/predict", content=b"<html>404</html>", headers={"Content-Type": "image/png"})
    assert response.status_code == 400 and "not an image" in response.json()["error"]
    response = client.post("/predict", content=b"", headers={"Content-Type": "image/png"})
    assert response.status_code == 400 and "empty" in response.json()["error"]
    _still_answers(client, photo_test_data / "cat" / "00.jpg")


def test_too_large_is_413(client: TestClient, photo_test_data: Path) -> None:
    big = np.random.default_rng(0).bytes(300 * 1024)  # over the 0.25 MiB limit of this client
    response = client.post("/predict", content=big, headers={"Content-Type": "image/png"})
    assert response.status_code == 413 and "--max-upload-mb" in response.json()["error"]
    response = client.post("/predict", files=[("file", ("big.png", big, "image/png"))])
    assert response.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the body is counted as it arrives
        for _ in range(10):
            yield big[:64 * 1024]

    response = client.post("/predict", content=chunks(), headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 413
    _still_answers(client, photo_test_data / "cat" / "00.jpg")


def test_too_many_files_is_413(client: TestClient, photo_test_data: Path) -> None:
    images = sorted((photo_test_data / "cat").iterdir())
    assert len(client.post("/predict", files=_files(*images[:4])).json()) == 4  # max_files=4
    response = client.post("/predict", files=_files(*images[:4], images[0]))
    assert response.status_code == 413 and "--max-files" in response.json()["error"]
    _still_answers(client, images[0])


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/json", "application/x-www-form-urlencoded"])
def test_wrong_content_type_is_415(client: TestClient, content_type: str | None, photo_test_data: Path) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post("/predict", content=(photo_test_data / "cat" / "00.jpg").read_bytes(), headers=headers)
    assert response.status_code == 415 and "multipart/form-data" in response.json()["error"]
    _still_answers(client, photo_test_data / "cat" / "00.jpg")


def test_malformed_multipart_is_400(client: TestClient) -> None:
    response = client.post("/predict", content=b"--x\r\nnot a part", headers={
        "Content-Type": "multipart/form-data; boundary=x"})
    assert response.status_code == 400
    response = client.post("/predict", data={"other": "field"}, files=[("notfile", ("a.png", b"x", "image/png"))])
    assert response.status_code == 400 and "'file'" in response.json()["error"]
    response = client.post("/predict", content=b"x", headers={"Content-Type": "multipart/form-data"})
    assert response.status_code == 400 and "boundary" in response.json()["error"]


def test_errors_are_counted(client: TestClient) -> None:
    before = _metric(client, 'transferkit_errors_total{kind="unsupported_type"}') if "unsupported_type" in \
        client.get("/metrics").text else 0
    client.post("/predict", content=b"x", headers={"Content-Type": "text/plain"})
    assert _metric(client, 'transferkit_errors_total{kind="unsupported_type"}') == before + 1
    assert _metric(client, 'transferkit_http_requests_total{method="POST",path="/predict",status="415"}') >= 1


def test_api_key(classifier: TorchClassifier, photo_test_data: Path) -> None:
    image = photo_test_data / "cat" / "00.jpg"
    with _serving(classifier, api_key="s3cret") as client:
        assert client.get("/health").status_code == 200  # open, for load balancers
        assert client.get("/").status_code == 200  # the page asks for the key when the API says 401
        for path in ("/info", "/metrics"):
            assert client.get(path).status_code == 401
        response = client.post("/predict", files=_files(image))
        assert response.status_code == 401 and "API key" in response.json()["error"]
        assert response.headers["www-authenticate"] == "Bearer"
        assert client.post("/predict", files=_files(image), headers={"X-API-Key": "wrong"}).status_code == 401
        assert client.post("/predict", files=_files(image), headers={"Authorization": "Bearer s3cre"}).status_code \
            == 401
        assert client.post("/predict", files=_files(image), headers={"X-API-Key": "s3cret"}).status_code == 200
        assert client.post("/predict", files=_files(image),
                           headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert client.get("/info", headers={"X-API-Key": "s3cret"}).status_code == 200


def test_cors_only_when_asked(classifier: TorchClassifier, client: TestClient) -> None:
    origin = {"Origin": "https://example.org"}
    assert "access-control-allow-origin" not in client.get("/health", headers=origin).headers
    preflight = {**origin, "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in client.options("/predict", headers=preflight).headers
    with _serving(classifier, cors=("https://example.org",)) as cors_client:
        assert cors_client.get("/health", headers=origin).headers["access-control-allow-origin"] == \
            "https://example.org"
        other = cors_client.get("/health", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_concurrent_requests_share_a_batch(classifier: TorchClassifier, photo_test_data: Path) -> None:
    images = sorted(p for p in photo_test_data.rglob("*") if p.is_file())
    with _serving(classifier, max_wait_ms=100, max_batch=8) as client:
        def post(path: Path) -> list[dict[str, object]]:
            response = client.post("/predict", files=_files(path))
            assert response.status_code == 200
            return response.json()  # type: ignore[no-any-return]

        with ThreadPoolExecutor(8) as pool:
            rows = list(pool.map(post, images))
        assert [r[0]["path"] for r in rows] == [p.name for p in images]
        assert _metric(client, "transferkit_batch_size_max") > 1
        assert _metric(client, "transferkit_batch_size_max") <= 8
        assert _metric(client, "transferkit_images_total") == len(images) + 1  # and the warm-up
    singles = [classifier.predict(classifier.preprocess(p.read_bytes())[None])[0] for p in images[:3]]
    for row, single in zip(rows, singles):  # batched or alone, the same numbers
        top = row[0]["predictions"][0]  # type: ignore[index]
        assert top["probability"] == pytest.approx(float(single.max()), abs=1e-5)


def _loader(gate: threading.Event, classifier: Classifier) -> Callable[[], Classifier]:
    def load() -> Classifier:
        assert gate.wait(30)
        return classifier
    return load


def test_health_is_503_until_the_model_is_loaded(classifier: TorchClassifier, photo_test_data: Path) -> None:
    gate = threading.Event()
    app = create_app(_loader(gate, classifier), ServeSettings())
    with TestClient(app) as client:
        response = client.get("/health")
        assert response.status_code == 503 and response.json()["status"] == "loading"
        assert client.post("/predict", files=_files(photo_test_data / "cat" / "00.jpg")).status_code == 503
        assert client.get("/info").status_code == 503
        assert client.get("/").status_code == 200 and client.get("/metrics").status_code == 200
        assert "transferkit_model_ready 0" in client.get("/metrics").text
        gate.set()
        _wait_ready(client)
        assert client.post("/predict", files=_files(photo_test_data / "cat" / "00.jpg")).status_code == 200


def test_a_model_that_fails_to_load_says_why(tmp_path: Path) -> None:
    told: list[BaseException] = []

    def load() -> Classifier:
        from transferkit.serve.classifier import load_classifier
        return load_classifier(tmp_path)  # a folder without a bundle

    with TestClient(create_app(load, ServeSettings(), on_load_failed=told.append)) as client:
        deadline = time.monotonic() + 30
        while not told:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        response = client.get("/health")
        assert response.status_code == 503 and response.json()["status"] == "failed"
        assert "no model bundle" in response.json()["error"]


def test_decoding_matches_the_predict_pipeline(classifier: TorchClassifier, photo_test_data: Path) -> None:
    """The upload path (bytes) gives the same pixels as the file path `predict` reads."""
    from transferkit.data.images import load_image
    from transferkit.data.transforms import eval_transform

    p = classifier.preprocessing
    for path in sorted(photo_test_data.rglob("*.*"))[:4]:
        want = eval_transform(p, normalise=False)(load_image(path, p.resize_size)).permute(1, 2, 0).numpy()
        got = classifier.preprocess(path.read_bytes(), path.name)
        assert got.dtype == np.uint8 and got.shape == (224, 224, 3) and np.array_equal(got, want)
    buffer = io.BytesIO()
    Image.new("RGB", (640, 80), (200, 10, 10)).save(buffer, format="PNG")
    assert classifier.preprocess(buffer.getvalue()).shape == (224, 224, 3)
