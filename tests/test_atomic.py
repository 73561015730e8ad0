"""Atomic writes: the new file gets the mode any new file would get, and writing never touches the process's
umask (a process-wide setting another thread may be reading at that moment)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest

from transferkit.io.atomic import atomic_write_bytes, atomic_write_text, atomic_writer, remove_stale_temporaries


@pytest.fixture
def umask_027() -> Iterator[None]:
    """Run the test under umask 0o027 (set here, in the test, not by the code under test)."""
    previous = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("umask_027")
def test_new_file_mode_follows_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "out.bin"
    atomic_write_bytes(path, b"data")
    assert path.read_bytes() == b"data"
    assert _mode(path) == 0o640  # 0o666 & ~0o027, as open() would have made it; not mkstemp's 0o600


@pytest.mark.usefixtures("umask_027")
def test_writing_never_changes_the_umask(tmp_path: Path) -> None:
    """Asserting an absence: any call to os.umask (even one that sets it back at once) fails the write."""
    with mock.patch.object(os, "umask", side_effect=AssertionError("os.umask called")):
        atomic_write_bytes(tmp_path / "a.bin", b"a")
        atomic_write_text(tmp_path / "b.txt", "b")
        with atomic_writer(tmp_path / "c.bin") as tmp:
            tmp.write_bytes(b"c")
    assert _mode(tmp_path / "c.bin") == 0o640


def test_str_paths_are_accepted(tmp_path: Path) -> None:
    atomic_write_bytes(str(tmp_path / "a.bin"), b"a")
    atomic_write_text(str(tmp_path / "sub" / "b.txt"), "b")
    with atomic_writer(str(tmp_path / "c.bin")) as tmp:
        tmp.write_bytes(b"c")
    assert (tmp_path / "a.bin").read_bytes() == b"a"
    assert (tmp_path / "sub" / "b.txt").read_text() == "b"
    assert (tmp_path / "c.bin").read_bytes() == b"c"
    assert remove_stale_temporaries(str(tmp_path)) == []


def test_temporary_is_hidden_beside_the_target_and_removed_on_failure(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"), atomic_writer(tmp_path / "model.bin") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".model.bin.") and tmp.name.endswith(".tmp")
        assert tmp.exists()
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_stale_temporaries_left_by_a_kill_are_removed(tmp_path: Path) -> None:
    writer = atomic_writer(tmp_path / "model.bin")
    tmp = writer.__enter__()  # a SIGKILL here: neither the rename nor the clean-up runs
    tmp.write_bytes(b"half")
    (tmp_path / "keep.bin").write_bytes(b"k")
    assert remove_stale_temporaries(tmp_path) == [tmp]
    assert [p.name for p in tmp_path.iterdir()] == ["keep.bin"]
