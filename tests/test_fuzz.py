"""A few seconds of the fuzz targets (`fuzz_targets.py`) in every test run; `benchmarks/fuzz.py` runs them longer."""

from __future__ import annotations

import pytest
from fuzz_targets import TARGETS, run_for


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_fuzz_briefly(target: str) -> None:
    assert run_for(target, seconds=4, batch=10) >= 10
