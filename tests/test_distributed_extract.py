"""`transferkit extract` under torchrun, for real: 2 processes on this CPU over gloo, against one process.

One torchrun launch covers the whole contract. Its cache folder already holds a cache of 15 of the images (made
by one process from a copy of the data with 9 images missing), so rank 0 must plan: reuse those 15 rows by
content hash, and share out the 9 new images and one new file that is not an image. The chunk of images
collected on rank 0 at a time is cut to 3 (the launched script sets `sharded.CHUNK` before running the CLI), so
the 10 images come back in 4 chunks, the last of which gives rank 1 nothing. The result must be the cache one
process makes from scratch: the same rows in the same order, features within 1e-5, the same file reported bad,
and one cache, written once, by rank 0 (the only process that prints).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import free_port

from transferkit.cli.main import main

pytestmark = pytest.mark.slow

LAUNCH = """import sys
import transferkit.features.sharded as sharded
from transferkit.cli.main import main
sharded.CHUNK = 3
sys.exit(main(sys.argv[1:]))
"""
ENGINE = ["--engine", "torch"]  # ONNX Runtime would first spend ~15 s exporting the base (README: checked by hand)
LEFT_OUT = [f"{name}/{i:02d}.{'png' if i % 2 else 'jpg'}" for name in ("cat", "coffee", "astronaut")
            for i in range(3)]


def _summary(manifest: Path) -> dict[str, object]:
    """A cache's manifest without its arrays' checksums (features may differ in the last bits)."""
    found = json.loads(manifest.read_text())
    return {k: v for k, v in found.items() if k != "arrays"}


def test_two_processes_extract_the_cache_one_process_does(photo_data: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "train"
    shutil.copytree(photo_data, data)
    (data / "cat" / "broken.jpg").write_bytes(b"not an image at all")
    before = tmp_path / "before"
    shutil.copytree(data, before)
    (before / "cat" / "broken.jpg").unlink()
    for name in LEFT_OUT:
        (before / name).unlink()

    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["extract", str(data), "--out", str(one), *ENGINE]) == 0
    alone = capsys.readouterr()
    assert main(["extract", str(before), "--out", str(two), *ENGINE]) == 0  # the old cache the job updates
    capsys.readouterr()

    launch = tmp_path / "launch.py"
    launch.write_text(LAUNCH)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
                           "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}", str(launch),
                           "extract", str(data), "--out", str(two), *ENGINE],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    # one cache, written once, by rank 0: one plan, one summary, the bad file reported once
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir()) \
        == [".lock", "features.npy", "labels.npy", "manifest.json"]
    assert proc.stdout.count("extracting features of 10 image(s)") == 1
    assert proc.stdout.count("on 2 processes") == 1
    (line,) = [x for x in proc.stdout.splitlines() if "feature vectors" in x]
    assert "24 feature vectors of size 1280" in line and "9 computed, 15 reused, 0 dropped, 1 unreadable" in line
    skipped = [x for x in proc.stderr.splitlines() if x.startswith("skipped")]
    assert skipped == [x for x in alone.err.splitlines() if x.startswith("skipped")]
    assert skipped == [f"skipped {data / 'cat' / 'broken.jpg'}: not an image (cannot identify format)"]

    # the same rows in the same order (paths, content hashes, labels, the bad file), features within 1e-5
    assert _summary(two / "manifest.json") == _summary(one / "manifest.json")
    assert np.array_equal(np.load(two / "labels.npy"), np.load(one / "labels.npy"))
    a, b = np.load(one / "features.npy"), np.load(two / "features.npy")
    assert a.shape == b.shape == (24, 1280)
    assert float(np.abs(a - b).max()) < 1e-5
