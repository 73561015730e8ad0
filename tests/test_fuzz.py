"""A few seconds of the fuzz targets (`fuzz_targets.py`) in every test run; `benchmarks/fuzz.py` runs them longer."""

from __future__ import annotations

import struct
import time

import pytest
from fuzz_targets import SEEDS, TARGETS, check_image_bytes, fuzz_for, run_for
from hypothesis import strategies as st


@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.slow
def test_fuzz_briefly(target: str) -> None:
    start = time.monotonic()
    assert run_for(target, seconds=4, batch=100) >= 10
    assert time.monotonic() - start < 6


def test_the_clock_is_read_inside_a_round() -> None:
    """A round of 50 examples of 0.2 s each would take 10 s: it is cut short when time is up."""
    start = time.monotonic()
    tried = fuzz_for(st.integers(), lambda _: time.sleep(0.2), seconds=1, batch=50)
    assert time.monotonic() - start < 2.5
    assert 3 <= tried <= 7


def test_a_failure_found_in_time_is_still_shrunk_after_it() -> None:
    """The clock never cuts shrinking short: the failure is reported on its simplest example (10), not on a
    random one, and not as hypothesis' 'flaky' error (an example that failed, then passed unchecked)."""

    def slow_check(n: int) -> None:
        time.sleep(0.01)
        if n >= 10:
            raise ValueError(f"n={n}")

    with pytest.raises(ValueError, match=r"^n=10\b"):
        fuzz_for(st.integers(0, 10**6), slow_check, seconds=0.05, batch=1000)


def _tiff_claiming_height(height: int) -> bytes:
    """A fuzz seed (a 10x12 TIFF) with only its ImageLength tag changed: a file of a few hundred bytes that
    claims 10 x `height` pixels. One byte flipped by the fuzzer makes such a file."""
    buffer = bytearray(next(data for fmt, data in SEEDS if fmt == "TIFF"))
    assert buffer[:4] == b"II*\x00"  # little-endian TIFF: the first IFD's offset, then its 12-byte entries
    ifd = struct.unpack_from("<I", buffer, 4)[0]
    for at in range(ifd + 2, ifd + 2 + 12 * struct.unpack_from("<H", buffer, ifd)[0], 12):
        tag, kind = struct.unpack_from("<HH", buffer, at)
        if tag == 257:  # ImageLength, stored as a LONG
            assert kind == 4
            struct.pack_into("<I", buffer, at + 8, height)
    return bytes(buffer)


def test_one_example_cannot_take_seconds() -> None:
    """Files whose header claims tens of millions of pixels (under Pillow's 89M-pixel limit) took 8-10 s each
    on an idle machine, several times that on a busy one: the fuzzers decode under a small pixel budget."""
    data = _tiff_claiming_height(6_553_612)
    start = time.monotonic()
    check_image_bytes("TIFF", data)
    assert time.monotonic() - start < 1
