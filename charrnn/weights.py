"""The torch-free weights file: `<name>.safetensors` beside each `<name>.pt`, holding the model's weights
with the vocabulary and the model config in its metadata. numpy reads it without pickle and without torch,
so `charrnn sample` on a CPU starts at once; other tools (and other languages) read it as they read any
safetensors file. Imports no torch.

A weights file records the SHA-256 of the checkpoint it was made from and is used only while that
checkpoint is unchanged: a .pt rewritten without its weights file (by an older charrnn) makes the old
file stale, never wrong. Hashing a checkpoint takes milliseconds; importing torch takes seconds.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from charrnn.atomic import replace_with
from charrnn.config import ModelConfig, from_dict
from charrnn.data import file_digest
from charrnn.dataset import files_of, names_of
from charrnn.errors import CharRNNError
from charrnn.vocab import Vocab

SUFFIX = ".safetensors"
FORMAT = "charrnn-weights"
VERSION = 1


@dataclass(frozen=True)
class Weights:
    tensors: dict[str, np.ndarray]  # the model's state_dict, float32
    cfg: ModelConfig
    vocab: Vocab
    path: Path
    info: dict  # what the checkpoint said about the run: steps, best validation loss, corpus, lineage
    checkpoint_sha256: str  # of the .pt these weights were taken from ("" for a file written on its own)


def beside(checkpoint: Path) -> Path:
    """The weights file that goes with a checkpoint: best.pt -> best.safetensors."""
    return Path(checkpoint).with_suffix(SUFFIX)


def for_checkpoint(checkpoint: Path) -> Weights | None:
    """The weights file beside a checkpoint, if there is one made from exactly that checkpoint."""
    path = beside(checkpoint)
    if not path.is_file():
        return None
    try:
        found = read(path)
    except CharRNNError:
        return None  # unreadable: it is rewritten from the checkpoint
    if "corpus_files" not in found.info:  # written before it recorded the training files: made again
        return None
    return found if found.checkpoint_sha256 == file_digest(checkpoint) else None


def write(
    path: Path,
    tensors: Mapping[str, np.ndarray],
    cfg: ModelConfig,
    vocab: str,
    info: Mapping | None = None,
    checkpoint_sha256: str = "",
) -> None:
    """Write all or nothing (a temporary file renamed over the target), like a checkpoint. `info`: more
    plain data for the metadata (steps, best validation loss, corpus), for whoever reads the file."""
    from safetensors.numpy import save_file

    path = Path(path)
    meta = {
        "format": FORMAT,
        "version": str(VERSION),
        "model_config": json.dumps(asdict(cfg)),
        "vocab": json.dumps(vocab, ensure_ascii=False),
        "info": json.dumps(dict(info or {})),
        "checkpoint_sha256": checkpoint_sha256,
    }
    arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}  # tied weights: copies

    def save(tmp: Path) -> None:
        save_file(arrays, tmp, metadata=meta)
        os.chmod(tmp, 0o644)  # safetensors creates it private; it is as shareable as the checkpoint
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())

    replace_with(path, save)


def read(path: Path) -> Weights:
    """Weights, config and vocabulary from a weights file, with one clear error for a file that is not one."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(path, framework="np") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise CharRNNError(f"{path} is a safetensors file but not charrnn weights (no charrnn metadata)")
            if int(meta.get("version", "0")) > VERSION:
                raise CharRNNError(f"{path} is from a newer charrnn: upgrade charrnn (pip install -U charrnn)")
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
        cfg = from_dict(ModelConfig, json.loads(meta["model_config"]))
        vocab = Vocab(json.loads(meta["vocab"]))
        info = json.loads(meta.get("info", "{}"))
    except (OSError, SafetensorError, ValueError, KeyError, TypeError) as e:
        raise CharRNNError(f"{path} is not a readable charrnn weights file ({str(e)[:120]})") from None
    if cfg.vocab_size != len(vocab):
        raise CharRNNError(f"{path}: vocabulary of {len(vocab)} characters but a model for {cfg.vocab_size}")
    return Weights(tensors, cfg, vocab, path, info, meta.get("checkpoint_sha256", ""))


def info_of(ckpt: Mapping) -> dict:
    """What a weights file keeps of a checkpoint's description of its run (for `info` and the Python API)."""
    return {
        "steps": ckpt.get("step", 0),
        "best_val": ckpt.get("best_val"),
        "corpus": names_of(ckpt) or None,
        "corpus_files": [  # as recorded (paths on the training machine), for the copy check
            {"path": f["path"], "size": f.get("size")} for f in files_of(ckpt)
        ],
        "init": ckpt.get("init"),
        "sizing": ckpt.get("sizing") or None,
    }
