"""Training throughput, compact-lm (NumPy) against PyTorch with the same config, one thread each.

    python benchmarks/train_speed.py [--cells gru lstm rnn] [--steps 20] [--rounds 5]

Both train E=64, H=256, L=1, B=64, T=64 on tinyshakespeare windows (vocabulary 65 + <unk>) with
the same work per step: embedding, recurrence, dropout, head, cross-entropy, full BPTT, global
norm clipping and an AdamW update. Rounds alternate between the two so that machine noise hits
both alike; the figure is the median over rounds of characters per second.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

from common import blas_description, corpus

from compact_lm.config import TrainConfig
from compact_lm.trainer import Trainer

EMBED, HIDDEN, BATCH, SEQ_LEN, DROPOUT = 64, 256, 64, 64, 0.2


def compact_lm_stepper(cell: str, out_dir: str):
    config = TrainConfig(corpus=(str(corpus("tinyshakespeare.txt")),), cell=cell, embed=EMBED, hidden=HIDDEN,
                         batch=BATCH, seq_len=SEQ_LEN, dropout=DROPOUT, steps=10**9)
    trainer = Trainer(config, out_dir, progress=False)
    return trainer.train_step, trainer.corpus


def torch_stepper(cell: str, data):
    import torch
    torch.manual_seed(0)
    vocab = data.vocab.size
    kind = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[cell]
    embedding, rnn = torch.nn.Embedding(vocab, EMBED), kind(EMBED, HIDDEN, 1, batch_first=True)
    dropout, head = torch.nn.Dropout(DROPOUT), torch.nn.Linear(HIDDEN, vocab)
    params = [*embedding.parameters(), *rnn.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=3e-3, betas=(0.9, 0.99), weight_decay=0.1)
    ids = torch.from_numpy(data.train.astype(np.int64))
    stream = (len(ids) - 1) // BATCH
    starts = torch.arange(BATCH) * stream
    position = {"window": 0, "state": None}

    def step():
        w = position["window"] % (stream // SEQ_LEN)
        index = starts[:, None] + w * SEQ_LEN + torch.arange(SEQ_LEN + 1)[None, :]
        block = ids[index]
        out, state = rnn(embedding(block[:, :-1]), position["state"])
        logits = head(dropout(out))
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), block[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        position["state"] = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
        position["window"] = w + 1
        return loss.item()

    return step


def chars_per_second(step, steps: int) -> float:
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * BATCH * SEQ_LEN / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", nargs="+", default=["gru", "lstm", "rnn"])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    try:
        import torch
        torch.set_num_threads(1)
        torch_line = f"torch {torch.__version__} (1 thread)"
    except ImportError:
        torch = None
        torch_line = "torch not installed: compact-lm figures only (pip install '.[bench]')"
    print(blas_description())
    print("both sides are measured with 1 thread (BLAS limited by threadpoolctl)")
    print(torch_line)
    print(f"config: E={EMBED} H={HIDDEN} L=1 B={BATCH} T={SEQ_LEN} dropout={DROPOUT}, tinyshakespeare, "
          f"{args.rounds} rounds x {args.steps} steps, median chars/s")
    print(f"{'cell':<5} {'compact-lm':>12} {'pytorch':>12} {'ratio':>7}")
    import tempfile
    with threadpool_limits(limits=1), tempfile.TemporaryDirectory() as folder:
        for cell in args.cells:
            ours_step, data = compact_lm_stepper(cell, f"{folder}/{cell}")
            theirs_step = torch_stepper(cell, data) if torch else None
            for warm in range(3):
                ours_step()
                if theirs_step:
                    theirs_step()
            ours, theirs = [], []
            for _ in range(args.rounds):
                ours.append(chars_per_second(ours_step, args.steps))
                if theirs_step:
                    theirs.append(chars_per_second(theirs_step, args.steps))
            a = statistics.median(ours)
            if theirs:
                b = statistics.median(theirs)
                print(f"{cell:<5} {a:>12,.0f} {b:>12,.0f} {a / b:>7.2f}")
            else:
                print(f"{cell:<5} {a:>12,.0f} {'-':>12} {'-':>7}")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
