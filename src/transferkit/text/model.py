"""A sentence encoder plus a new head: the text model every text workflow trains, evaluates and predicts with.

The same contract as the image `TransferModel`: `base` (the encoder's module: token ids and mask to a pooled,
maybe normalised embedding) and `head` (the same `build_head` as for images), the state dict `base.*` and `head.*`,
logits divided by a calibration temperature. `probabilities(texts)` tokenises exactly as the bundle's
preprocessing says (the encoder's tokenizer, cut at `max_tokens`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from transferkit.model import HeadConfig, build_head
from transferkit.text.encoder import SentenceEncoder
from transferkit.text.engine import make_text_engine

__all__ = ["TextModel", "TextScores"]


@dataclass(frozen=True)
class TextScores:
    """Class probabilities for some texts, and how many of them were cut to the encoder's window."""

    probs: np.ndarray
    truncated: int


class TextModel(nn.Module):
    """`encoder` embeds, `head` classifies. `base_trained` says whether the encoder's weights changed in
    training (then a bundle stores them; otherwise it names the pretrained weights by their sha256).

    The head reads the embeddings times `embedding_scale`: sqrt(dim) for an encoder whose embeddings are
    normalised. A unit vector's coordinates are about 1/sqrt(dim) (0.05 for 384 dimensions), so a head trained on
    them at the rates that suit image features (coordinates near 1) moves its logits ~20 times too slowly: on
    easy spam/ham its best epoch was the last one and its probabilities stayed near 0.6-0.7. Scaled, the
    coordinates are near 1 again. Bundles record the scale (those from before it read 1)."""

    def __init__(self, encoder: SentenceEncoder, class_names: Sequence[str], head_cfg: HeadConfig = HeadConfig()
                 ) -> None:
        super().__init__()
        self.encoder = encoder
        self.base = encoder.module
        self.head = build_head(encoder.dim, len(class_names), head_cfg)
        self.class_names = list(class_names)
        self.head_cfg = head_cfg
        self.temperature = 1.0
        self.base_trained = False
        self.embedding_scale = math.sqrt(encoder.dim) if encoder.spec.normalize else 1.0

    @classmethod
    def from_pretrained(cls, encoder: str, class_names: Sequence[str], head: HeadConfig = HeadConfig(),
                        max_tokens: int | None = None) -> TextModel:
        """The pretrained encoder `encoder`, frozen, and a fresh head."""
        model = cls(SentenceEncoder.load(encoder, max_tokens), class_names, head)
        model.base.requires_grad_(False)
        return model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.base(input_ids, attention_mask) * self.embedding_scale)
        return logits if self.temperature == 1.0 else logits / self.temperature

    def head_probabilities(self, embeddings: np.ndarray | torch.Tensor) -> np.ndarray:
        """Calibrated class probabilities from embeddings the encoder made (cached ones included)."""
        self.eval()
        device = next(self.head.parameters()).device
        x = torch.as_tensor(np.asarray(embeddings, dtype=np.float32)).to(device)
        with torch.inference_mode():
            return (self.head(x * self.embedding_scale) / self.temperature).softmax(1).float().cpu().numpy()

    def probabilities(self, texts: Sequence[str], batch_size: int = 64, engine: str = "auto") -> TextScores:
        """Calibrated class probabilities of each text, in the order given; the encoder run by the text engine
        `engine` (`make_text_engine`: ONNX Runtime on a CPU where it pays, parity-checked; torch for PyTorch)."""
        ids, cut = self.encoder.encode_ids(texts)
        embedder = make_text_engine(self.encoder, engine, texts=len(texts))
        return TextScores(self.head_probabilities(embedder.embed_ids(ids, batch_size)), sum(cut))
