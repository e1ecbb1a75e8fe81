"""Speed of one training step on a large-vocabulary corpus: the full softmax against torch's
AdaptiveLogSoftmaxWithLoss (cutoffs 500 / 2,000, div 4, classes by frequency), each with embedding 128 and
64 (LSTM 2x256, batch 16, window 128, fp32). How the adaptive head was chosen (benchmarks/README.md).

    python benchmarks/softmax.py /tmp/corpora/cjk.txt
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch
from torch import nn

from charrnn import data
from charrnn.config import ModelConfig
from charrnn.model import CharRNN, detach_state
from charrnn.state import loss_fn

B, T, H = 16, 128, 256


def chars_per_s(train: np.ndarray, vocab: int, order: np.ndarray, embed: int, adaptive: bool) -> float:
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=vocab, layers=2, hidden=H, embed=embed, dropout=0.1))
    rank = torch.empty(vocab, dtype=torch.long)
    rank[torch.from_numpy(order.copy())] = torch.arange(vocab)  # character id -> frequency rank
    head = nn.AdaptiveLogSoftmaxWithLoss(H, vocab, cutoffs=[500, 2000], div_value=4.0) if adaptive else None
    params = list(model.parameters()) + (list(head.parameters()) if head else [])
    opt = torch.optim.AdamW(params, lr=3e-3)
    streams, state, times = data.Streams(train, B, T), model.init_state(B), []
    for k in range(8):
        x, y = (torch.from_numpy(a) for a in streams.window(k))  # (B, T) each
        t0 = time.perf_counter()
        out, new = model.rnn(model.drop(model.embed(x)), state)  # (B, T, H)
        out = model.drop(out)
        loss = head(out.reshape(-1, H), rank[y].reshape(-1)).loss if head else loss_fn(model.head(out), y)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        state = detach_state(tuple(new) if isinstance(new, tuple) else (new,))
        times.append(time.perf_counter() - t0)
    return B * T / float(np.median(times[2:]))


def main() -> None:
    torch.set_num_threads(2)
    corpus = data.read_corpus(sys.argv[1])
    vocab = len(corpus.vocab)
    train, _ = data.split(corpus.ids, 0.1)
    counts = np.bincount(np.asarray(train), minlength=vocab)
    order = np.argsort(-counts, kind="stable")
    cover = np.cumsum(counts[order]) / counts.sum()
    print(
        f"{vocab} characters; the top 500 cover {cover[499]:.3f} of the training text, the top 2000 {cover[1999]:.3f}"
    )
    for embed in (128, 64):
        for adaptive in (False, True):
            name = "adaptive softmax (cutoffs 500, 2000)" if adaptive else "full softmax"
            print(f"embed {embed:3d} {name:38s} {chars_per_s(train, vocab, order, embed, adaptive):8,.0f} chars/s")


if __name__ == "__main__":
    main()
