"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never half of one."""

from __future__ import annotations

import fcntl
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_writer", "locked", "remove_stale_temporaries"]

_NAME_TRIES = 100


@contextmanager
def atomic_writer(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path in `path`'s folder to write to (by any means: numpy memmaps, exporters); on success it
    is fsynced and renamed over `path`, on failure removed."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temporary(target)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _new_temporary(path: Path) -> Path:
    """Create `.{name}.XXXXXXXX.tmp` beside `path` with mode 0o666 so the kernel applies the umask, as for any
    new file. Reading the umask would mean setting it (`os.umask` has no getter): a process-wide change that
    another thread could observe, so it is never touched."""
    for _ in range(_NAME_TRIES):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"no free temporary name beside {path} after {_NAME_TRIES} tries")


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync it, then rename it over `path`."""
    with atomic_writer(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """UTF-8 whatever the locale, so a file written on one machine reads the same on another."""
    atomic_write_bytes(path, text.encode("utf-8"))


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files that a write killed before its rename left behind (a SIGKILL skips the
    clean-up above); returns them. Only names `atomic_write_bytes` makes are touched."""
    where = Path(folder)
    stale = sorted(where.glob(".*.*.tmp")) if where.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


@contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on `folder` (via `folder/.lock`) while the block runs. Each file written above is
    whole, but a cache is several files: two processes updating one folder at once (parallel fits sharing a
    feature cache) could leave one's manifest beside the other's arrays. With the lock they take turns."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed, also if the process dies
        yield
