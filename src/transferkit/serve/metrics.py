"""The server's numbers in the Prometheus text exposition format (version 0.0.4), written by hand: a handful of
counters and histograms do not need a client library.

Updated from the event loop and the inference thread, hence the lock.
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from collections.abc import Sequence

__all__ = ["BATCH_BUCKETS", "LATENCY_BUCKETS", "CONTENT_TYPE", "Histogram", "ServerMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Histogram:
    """Cumulative buckets, a sum and a count, as Prometheus expects them."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0
        self.max = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1
        self.max = max(self.max, value)

    def lines(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        out, running = [], 0
        for bound, count in zip([*map(_number, self.bounds), "+Inf"], self.counts):
            running += count
            out.append(f'{name}_bucket{{{labels}{sep}le="{bound}"}} {running}')
        braces = f"{{{labels}}}" if labels else ""
        return [*out, f"{name}_sum{braces} {_number(self.sum)}", f"{name}_count{braces} {self.count}"]


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class ServerMetrics:
    """Requests by path and status, errors by kind, request latency, batch sizes and inference time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, str, int]] = Counter()
        self.errors: Counter[str] = Counter()
        self.latency: dict[str, Histogram] = {}
        self.batch_size = Histogram(BATCH_BUCKETS)
        self.inference_seconds = Histogram(LATENCY_BUCKETS)
        self.images = 0
        self.ready = False

    def record_request(self, method: str, path: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(method, path, status)] += 1
            self.latency.setdefault(path, Histogram(LATENCY_BUCKETS)).observe(seconds)

    def record_error(self, kind: str) -> None:
        with self._lock:
            self.errors[kind] += 1

    def record_batch(self, size: int, seconds: float) -> None:
        with self._lock:
            self.batch_size.observe(size)
            self.inference_seconds.observe(seconds)
            self.images += size

    def render(self) -> str:
        with self._lock:
            lines = [
                "# HELP transferkit_model_ready 1 once the model is loaded and warmed up.",
                "# TYPE transferkit_model_ready gauge",
                f"transferkit_model_ready {int(self.ready)}",
                "# HELP transferkit_http_requests_total HTTP requests answered, by method, path and status.",
                "# TYPE transferkit_http_requests_total counter",
                *(f'transferkit_http_requests_total{{method="{m}",path="{_escape(p)}",status="{s}"}} {n}'
                  for (m, p, s), n in sorted(self.requests.items())),
                "# HELP transferkit_errors_total Requests refused or failed, by kind.",
                "# TYPE transferkit_errors_total counter",
                *(f'transferkit_errors_total{{kind="{_escape(k)}"}} {n}' for k, n in sorted(self.errors.items())),
                "# HELP transferkit_request_duration_seconds Time from request to response, by path.",
                "# TYPE transferkit_request_duration_seconds histogram",
            ]
            for path, histogram in sorted(self.latency.items()):
                lines += histogram.lines("transferkit_request_duration_seconds", f'path="{_escape(path)}"')
            lines += [
                "# HELP transferkit_batch_size Images per inference batch (dynamic batching).",
                "# TYPE transferkit_batch_size histogram",
                *self.batch_size.lines("transferkit_batch_size"),
                "# HELP transferkit_inference_seconds Time of one batch's inference.",
                "# TYPE transferkit_inference_seconds histogram",
                *self.inference_seconds.lines("transferkit_inference_seconds"),
                "# HELP transferkit_images_total Images classified.",
                "# TYPE transferkit_images_total counter",
                f"transferkit_images_total {self.images}",
                "# HELP transferkit_batch_size_max The largest batch so far.",
                "# TYPE transferkit_batch_size_max gauge",
                f"transferkit_batch_size_max {_number(self.batch_size.max)}",
            ]
        return "\n".join(lines) + "\n"
