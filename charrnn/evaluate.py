"""One full stateful pass over a text: every character after the first is scored exactly once.

The text is laid out as `streams` contiguous rows (for speed), each carrying its hidden state across
windows; the few ids left over at the end continue the last row's state. Only `streams` rows start cold.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from charrnn.devices import autocast, pick_dtype
from charrnn.errors import CharRNNError
from charrnn.locate import training_file
from charrnn.model import CharRNN, State

EVAL_STREAMS = 16  # Wide enough for fast matmuls, few enough that cold starts cost nothing measurable.
EVAL_WINDOW = 512  # Longer windows mean fewer calls; no gradients are kept, so memory is small.


@dataclass(frozen=True)
class EvalResult:
    chars: int  # characters scored
    nats: float  # total negative log-likelihood

    @property
    def nats_per_char(self) -> float:
        return self.nats / self.chars

    @property
    def bits_per_char(self) -> float:
        return self.nats_per_char / math.log(2)

    @property
    def perplexity(self) -> float:
        return math.exp(self.nats_per_char)


def _score(
    model: CharRNN, x: np.ndarray, y: np.ndarray, state: State | None, device, dtype, each: bool = False
) -> tuple[float | np.ndarray, State]:
    """Total nats of the window, or with `each` the (S, W) nats of every target."""
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.int64)).to(device)  # (S, W)
    yt = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)).to(device)  # (S, W)
    with autocast(device, dtype):
        logits, state = model(xt, state)  # (S, W, V)
    if each:
        nats = F.cross_entropy(logits.float().flatten(0, 1), yt.flatten(), reduction="none")  # (S*W,)
        return nats.view(yt.shape).double().cpu().numpy(), state  # (S, W)
    nats = F.cross_entropy(logits.float().flatten(0, 1), yt.flatten(), reduction="sum")
    return float(nats), state


@torch.no_grad()
def evaluate(
    model: CharRNN,
    ids: np.ndarray,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    streams: int = EVAL_STREAMS,
    window: int = EVAL_WINDOW,
    should_stop: Callable[[], bool] | None = None,
    keep: np.ndarray | None = None,
) -> EvalResult | None:
    """One stateful pass; None if `should_stop` said so part-way (a Ctrl-C during a long validation).

    `keep`, a (K,) float64 array: filled with the nats of ids[1 : K + 1], each character's own share of
    the total (what `eval --show` colours by), from the very same pass, so they sum to what it reports."""
    device = torch.device(device)
    n = len(ids)
    if n < 2:
        raise CharRNNError(f"need at least 2 known characters to score, got {n}")
    was_training = model.training
    model.eval()
    try:
        # `ids` is only ever sliced, one window of each row at a time (and each window alone becomes int64),
        # so an array, a memory map or a data.IdFile on disk all work, and memory stays one window wide.
        rows = max(1, min(streams, (n - 1) // window or 1))
        length = (n - 1) // rows  # inputs per row
        starts = range(0, rows * length, length)
        total, state = 0.0, None
        for t in range(0, length, window):
            if should_stop is not None and should_stop():
                return None
            w = min(window, length - t)
            chunk = np.stack([ids[s + t : s + t + w + 1] for s in starts])  # (S, w + 1)
            nats, state = _score(model, chunk[:, :-1], chunk[:, 1:], state, device, dtype, keep is not None)
            if keep is not None:
                for s, row in zip(starts, nats):  # targets s+t+1 .. s+t+w are keep[s+t .. s+t+w-1]
                    lo, hi = s + t, min(s + t + w, len(keep))
                    if lo < hi:
                        keep[lo:hi] = row[: hi - lo]
                nats = float(nats.sum())
            total += nats
        tail = n - 1 - rows * length
        if tail:
            last = tuple(s[:, -1:].contiguous() for s in state)  # (layers, 1, H): the last row goes on
            rest = np.asarray(ids[rows * length : n])[None]  # (1, tail + 1)
            nats, _ = _score(model, rest[:, :-1], rest[:, 1:], last, device, dtype, keep is not None)
            if keep is not None:
                lo, hi = rows * length, min(n - 1, len(keep))
                if lo < hi:
                    keep[lo:hi] = nats[0, : hi - lo]
                nats = float(nats.sum())
            total += nats
        return EvalResult(chars=n - 1, nats=total)
    finally:
        model.train(was_training)


def eval_dtype(device: torch.device) -> torch.dtype:
    """fp32 on a CPU, the fast autocast dtype on a GPU. A reported figure must not depend on whether the CPU
    has native bf16: on an AVX-512 BF16 CPU bf16 moved a small model's nats/char by ~5e-5 against fp32, so
    `eval`, `sample --format jsonl` (numpy, fp32) and the Python API's `score` disagreed there."""
    return torch.float32 if device.type == "cpu" else pick_dtype("auto", device)


