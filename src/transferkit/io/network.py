"""The one bounded connect that tells online from offline before a download, and quiet hub retries: shared by
the image weights (`backbones.weights`) and the text encoders (`text.weights`). Nothing here goes further than
one TCP connect."""

from __future__ import annotations

import logging
import socket
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["HUB_RETRY_LOGGER", "PROBE_TIMEOUT_S", "connect_target", "quiet_hub_retries", "reachable"]

PROBE_TIMEOUT_S = 1.5  # the one connect that tells online from offline before a download
HUB_RETRY_LOGGER = "huggingface_hub.utils._http"  # logs each of the hub's five retries


def connect_target(url: str) -> tuple[str, int]:
    """The host and port a download of `url` opens first: the proxy's when one is configured for it."""
    parts = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection towards `url` opens within `timeout` seconds.

    Why: offline, the hub retries five times with backoff (~30 s, a log line each) before it gives up, and
    urllib can wait minutes on a route that drops packets; one bounded connect answers at once. It runs in a
    daemon thread because the name look-up (getaddrinfo) takes no timeout of its own."""
    address = connect_target(url)
    answer: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection(address, timeout=timeout).close()
            answer.append(True)
        except OSError:
            answer.append(False)

    thread = threading.Thread(target=connect, name="transferkit-reachable", daemon=True)
    thread.start()
    thread.join(timeout)
    return answer == [True]


class _ThisThreadOnly(logging.Filter):
    """Drops the records one thread logs, so that quieting a download leaves other threads' logs alone."""

    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread != self.thread


@contextmanager
def quiet_hub_retries() -> Iterator[None]:
    """Hide the hub's per-retry warnings during our download: a failure ends in our one line that says why."""
    logger, quiet = logging.getLogger(HUB_RETRY_LOGGER), _ThisThreadOnly()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)
