"""What the model finds hard: the surprisal of each character of a text (-log2 p of the character that came,
given everything before it), the model's top guesses before it, and the most surprising words. Numbers
only; render.py draws them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import torch

from charrnn.model import CharRNN
from charrnn.sample import eval_forward
from charrnn.vocab import Vocab

TOP = 5  # guesses shown for each character


@dataclass(frozen=True)
class CharView:
    text: str  # the characters shown (the known characters of the text, from its start)
    bits: np.ndarray  # (n,) surprisal of each, in bits; nan for the first (nothing predicts it)
    top: list[list[tuple[str, float]]]  # (n, TOP) the model's likeliest characters before each, with p
    total_chars: int  # characters scored in the whole text
    total_nats: float  # and their total: what `charrnn eval` reports

    @property
    def p(self) -> np.ndarray:
        """(n,) the probability the model gave each shown character."""
        return np.exp2(-self.bits)


def char_view(model: CharRNN, vocab: Vocab, ids: np.ndarray, nats: np.ndarray, total: tuple[int, float]) -> CharView:
    """`ids` (n,) the shown characters, `nats` (n - 1,) each one's share of the total after the first (from
    evaluate's own pass); the top guesses come from one forward pass over the shown characters."""
    x = torch.as_tensor(np.asarray(ids[:-1], dtype=np.int64)).view(1, -1)  # (1, n - 1)
    logits, _ = eval_forward(model, x, None)  # (1, n - 1, V)
    probs = torch.softmax(logits[0].double(), -1)  # (n - 1, V)
    p_top, i_top = probs.topk(min(TOP, probs.shape[-1]), dim=-1)  # (n - 1, TOP) each
    chars = vocab.chars
    top = [[]] + [
        [(chars[i], float(q)) for i, q in zip(row_i, row_p)] for row_i, row_p in zip(i_top.tolist(), p_top.tolist())
    ]
    bits = np.concatenate([[np.nan], np.asarray(nats, dtype=np.float64) / math.log(2)])  # (n,)
    return CharView(vocab.decode(ids), bits, top, total[0], total[1])


def hardest_words(view: CharView, k: int = 10) -> list[tuple[int, int, float]]:
    """The `k` words (runs of non-space characters) of the shown text with the most surprisal in total:
    (start, end, bits), most surprising first."""
    spans = []
    for m in re.finditer(r"\S+", view.text):
        bits = view.bits[m.start() : m.end()]
        bits = bits[~np.isnan(bits)]
        if len(bits):
            spans.append((m.start(), m.end(), float(bits.sum())))
    return sorted(spans, key=lambda s: -s[2])[:k]
