"""A pretrained sentence encoder: its tokenizer and a torch module from token ids to one pooled embedding per text.

The module is transformers' `AutoModel` read from the encoder's folder (safetensors only, never the network),
followed by the row's pooling (the mean over real tokens, or the [CLS] token) and, where the row says so, L2
normalisation: the same steps sentence-transformers runs for these models, so the vectors agree with its
`encode` (`tests/test_text_encoder.py` checks it). `embed` sorts the texts by length so each batch is padded only
to its own longest text, then puts the vectors back in the order given.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import nn
from tqdm import tqdm

from transferkit.errors import UserError
from transferkit.text.encoders import DEFAULT_ENCODER, TextEncoderSpec, get_encoder
from transferkit.text.weights import TOKENIZER, EncoderFiles, encoder_files

__all__ = ["EncoderModule", "SentenceEncoder", "Tokens"]

log = logging.getLogger(__name__)


class EncoderModule(nn.Module):
    """`(input_ids, attention_mask) -> pooled embeddings` (normalised when the row says): what is trained when
    the encoder is fine-tuned, and what an ONNX export traces."""

    def __init__(self, transformer: nn.Module, pooling: str, normalize: bool) -> None:
        super().__init__()
        self.transformer = transformer
        self.pooling, self.normalize = pooling, normalize

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:  # the mean over real tokens, as sentence-transformers' Pooling computes it
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2, dim=1) if self.normalize else pooled


@dataclass(frozen=True)
class Tokens:
    """Token ids of some texts, padded to the longest of them, and how many texts were cut to the window."""

    input_ids: torch.Tensor  # (N, L) int64
    attention_mask: torch.Tensor  # (N, L) int64, 1 for real tokens
    truncated: int

    def __iter__(self):  # type: ignore[no-untyped-def]  # unpacks as (input_ids, attention_mask, truncated)
        return iter((self.input_ids, self.attention_mask, self.truncated))


class SentenceEncoder:
    """A text encoder row made real: `spec`, `tokenizer` (a fast `tokenizers.Tokenizer` truncating at
    `max_tokens`), `module` (see `EncoderModule`) and where its weights came from (`files`)."""

    def __init__(self, spec: TextEncoderSpec, tokenizer: Tokenizer, module: EncoderModule, files: EncoderFiles,
                 max_tokens: int | None = None) -> None:
        self.spec, self.tokenizer, self.module, self.files = spec, tokenizer, module, files
        self.max_tokens = max_tokens or spec.max_tokens
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_tokens)
        self.pad_id = int(getattr(module.transformer.config, "pad_token_id", None) or 0)
        self._tokenizer_sha256 = files.tokenizer_sha256

    @classmethod
    def load(cls, name: str = DEFAULT_ENCODER, max_tokens: int | None = None) -> SentenceEncoder:
        """The encoder `name` (a row of `TEXT_ENCODERS`, or an alias) with its pretrained weights, in inference
        mode on the CPU; `max_tokens` (default: the row's window) is where texts are cut."""
        spec = get_encoder(name)
        files = encoder_files(spec)
        limit = _position_limit(spec, files)
        if max_tokens is not None and not 2 <= max_tokens <= limit:
            raise UserError(f"--max-tokens {max_tokens} is outside what {spec.name} reads: choose 2 to {limit}")
        transformer = _read_transformer(files)
        tokenizer = Tokenizer.from_file(str(files.folder / TOKENIZER))
        module = EncoderModule(transformer, spec.pooling, spec.normalize).eval()
        log.debug(f"text encoder {spec.name} from {files.source} ({files.folder})")
        return cls(spec, tokenizer, module, files, max_tokens)

    @property
    def dim(self) -> int:
        return self.spec.dim

    def preprocessing(self) -> dict[str, object]:
        """What a bundle records so that prediction tokenises and pools exactly as training did: the row's
        values, the window, and the sha256 of the tokenizer file."""
        return {**self.spec.preprocessing(self.max_tokens), "tokenizer_sha256": self._tokenizer_sha256}

    def encode_ids(self, texts: Sequence[str]) -> tuple[list[list[int]], list[bool]]:
        """Each text's token ids (the row's prefix first, cut to the window), and whether it was cut."""
        encodings = self.tokenizer.encode_batch([self.spec.prefix + t for t in texts])
        return [e.ids for e in encodings], [bool(e.overflowing) for e in encodings]

    def pad(self, ids: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids padded to the longest of them, and the attention mask."""
        length = max((len(row) for row in ids), default=0)
        input_ids = np.full((len(ids), length), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(ids), length), dtype=np.int64)
        for i, row in enumerate(ids):
            input_ids[i, :len(row)], mask[i, :len(row)] = row, 1
        return torch.from_numpy(input_ids), torch.from_numpy(mask)

    def tokenize(self, texts: Sequence[str]) -> Tokens:
        """`(input_ids, attention_mask, truncated_count)` of `texts`, padded to their longest."""
        ids, truncated = self.encode_ids(texts)
        return Tokens(*self.pad(ids), sum(truncated))

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """float32 embeddings, one row per text in the order given, computed on the module's device."""
        ids, _ = self.encode_ids(texts)
        return self.embed_ids(ids, batch_size)

    def embed_ids(self, ids: Sequence[Sequence[int]], batch_size: int = 64) -> np.ndarray:
        """`embed` for texts tokenised already (`encode_ids`): shortest first, so little padding is computed."""
        out = np.zeros((len(ids), self.spec.dim), dtype=np.float32)
        order = np.argsort([len(row) for row in ids], kind="stable")
        device = next(self.module.parameters()).device
        self.module.eval()
        with torch.inference_mode(), tqdm(total=len(ids), desc="embedding texts", unit="text", leave=False,
                                          disable=None) as bar:
            for start in range(0, len(order), batch_size):
                chosen = order[start:start + batch_size]
                input_ids, mask = self.pad([ids[i] for i in chosen])
                out[chosen] = self.module(input_ids.to(device), mask.to(device)).float().cpu().numpy()
                bar.update(len(chosen))
        return out


def _read_transformer(files: EncoderFiles) -> nn.Module:
    """transformers' model from the local folder, safetensors only, in float32. Its "Loading weights" bar (drawn
    even into a log file or a pipe) is switched off while it loads: the bar is one switch for the whole library,
    so it is put back as it was at once."""
    from transformers import AutoModel  # heavy: only once an encoder is really needed
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return AutoModel.from_pretrained(str(files.folder), local_files_only=True, use_safetensors=True,
                                         dtype=torch.float32)
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def _position_limit(spec: TextEncoderSpec, files: EncoderFiles) -> int:
    """The longest input the encoder's position embeddings allow (RoBERTa-style models reserve two of them)."""
    config = json.loads((files.folder / "config.json").read_text(encoding="utf-8"))
    positions = int(config.get("max_position_embeddings", spec.max_tokens))
    return positions - 2 if config.get("model_type") in ("xlm-roberta", "roberta", "mpnet") else positions
