"""The server's limits and switches as one frozen value: what `transferkit serve`'s flags map onto. Plain data,
no web framework, so the command line can build and check it before anything heavy is imported."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ServeSettings"]

MIB = 1024 * 1024


@dataclass(frozen=True)
class ServeSettings:
    """`max_wait_ms`: how long the first waiting image waits for others to share its batch; `max_upload_mb`:
    the largest request body (MiB); `max_files`: the most images in one request; `api_key`: when set, every
    endpoint but /health and the page wants it; `cors`: origins allowed to call from a browser (none: no CORS
    headers); `top`: classes per image unless the request asks (?top=K)."""

    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_upload_mb: float = 10.0
    max_files: int = 64
    api_key: str | None = None
    cors: tuple[str, ...] = ()
    top: int = 3

    def __post_init__(self) -> None:
        for name, value, low in (("max_batch", self.max_batch, 1), ("max_files", self.max_files, 1),
                                 ("top", self.top, 1)):
            if value < low:
                raise ValueError(f"{name} must be {low} or more, got {value}")
        if self.max_wait_ms < 0 or self.max_upload_mb <= 0:
            raise ValueError(f"max_wait_ms must be 0 or more and max_upload_mb more than 0, got {self.max_wait_ms} "
                             f"and {self.max_upload_mb}")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("api_key must not be empty")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MIB)

    @property
    def max_wait(self) -> float:
        return self.max_wait_ms / 1000.0
