"""The only module that calls torch.save / torch.load: atomic writes, weights-only loads, describing runs.

A checkpoint is one dict of plain data (tensors, numbers, strings, lists, dicts) so that
``torch.load(path, weights_only=True)`` reads it on any machine without running any code from it.
"""

from __future__ import annotations

import math
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from charrnn import data, dataset, weights
from charrnn.config import ModelConfig, from_dict
from charrnn.errors import CharRNNError
from charrnn.locate import BUNDLED, RUNS_DIR, newest_run, resolve
from charrnn.model import CharRNN
from charrnn.vocab import Vocab

__all__ = ["BUNDLED", "RUNS_DIR", "build_model", "describe", "load", "newest_run", "resolve", "save"]

FORMAT = "charrnn"
FORMAT_VERSION = 1


def save(payload: dict[str, Any], path: Path, weights_file: bool = True) -> None:
    """Write all or nothing: a reader, or a crash at any moment, sees the old file or the new one.

    The bytes go to a temporary file in the same folder (same filesystem, so the rename is atomic),
    are flushed and fsynced, then renamed over the target; the folder is fsynced so the rename lasts.
    Then, unless `weights_file` is false, the torch-free weights file beside it (weights.py), made the
    same way and tied to this checkpoint by its hash.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save({"format": FORMAT, "version": FORMAT_VERSION, **payload}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CharRNNError(
            f"could not write checkpoint {path}: {e.strerror or e} (free some disk space "
            "or choose another --out); the previous checkpoint is kept"
        ) from None
    _fsync_dir(path.parent)
    if weights_file:
        write_weights(payload, path)


def write_weights(ckpt: dict[str, Any], path: Path, out: Path | None = None) -> Path:
    """The weights file for the checkpoint `ckpt` saved at `path` (a sampler that needs no torch), beside
    it or at `out` (charrnn export); either way tied to that checkpoint by its hash."""
    out = weights.beside(path) if out is None else Path(out)
    tensors = {k: v.detach().to("cpu", torch.float32).numpy() for k, v in ckpt["model"].items()}
    cfg = from_dict(ModelConfig, ckpt["model_config"])
    weights.write(out, tensors, cfg, ckpt["vocab"], weights.info_of(ckpt), data.file_digest(path))
    return out


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # not possible on every platform (Windows); the rename itself is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load(path: Path) -> dict[str, Any]:
    """Read a checkpoint with weights_only=True onto the CPU, with one clear error per way it can be bad."""
    path = Path(path)
    if not path.exists():
        raise CharRNNError(f"checkpoint not found: {path} (train one with `charrnn train`)")
    if path.is_dir():
        raise CharRNNError(f"{path} is a folder with no best.pt or last.pt in it (train one with `charrnn train`)")
    if path.stat().st_size == 0:
        raise CharRNNError(f"checkpoint {path} is empty (0 bytes): it was never fully written; use another one")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (
        pickle.UnpicklingError,
        RuntimeError,
        EOFError,
        zipfile.BadZipFile,
        ValueError,
        OSError,
        KeyError,
        IndexError,
    ) as e:
        if isinstance(e, pickle.UnpicklingError) and "global" in str(e).lower():
            # torch's weights-only unpickler met a class or function reference: code, not data
            raise CharRNNError(
                f"refusing to load {path}: it holds code or objects, not plain data, and "
                "charrnn only loads weights (never open checkpoints you do not trust)"
            ) from None
        raise CharRNNError(
            f"{path} is not a readable checkpoint: it is truncated or corrupt (copy it again, or use another one)"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CharRNNError(f"{path} is a torch file but not a charrnn checkpoint")
    version = ckpt.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CharRNNError(
            f"{path} has checkpoint format {version!r}, newer than this charrnn understands "
            f"({FORMAT_VERSION}): upgrade charrnn (pip install -U charrnn)"
        )
    for key in ("model_config", "model", "vocab"):
        if key not in ckpt:
            raise CharRNNError(f"{path} is not a complete charrnn checkpoint: it has no {key!r}")
    return ckpt


def build_model(ckpt: dict[str, Any], path: Path | str = "checkpoint") -> tuple[CharRNN, Vocab]:
    """The model and vocabulary a checkpoint describes, weights loaded, on the CPU."""
    try:
        vocab = Vocab(ckpt["vocab"])
        cfg = from_dict(ModelConfig, ckpt["model_config"])
        model = CharRNN(cfg)
        model.load_state_dict(ckpt["model"])
    except (CharRNNError, RuntimeError, TypeError, KeyError) as e:
        first = str(e).strip().splitlines()[0][:160]
        raise CharRNNError(f"{path}: its weights do not match its model config ({first})") from None
    if cfg.vocab_size != len(vocab):
        raise CharRNNError(f"{path}: vocabulary of {len(vocab)} characters but a model for {cfg.vocab_size}")
    return model, vocab


def _corpus_where(recorded: str) -> str:
    """The corpus's path where it is on this machine (a local run), else only its file name: a path from
    the disk of whoever trained the model means nothing here."""
    return recorded if Path(recorded).is_file() else Path(recorded).name


def _corpus_line(ckpt: dict[str, Any]) -> str:
    files = ckpt.get("files") or []
    if len(files) <= 1:
        corpus = ckpt.get("corpus") or {}
        return f"{_corpus_where(corpus.get('path', '?'))} ({corpus.get('size', 0):,} bytes)"
    return f"{len(files)} files, {sum(f.get('size', 0) for f in files):,} bytes ({dataset.names_of(ckpt)})"


def _lineage(init: dict[str, Any]) -> str:
    best = init.get("best_val")
    where = (
        "the bundled model" if Path(init.get("checkpoint", "")).resolve() == BUNDLED.resolve() else init["checkpoint"]
    )
    return (
        f"{where} (step {init.get('step', 0):,} on {init.get('corpus', '?')}"
        f"{f', val {best:.4f} nats/char' if best is not None else ''})"
    )


def describe(path: Path) -> dict[str, Any]:
    """What `charrnn info` shows: enough to know which model this is and how far it trained."""
    ckpt = load(path)
    model, vocab = build_model(ckpt, path)
    cfg = model.cfg
    from charrnn.model import count_parameters

    best = ckpt.get("best_val")
    dropout = "auto" if cfg.dropout is None else f"{cfg.dropout:g}"  # None: saved before a time budget settled it
    return {
        "model": f"{cfg.model} {cfg.layers}x{cfg.hidden} (embed {cfg.embed}, dropout {dropout}"
        f"{', locked' if cfg.locked_dropout else ''}"
        f"{f', weight drop {cfg.weight_drop:g}' if cfg.weight_drop else ''}"
        f"{', tied' if cfg.tie_weights else ''}"
        f"{f', adaptive softmax {list(cfg.cutoffs)}' if cfg.cutoffs else ''})",
        "parameters": f"{count_parameters(model):,}",
        **({"shape chosen": ckpt["sizing"]} if ckpt.get("sizing") else {}),
        "vocabulary": f"{len(vocab)} characters: {vocab.preview()}",
        "steps": f"{ckpt.get('step', 0):,}",
        "training time": f"{ckpt.get('elapsed', 0.0):,.1f} s",
        "best val loss": "n/a" if best is None else f"{best:.4f} nats/char ({best / math.log(2):.4f} bpc)",
        "corpus": _corpus_line(ckpt),
        **({"started from": _lineage(ckpt["init"])} if ckpt.get("init") else {}),
        "bundled": "yes (the model shipped with charrnn)" if Path(path).resolve() == BUNDLED.resolve() else "no",
    }