def evaluate_checkpoint(path, file=None, device: str = "auto", warn=lambda message: None, show: int = 0) -> dict:
    """`charrnn eval`: score FILE, or the validation split of the run's own corpus, with a checkpoint.

    Characters the model has never seen cannot be scored; they are skipped and counted. With `show`, the
    report also holds "shown": the first `show` + 1 ids, the nats of each after the first, and the model
    and vocabulary (for `eval --show`); the totals still cover the whole text.
    """
    from pathlib import Path

    from charrnn import checkpoint, data
    from charrnn.devices import pick_device

    ckpt = checkpoint.load(path)
    model, vocab = checkpoint.build_model(ckpt, path)
    dev = pick_device(device)
    model.to(dev)
    skipped = 0
    with tempfile.TemporaryDirectory(prefix="charrnn-eval-") as tmp:  # encoded ids of a FILE: on disk, not in RAM
        if file is not None:
            ids, skipped = data.encode_to_file(file, vocab, Path(tmp) / "ids.bin")
            label = str(file)
        else:
            ids, skipped, label = _validation_split(ckpt, path, vocab, Path(tmp) / "ids.bin", warn)
        keep = np.full(max(0, min(show, len(ids) - 1)), np.nan) if show else None  # (K,)
        try:  # evaluate refuses fewer than 2 known characters
            result = evaluate(model, ids, dev, eval_dtype(dev), keep=keep)
            head = np.asarray(ids[: len(keep) + 1]) if keep is not None else None
        finally:
            if isinstance(ids, data.IdFile):
                ids.close()
    total = (result.chars, result.nats)
    shown = {"shown": {"ids": head, "nats": keep, "model": model, "vocab": vocab, "total": total}} if show else {}
    return {
        **shown,
        "text": label,
        "chars": result.chars,
        "nats_per_char": result.nats_per_char,
        "bits_per_char": result.bits_per_char,
        "perplexity": result.perplexity,
        "skipped_unknown": skipped,
        "checkpoint": str(path),
    }


def _validation_split(ckpt: dict, path, vocab, scratch, warn) -> tuple[np.ndarray, int, str]:
    """The validation split of the run's own corpus: (its ids, characters skipped as unknown, a label)."""
    from pathlib import Path

    from charrnn import data
    from charrnn.config import TrainConfig, from_dict

    corpus = ckpt.get("corpus")
    if not corpus:
        raise CharRNNError(f"{path} records no training corpus: give a FILE to score")
    if len(ckpt.get("files") or []) > 1:
        return _validation_of_files(ckpt, vocab, warn)
    where = training_file(corpus["path"], corpus.get("size")) or Path(corpus["path"])
    if not where.is_file():
        raise CharRNNError(
            f"the run's corpus {where} is not there any more (moved or deleted): "
            "give the FILE to score, e.g. `charrnn eval corpus.txt`"
        )
    val_frac = from_dict(TrainConfig, ckpt.get("train_config", {})).val_frac
    if val_frac == 0:
        raise CharRNNError("the run trained with --val-frac 0, so it has no validation split: give a FILE")
    label = f"validation split of {where} (last {val_frac:.0%})"
    digest = data.file_digest(where) if where.stat().st_size == corpus["size"] else None
    if digest == corpus["sha256"]:
        return data.split(data.read_corpus(where, digest=digest).ids, val_frac)[1], 0, label
    warn(f"the run's corpus {where} changed since training; scoring the validation split of its current contents")
    all_ids, skipped = data.encode_to_file(where, vocab, scratch)
    try:
        return data.split(all_ids, val_frac)[1], skipped, label  # the split alone is read into memory
    finally:
        all_ids.close()


def _validation_of_files(ckpt: dict, vocab, warn) -> tuple[np.ndarray, int, str]:
    """The validation split of a run on several files: the last part of each, joined as in training."""
    from charrnn import dataset
    from charrnn.config import TrainConfig, from_dict

    cfg = from_dict(TrainConfig, ckpt.get("train_config", {}))
    if cfg.val_frac == 0:
        raise CharRNNError("the run trained with --val-frac 0, so it has no validation split: give a FILE")
    files = ckpt["files"]
    paths = [training_file(f["path"], f.get("size")) for f in files]
    for f, path in zip(files, paths):
        if path is None:
            raise CharRNNError(
                f"the run's corpus file {f['path']} is not there any more (moved or deleted): "
                "give the FILE to score, e.g. `charrnn eval text.txt`"
            )
    split = dataset.load(paths, cfg.val_frac, cfg.separator)
    for f, now in zip(files, split.files):  # read and hashed once, by the load itself
        if now.sha256 != f["sha256"]:
            warn(f"the run's corpus file {f['path']} changed since training; scoring its current contents")
    to_model = np.array([vocab.chars.find(c) for c in split.vocab.chars])  # (V_data,) model id, -1 if unknown
    ids = to_model[split.val]  # (N_val,)
    known = ids >= 0
    label = f"validation split of {len(files)} files (last {cfg.val_frac:.0%} of each)"
    return ids[known], int((~known).sum()), label
