"""`finetune` for texts: the head warm-started on the frozen encoder's (cached) embeddings, then the top
`unfreeze_blocks` transformer layers unfrozen and trained with the head at lower, per-layer rates (the top layer
at `fine_tune_lr`, each layer below `lr_spread` times less over the unfrozen ones, the head `HEAD_LR_RATIO` times
more), the weights with the lowest validation loss kept — the warm start's included, so fine-tuning that does not
help changes nothing.

It runs on the image side's pieces: `fit_head` for the warm start, the one loop (`loop.fit`) with its early stop
and best-weights callbacks, `group_lrs` for the rates. The loop feeds a model one tensor, so a batch's token ids
and attention mask travel stacked as one (batch, 2, tokens) tensor that `PackedTextModel` unstacks. Frozen
layers run in inference mode (no dropout) while the top ones train.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from transferkit.io.logfile import details
from transferkit.text.cache import embed_cached
from transferkit.text.encoder import SentenceEncoder
from transferkit.text.model import TextModel
from transferkit.text.run import (
    Split,
    TextRun,
    TextTrainResult,
    finish,
    fit_head_on_embeddings,
    log_truncated,
    pretrained_model,
)
from transferkit.training.callbacks import EarlyStopping, EpochLog, RestoreBest
from transferkit.training.config import HEAD_LR_RATIO
from transferkit.training.loop import Best, LoopState, Stage, fit
from transferkit.training.schedule import class_weights, group_lrs

__all__ = ["PackedTextModel", "TokenBatches", "finetune_text", "transformer_layers"]

log = logging.getLogger(__name__)


def transformer_layers(encoder: SentenceEncoder) -> nn.ModuleList:
    """The encoder's stack of transformer layers, bottom to top (`encoder.layer` in BERT, MPNet, XLM-R)."""
    stacks = [m for name, m in encoder.module.named_modules() if isinstance(m, nn.ModuleList)
              and name.split(".")[-1] in ("layer", "layers")]
    if not stacks:
        raise ValueError(f"{encoder.spec.name}: no stack of transformer layers found to unfreeze")
    return max(stacks, key=len)


class PackedTextModel(nn.Module):
    """`model` fed (batch, 2, tokens) tensors: token ids and attention mask stacked. In training mode the
    modules in `frozen` stay in inference mode."""

    def __init__(self, model: TextModel, frozen: Sequence[nn.Module] = ()) -> None:
        super().__init__()
        self.model = model
        self.frozen = list(frozen)

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        return self.model(packed[:, 0], packed[:, 1])

    def train(self, mode: bool = True) -> PackedTextModel:
        super().train(mode)
        for module in self.frozen:
            module.eval()
        return self


def _pack(encoder: SentenceEncoder, ids: Sequence[Sequence[int]]) -> torch.Tensor:
    input_ids, mask = encoder.pad(ids)
    return torch.stack([input_ids, mask.to(input_ids.dtype)], 1)


class TokenBatches:
    """Shuffled mini-batches of (packed token ids, labels), padded per batch; the order is drawn from `seed`."""

    def __init__(self, encoder: SentenceEncoder, ids: list[list[int]], labels: np.ndarray, batch_size: int,
                 seed: int) -> None:
        self.encoder, self.ids, self.labels = encoder, ids, torch.from_numpy(labels.astype(np.int64))
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return -(-len(self.ids) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self.ids), generator=self.generator).tolist()
        for start in range(0, len(order), self.batch_size):
            chosen = order[start:start + self.batch_size]
            yield _pack(self.encoder, [self.ids[i] for i in chosen]), self.labels[chosen]


def finetune_text(run: TextRun, split: Split) -> TextTrainResult:
    cfg, runtime = run.cfg, run.runtime
    model = pretrained_model(run, split.data)
    encoder = model.encoder
    folder = run.features or run.out / "features"
    feats = embed_cached(encoder, split.data, folder, batch_size=max(cfg.batch_size, 64))
    log_truncated(int(feats.truncated.sum()), len(split.data), encoder.max_tokens)
    warm = fit_head_on_embeddings(run, model, split, np.array(feats.features))
    history = list(warm.history)

    layers = transformer_layers(encoder)
    top = len(layers) if cfg.unfreeze_blocks is None else min(cfg.unfreeze_blocks, len(layers))
    unfrozen = list(layers)[len(layers) - top:]
    outside = [m for m in encoder.module.transformer.children() if not any(x is layers for x in m.modules())]
    frozen = [*outside, *list(layers)[:len(layers) - top]]  # the embeddings and the layers below the tuned ones
    names = [f"layer{len(layers) - top + i}" for i in range(top)]
    rates = group_lrs([*names, "head"], HEAD_LR_RATIO * cfg.fine_tune_lr, cfg.fine_tune_lr, cfg.lr_spread)
    groups = [{"params": list(layer.parameters()), "name": name} for name, layer in zip(names, unfrozen)]
    groups.append({"params": list(model.head.parameters()), "name": "head"})
    optimizer = torch.optim.AdamW(groups, lr=0.0, weight_decay=cfg.weight_decay)

    ids = encoder.encode_ids(split.data.texts)[0]
    labels = split.data.labels
    weight = (class_weights(labels[split.train_idx].tolist(), len(split.data.classes)).to(runtime.device)
              if cfg.class_weights else None)
    loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)
    packed = PackedTextModel(model, frozen).to(runtime.device)
    val_ids = [ids[i] for i in split.val_idx]
    val_y = torch.from_numpy(labels[split.val_idx].astype(np.int64)).to(runtime.device)

    def val_logits() -> torch.Tensor:
        packed.eval()
        with torch.inference_mode():
            return torch.cat([packed(_pack(encoder, val_ids[s:s + 64]).to(runtime.device))
                              for s in range(0, len(val_ids), 64)]).float()

    def validate() -> tuple[float, float]:
        logits = val_logits()
        return float(loss_fn(logits, val_y)), float((logits.argmax(1) == val_y).float().mean())

    best = Best()
    best.offer(model, validate()[0], warm.best)
    trained = top > 0 and cfg.fine_tune_epochs > 0
    if trained:
        log.info(f"fine-tuning the top {top} of {len(layers)} transformer layers with the head "
                 f"({cfg.fine_tune_epochs} epochs at most, top layer lr {cfg.fine_tune_lr:g}, head "
                 f"{rates['head']:g})")
        for layer in unfrozen:
            layer.requires_grad_(True)
        batches = TokenBatches(encoder, [ids[i] for i in split.train_idx], labels[split.train_idx],
                               cfg.batch_size, cfg.seed)
        stage = Stage("finetune", cfg.fine_tune_epochs, batches, validate, optimizer, rates, cfg.batch_size,
                      cfg.warmup_epochs)
        history += fit(packed, stage, loss_fn, runtime, best, LoopState(),
                       [EpochLog(details()), EarlyStopping(cfg.patience), RestoreBest(best, model)], best_of=model)
        encoder.module.requires_grad_(False)
    model.base_trained = trained and best.where != warm.best
    if trained and not model.base_trained:
        log.info("fine-tuning did not lower the validation loss: the warm-started head on the frozen encoder is kept")
        best.restore(model)
    val_probs = val_logits().softmax(1).cpu().numpy()
    return finish(run, model, split, history, best.where, val_probs, val_y.cpu().numpy(),
                  {"fine_tune": {"layers": top, "of": len(layers), "rates": rates}})

