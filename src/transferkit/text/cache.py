"""Text embeddings cached on disk: each text is embedded once per encoder, and a later run reuses every row whose
text (sha256 of its UTF-8) is in the cache, even if it moved or was relabelled.

A cache folder holds `features.npy` (N x D float32), `labels.npy` (N int64) and `manifest.json`: the key (the
encoder, the sha256 of its weights, its preprocessing: window, pooling, normalisation, prefix; the versions of
the libraries that tokenise and run it), the class names, and each row's origin, text hash and whether the text
was truncated. The arrays' hashes and shapes are in the manifest, which is written last, all under the folder's
lock, so a cache left half-written by a crash fails its check and is rebuilt, as the image feature cache is.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from transferkit._version import __version__
from transferkit.features.cache import describe
from transferkit.io.atomic import atomic_write_text, atomic_writer, locked, remove_stale_temporaries
from transferkit.io.hashing import sha256_file
from transferkit.text.data import LabelledTexts
from transferkit.text.encoder import SentenceEncoder
from transferkit.text.engine import make_text_engine

__all__ = ["FORMAT", "TextFeatures", "embed_cached", "encoder_key", "load_text_features", "text_sha256"]

log = logging.getLogger(__name__)

FORMAT = "transferkit.text-features"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_ARRAYS = ("features.npy", "labels.npy")


@dataclass(frozen=True)
class TextFeatures:
    """A verified cache: `features[i]` is the embedding of the text with hash `text_sha256[i]`, class
    `classes[labels[i]]`, from `origins[i]`. `computed`/`reused`/`seconds`/`engine` say what the last update did."""

    folder: Path
    key: dict[str, Any]
    classes: list[str]
    features: np.ndarray
    labels: np.ndarray
    text_sha256: list[str]
    origins: list[str]
    truncated: np.ndarray  # bool per row
    computed: int = 0
    reused: int = 0
    seconds: float = 0.0
    engine: str = ""  # what embedded the computed rows (`TextEngine.note`)

    @property
    def texts_per_second(self) -> float:
        return self.computed / self.seconds if self.computed and self.seconds > 0 else 0.0


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def encoder_key(encoder: SentenceEncoder) -> dict[str, Any]:
    """What the embeddings are computed from: a cache made with another key is not reused."""
    key = {"encoder": encoder.spec.name, "weights_sha256": encoder.files.sha256,
           "preprocessing": encoder.preprocessing(),
           "versions": {"transferkit": __version__, "transformers": _version("transformers"),
                        "tokenizers": _version("tokenizers")}}
    return json.loads(json.dumps(key))


def load_text_features(folder: str | Path, verify: bool = True) -> TextFeatures | None:
    """The cache in `folder` if it is whole and matches its manifest, else None (and the reason is logged)."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
            log.debug(f"{folder}: not a text feature cache of this version")
            return None
        arrays = {}
        for name in _ARRAYS:
            expected = manifest["arrays"][name]
            if verify and sha256_file(folder / name) != expected["sha256"]:
                log.debug(f"{folder / name} does not match its checksum")
                return None
            arrays[name] = np.load(folder / name, mmap_mode="r", allow_pickle=False)
            if list(arrays[name].shape) != expected["shape"]:
                return None
        rows = manifest["rows"]
        if not len(rows) == len(arrays["features.npy"]) == len(arrays["labels.npy"]):
            return None
        return TextFeatures(folder, manifest["key"], list(manifest["classes"]), arrays["features.npy"],
                            np.asarray(arrays["labels.npy"]), [r["sha256"] for r in rows],
                            [r["origin"] for r in rows], np.array([bool(r["truncated"]) for r in rows]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def embed_cached(encoder: SentenceEncoder, data: LabelledTexts, folder: str | Path, batch_size: int = 64,
                 engine: str = "auto") -> TextFeatures:
    """The embeddings of `data`'s texts, in its order: reused from the cache in `folder` where the key and the text
    match, computed otherwise by the text engine `engine` (`make_text_engine`: ONNX Runtime on a CPU where it
    pays, parity-checked); the cache is rewritten to hold exactly these texts."""
    folder = Path(folder)
    started = time.perf_counter()
    key = encoder_key(encoder)
    with locked(folder):
        remove_stale_temporaries(folder)
        old = load_text_features(folder)
        old_rows = {h: i for i, h in enumerate(old.text_sha256)} if old is not None and old.key == key else {}
        hashes = [text_sha256(t) for t in data.texts]
        todo = [i for i, h in enumerate(hashes) if h not in old_rows]
        features = np.zeros((len(data), encoder.spec.dim), dtype=np.float32)
        truncated = np.zeros(len(data), dtype=bool)
        reused = [i for i, h in enumerate(hashes) if h in old_rows]
        if old is not None and reused:
            source = np.array([old_rows[hashes[i]] for i in reused])
            features[reused] = old.features[source]
            truncated[reused] = old.truncated[source]
        note = ""
        if todo:
            embedder = make_text_engine(encoder, engine, texts=len(todo))
            note = embedder.note
            log.info(f"embedding {len(todo)} texts by {note}")
            ids, cut = encoder.encode_ids([data.texts[i] for i in todo])
            features[todo] = embedder.embed_ids(ids, batch_size)
            truncated[todo] = cut
        _write(folder, key, data, features, hashes, truncated)
    return TextFeatures(folder, key, list(data.classes), features, data.labels, hashes, list(data.origins),
                        truncated, len(todo), len(reused), time.perf_counter() - started, note)


def _write(folder: Path, key: dict[str, Any], data: LabelledTexts, features: np.ndarray, hashes: list[str],
           truncated: np.ndarray) -> None:
    arrays: dict[str, Any] = {}
    for name, array in (("features.npy", features), ("labels.npy", data.labels.astype(np.int64))):
        with atomic_writer(folder / name) as tmp, open(tmp, "wb") as handle:
            np.save(handle, array)
        arrays[name] = describe(folder / name)
    rows = [{"origin": o, "sha256": h, "truncated": bool(t)} for o, h, t in zip(data.origins, hashes, truncated)]
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "key": key, "classes": list(data.classes),
                "source": str(data.source), "arrays": arrays, "rows": rows,
                "bad": [{"where": row.where(), "reason": row.reason} for row in data.bad]}
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=1))
