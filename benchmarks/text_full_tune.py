"""Can tuning the whole sentence encoder on SpamAssassin's full training split reach issue 13's 0.985 on this
CPU? A plain fine-tuning loop, not transferkit's strategies: the encoder (all-MiniLM-L6-v2, window --max-tokens)
and a linear head on its embeddings times sqrt(384), trained end to end on cross-entropy with AdamW (encoder at
--lr, head 20x), linear warm-up over the first 10% of steps then linear decay, batch 16, seed 0. After each epoch
it prints the accuracy on the validation split and on the test texts: the same seeded splits as
benchmarks/text_quality.py (`make_splits`: 30% test, scored on a stratified sample of --test-sample; the rest
80/20).

    python benchmarks/text_full_tune.py --max-tokens 128 --lr 5e-5 --epochs 2    # ~25 min an epoch, 2 cores
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from spam_assassin import CLASSES, read_corpus, unique_texts
from text_quality import MAX_CHARS, make_splits

from transferkit.text.encoder import SentenceEncoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--test-sample", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = unique_texts(read_corpus(None), MAX_CHARS)
    labels = np.array([CLASSES.index(row.label) for row in rows])
    test, (split,) = make_splits(labels, 0.3, args.test_sample, [None], 0)
    encoder = SentenceEncoder.load("all-MiniLM-L6-v2", args.max_tokens)
    ids = encoder.encode_ids([row.text for row in rows])[0]
    scale = math.sqrt(encoder.dim)
    head = torch.nn.Linear(encoder.dim, len(CLASSES))
    encoder.module.requires_grad_(True)
    optimizer = torch.optim.AdamW([{"params": list(encoder.module.parameters()), "lr": args.lr},
                                   {"params": list(head.parameters()), "lr": 20 * args.lr}], weight_decay=0.01)
    steps = args.epochs * math.ceil(len(split.train) / args.batch_size)
    warm = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / (steps - warm))))

    def accuracy(rows_: np.ndarray) -> float:
        encoder.module.eval()
        right = 0
        with torch.inference_mode():
            for start in range(0, len(rows_), 64):
                chosen = rows_[start:start + 64]
                logits = head(encoder.module(*encoder.pad([ids[i] for i in chosen])) * scale)
                right += int((logits.argmax(1).numpy() == labels[chosen]).sum())
        return right / len(rows_)

    order = np.random.default_rng(0)
    started = time.perf_counter()
    print(f"{len(split.train)} training, {len(split.val)} validation, {len(test)} test texts; window "
          f"{encoder.max_tokens}, lr {args.lr:g}, {args.epochs} epochs", flush=True)
    for epoch in range(args.epochs):
        encoder.module.train()
        total = 0.0
        shuffled = order.permutation(split.train)
        for batch in (shuffled[s:s + args.batch_size] for s in range(0, len(shuffled), args.batch_size)):
            loss = torch.nn.functional.cross_entropy(head(encoder.module(*encoder.pad([ids[i] for i in batch]))
                                                          * scale), torch.from_numpy(labels[batch]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss) * len(batch)
        print(f"epoch {epoch}: loss {total / len(split.train):.4f}, validation {accuracy(split.val):.4f}, "
              f"test {accuracy(test):.4f} ({time.perf_counter() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
