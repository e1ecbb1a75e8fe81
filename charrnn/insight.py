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


# ---- cells: what single hidden units track ----------------------------------------------------------------


def unit_states(model: CharRNN, ids: np.ndarray) -> dict[str, np.ndarray]:
    """Every unit's value after each character: {"h": (n, L, H)} and, for an LSTM, {"c": (n, L, H)} too."""
    from charrnn.sample import fast_rnn

    rnn = fast_rnn(model, backend="numpy")
    rnn.reset_zero(1)
    L, H = model.cfg.layers, model.cfg.hidden
    hs, cs = np.empty((len(ids), L, H), np.float32), np.empty((len(ids), L, H), np.float32)
    for t, i in enumerate(np.asarray(ids, dtype=np.int64)):
        rnn.step(np.array([i]))
        hs[t] = rnn.h.reshape(L, H)
        if rnn.c is not None:
            cs[t] = rnn.c[:, 0]
    return {"h": hs, "c": cs} if model.cfg.model == "lstm" else {"h": hs}


def _inside(text: str, opens: str, closes: str) -> np.ndarray:
    """1 after a character that leaves the text inside a pair (quotes: the same character opens and closes)."""
    out, depth = np.zeros(len(text)), 0
    for t, c in enumerate(text):
        if opens == closes and c == opens:
            depth = 1 - depth
        elif c in opens:
            depth += 1
        elif c in closes:
            depth = max(0, depth - 1)
        out[t] = depth > 0
    return out


def _line_position(text: str) -> np.ndarray:
    out, col = np.zeros(len(text)), 0
    for t, c in enumerate(text):
        col = 0 if c == "\n" else col + 1
        out[t] = col
    return out


def _word_start(text: str) -> np.ndarray:
    """1 after a space or line break: where the next character starts a word."""
    return np.array([c in " \n\t" for c in text], dtype=float)


PROPERTIES = {
    "inside quotes": lambda text: _inside(text, '"', '"'),
    "inside brackets": lambda text: _inside(text, "([{", ")]}"),
    "position in the line": _line_position,
    "start of a word": _word_start,
}


@dataclass(frozen=True)
class Cell:
    kind: str  # "h" or "c"
    layer: int  # 1-based, as --cell LAYER:UNIT takes it
    unit: int  # 0-based
    corr: float  # Pearson correlation of its value with the property, over the text


def rank_cells(states: dict[str, np.ndarray], text: str, top: int = 3) -> dict[str, list[Cell]]:
    """For each property that varies in `text`, the `top` units whose value correlates with it most
    (by absolute correlation; a negative one tracks it as well, with the sign flipped)."""
    out: dict[str, list[Cell]] = {}
    for name, feature in PROPERTIES.items():
        y = feature(text)  # (n,)
        if y.std() == 0:
            continue  # the text has no quotes, say: nothing to track
        y = (y - y.mean()) / y.std()
        found = []
        for kind, s in states.items():
            x = s.reshape(len(text), -1).astype(np.float64)  # (n, L*H)
            sd = x.std(axis=0)
            corr = np.where(sd > 1e-9, ((x - x.mean(axis=0)) * y[:, None]).mean(axis=0) / np.maximum(sd, 1e-12), 0)
            H = s.shape[2]
            found += [Cell(kind, j // H + 1, j % H, float(corr[j])) for j in np.argsort(-np.abs(corr))[:top]]
        out[name] = sorted(found, key=lambda c: -abs(c.corr))[:top]
    return out
