"""Steering generation: stop strings that end each sample where it first writes one, beam search for the
likeliest continuation, and the mean nats/char a model gives a text (what `--format jsonl` reports).

Sampling itself stays in sample.py and fastrnn.py; this module wraps their stream of characters. No
rendering here. Torch is imported only by what needs it (beam search, scoring a torch model), so the
torch-free sampler can use the stop strings.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from charrnn.config import SampleConfig
from charrnn.errors import CharRNNError
from charrnn.vocab import Vocab

if TYPE_CHECKING:
    from charrnn.model import CharRNN


def unescape(text: str) -> str:
    r"""`\n`, `\t`, `\\` and `\uXXXX` as a shell user types them in `--stop '\n'`; other characters as they are."""
    try:
        return text.encode("latin-1", "backslashreplace").decode("unicode_escape")
    except UnicodeDecodeError as e:
        raise CharRNNError(
            f"--stop {text!r} has a broken escape ({e.reason}): write it as '\\n', '\\t' or '\\\\'"
        ) from None


class StopWatch:
    """Per sample: pass text through until a stop string appears, then end that sample there. Holds back
    just enough characters (the longest stop string less one) that a stop string is never half-printed."""

    def __init__(self, samples: int, stops: Sequence[str], keep: bool = False) -> None:
        if any(s == "" for s in stops):
            raise CharRNNError("--stop needs a non-empty string")
        self.stops, self.keep = tuple(stops), keep
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.pending = [""] * samples
        self.done = [False] * samples

    def feed(self, i: int, chars: str) -> str:
        """The text of sample i that is now safe to show."""
        if self.done[i]:
            return ""
        buf = self.pending[i] + chars
        hits = [(buf.find(s), s) for s in self.stops if s in buf]
        if hits:
            at, stop = min(hits)
            self.done[i], self.pending[i] = True, ""
            return buf[: at + (len(stop) if self.keep else 0)]
        cut = max(0, len(buf) - self.hold)
        self.pending[i] = buf[cut:]
        return buf[:cut]

    def flush(self, i: int) -> str:
        """What sample i still holds back when generation ends without a stop."""
        rest, self.pending[i] = self.pending[i], ""
        return "" if self.done[i] else rest

    @property
    def all_done(self) -> bool:
        return all(self.done)


def steered(
    model: CharRNN, vocab: Vocab, cfg: SampleConfig, stops: Sequence[str] = (), keep: bool = False
) -> Iterator[tuple[int, str]]:
    """(sample index, text) pieces as they become safe to show; generation ends early once every sample
    has met a stop string, and `cfg.length` stays the upper bound."""
    from charrnn.sample import generate

    return stopped(generate(model, vocab, cfg), cfg.num, stops, keep)


def stopped(
    stream: Iterator[list[str]], num: int, stops: Sequence[str] = (), keep: bool = False
) -> Iterator[tuple[int, str]]:
    """A stream of steps (one character per sample each) as (sample index, text) pieces, with stops."""
    watch = StopWatch(num, stops, keep)
    try:
        for chars in stream:
            for i, c in enumerate(chars):
                if piece := watch.feed(i, c):
                    yield i, piece
            if watch.all_done:
                return
    finally:
        stream.close()
    for i in range(num):
        if rest := watch.flush(i):
            yield i, rest


def beam_search(
    model: CharRNN,
    vocab: Vocab,
    prime: str,
    beam: int,
    length: int,
    stops: Sequence[str] = (),
    keep: bool = False,
    best: int = 1,
) -> list[tuple[str, float]]:
    """The `best` likeliest continuations found by a beam of width `beam`: (text, mean log-probability per
    character), best first. Every step keeps the `beam` likeliest of all one-character extensions; a beam
    that writes a stop string is finished there. Finished texts are ranked by log-probability divided by
    their length, so a short ending is not favoured just for having fewer factors below one."""
    import torch

    from charrnn.sample import eval_forward, prime_ids, warm

    if beam < 1 or best < 1 or best > beam:
        raise CharRNNError(f"--beam must be >= 1 and at least --num, got --beam {beam} --num {best}")
    logits, state = warm(model, prime_ids(vocab, prime), 1)  # (1, V), (L, 1, H) each
    texts, scores = [""], np.zeros(1)  # (B,) total log-probability of each beam
    finished: list[tuple[str, float, int]] = []
    device = next(model.parameters()).device
    for _ in range(length):
        logp = torch.log_softmax(torch.as_tensor(logits, dtype=torch.float64), -1).numpy()  # (B, V)
        total = (scores[:, None] + logp).ravel()  # (B * V,)
        top = np.argsort(-total, kind="stable")[:beam]  # (beam,) the likeliest extensions
        parents, chars = np.divmod(top, logp.shape[1])
        keep_rows = []
        for row, (b, c) in enumerate(zip(parents, chars)):
            text = texts[b] + vocab.chars[c]
            hit = next((s for s in stops if text.endswith(s)), None)
            if hit is None:
                keep_rows.append((row, text))
            else:
                shown = text if keep else text[: len(text) - len(hit)]
                finished.append((shown, float(total[top[row]]), len(text)))
        if not keep_rows:
            break
        rows = [r for r, _ in keep_rows]
        texts, scores = [t for _, t in keep_rows], total[top[rows]]
        pick = torch.as_tensor(parents[rows], device=device)
        state = tuple(s.index_select(1, pick) for s in state)  # (L, B', H) each
        x = torch.as_tensor(chars[rows], device=device).view(-1, 1)  # (B', 1)
        out, state = eval_forward(model, x, state)  # (B', 1, V)
        logits = out[:, -1].double().cpu().numpy()  # (B', V)
    else:
        finished += [(t, float(s), len(t)) for t, s in zip(texts, scores)]
    ranked = sorted(finished, key=lambda f: -f[1] / max(1, f[2]))
    return [(text, score / max(1, n)) for text, score, n in ranked[:best]]


def nats_per_char(model: CharRNN, vocab: Vocab, text: str) -> float | None:
    """Mean nats per character the model gives `text` (every character after the first, from a cold
    state): what `charrnn eval` reports for a file holding exactly this text. None under two characters."""
    from charrnn.evaluate import evaluate

    ids = vocab.encode(text, unknown="skip")
    if len(ids) < 2:
        return None
    return evaluate(model, ids, next(model.parameters()).device).nats_per_char
