"""The names of the files in a run folder, without the code that reads them: the command line names the
checkpoint of an interrupted run without importing torch."""

from __future__ import annotations

__all__ = ["CHECKPOINT_FILE", "META_FILE", "WEIGHTS_FILE"]

WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"
CHECKPOINT_FILE = "checkpoint.safetensors"  # the best model so far, while training runs
