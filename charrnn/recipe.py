"""Everything before the first step: the run (its folder and lock, the text it reads, the process group, what
its checkpoints record) and the training state it starts from: fresh, resumed from last.pt, or grown from
a trained model (--init), with the shape, learning rate and dropout chosen for what the user left open.

`prepare` returns the pieces; the loop in loop.py only trains them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from charrnn import checkpoint, dataset, finetune, locate, sizing
from charrnn.config import (
    FINETUNE_WEIGHT_DECAY,
    ModelConfig,
    TrainConfig,
    auto_cutoffs,
    auto_dropout,
    auto_eval_every,
    auto_lr,
    from_dict,
    to_dict,
)
from charrnn.data import Streams
from charrnn.devices import keep_freed_memory, pick_device, pick_dtype
from charrnn.distributed import Dist
from charrnn.errors import CharRNNError
from charrnn.model import CharRNN
from charrnn.runs import RunLock, ensure_writable, pick_run_dir
from charrnn.state import TrainingState
from charrnn.vocab import Vocab

DEFAULT_CORPUS = Path("corpora") / "shakespeare.txt"
# What a resumed run may not change: the model, and what fixes the data layout and the carried state.
FIXED_ON_RESUME = {"seq_len", "batch_size", "val_frac", "separator"}
FINETUNE_WARMUP = 10  # steps: the weights are trained already, a long warmup only wastes a short budget
SHAPE_KEYS = ("model", "layers", "hidden", "embed", "tie_weights", "cutoffs")

Corpus = str | os.PathLike | Sequence[str | os.PathLike] | None


def corpus_specs(corpus: Corpus) -> list[Path]:
    """PATHs as given; none means ./corpora/shakespeare.txt, or the copy shipped with charrnn elsewhere
    (locate.shipped_corpora; the wheel's place, named in the error, when neither has it)."""
    if corpus is None or (not isinstance(corpus, (str, os.PathLike)) and len(corpus) == 0):
        places = locate.shipped_corpora(DEFAULT_CORPUS.name)
        shipped = next((p for p in places if p.exists()), places[0])
        return [DEFAULT_CORPUS if DEFAULT_CORPUS.exists() else shipped]
    if isinstance(corpus, (str, os.PathLike)):
        return [Path(corpus)]
    return [Path(c) for c in corpus]


@dataclass
class Run:
    """One run's place and inputs: the folder (locked while training), the text, the process group, the
    configs, and what its checkpoints say about where the model came from."""

    dir: Path
    dist: Dist
    data: dataset.Dataset
    vocab: Vocab  # the model's: larger than the text's when fine-tuning added characters
    val_ids: np.ndarray  # (N_val,) what validation scores, in the model's ids
    model_cfg: ModelConfig
    cfg: TrainConfig
    device: torch.device
    dtype: torch.dtype
    resumed: bool
    sizing: str = ""  # the line saying which shape was chosen and why
    init: dict[str, Any] | None = None  # the model this run started from (--init)
    notes: list[str] = field(default_factory=list)  # lines to show when training starts

    @property
    def metrics_path(self) -> Path:
        return self.dir / "metrics.jsonl"

    def lock(self) -> RunLock:
        ensure_writable(self.dir)
        return RunLock(self.dir)

    def record(self) -> dict[str, Any]:
        """What every checkpoint of this run carries besides the training state."""
        return {
            "model_config": to_dict(self.model_cfg),
            "vocab": self.vocab.chars,
            "train_config": to_dict(self.cfg),
            **self.data.record(),
            "precision": str(self.dtype).removeprefix("torch."),
            "sizing": self.sizing,
            "init": self.init,
        }

    def log_metrics(self, row: dict[str, Any]) -> None:
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    def trim_metrics(self, step: int) -> int:
        """On resume, drop rows written after the checkpoint, so the log reads as one uninterrupted run;
        returns how many torn lines (half-written when a run was killed) were dropped."""
        if not self.metrics_path.exists():
            return 0
        rows, torn = [], 0
        for line in self.metrics_path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                rows.append((json.loads(line)["step"], line))
            except (ValueError, KeyError, TypeError):
                torn += line.strip() != ""
        keep = [line for at, line in rows if isinstance(at, int) and at <= step]
        self.metrics_path.write_text("".join(r + "\n" for r in keep), encoding="utf-8")
        return torn

    def append_sample(self, head: str, text: str) -> None:
        with open(self.dir / "samples.txt", "a", encoding="utf-8") as f:
            f.write(f"{head}\n{text}\n\n")


def _merge(cls: type, saved: dict[str, Any] | None, flags: dict[str, Any], fixed: set[str] | None, what: str) -> Any:
    """Config from a checkpoint (if resuming) with flags on top; keys in `fixed` (None: all) may not change."""
    if saved is None:
        return cls(**flags)
    base = from_dict(cls, saved)
    for key, value in flags.items():
        old = getattr(base, key)
        if (fixed is None or key in fixed) and value != old:
            flag = "--" + key.replace("_", "-")
            raise CharRNNError(
                f"{flag} {value} contradicts the {what} being resumed ({flag} {old}): "
                f"drop the flag to resume, or start a new run with --out"
            )
    return replace(base, **flags)


def _from_base(base: ModelConfig, flags: dict[str, Any]) -> dict[str, Any]:
    """Model flags for a run that starts from `base`: its shape, which a flag may repeat but not change;
    regularisation (dropout, locked dropout, weight drop) stays the new run's own, automatic or given."""
    for key in SHAPE_KEYS:
        if key in flags and flags[key] != getattr(base, key):
            flag = "--" + key.replace("_", "-")
            raise CharRNNError(
                f"{flag} {flags[key]} contradicts the model given to --init ({flag} {getattr(base, key)}): "
                "its shape comes from that checkpoint; drop the flag, or train from scratch without --init"
            )
    return {**flags, **{key: getattr(base, key) for key in SHAPE_KEYS}}


def base_model(spec: str | os.PathLike) -> tuple[dict[str, Any], CharRNN, Vocab]:
    """The model --init names (a checkpoint, a run folder, or `bundled`), and the lineage to record."""
    path = checkpoint.resolve(Path(spec)) if str(spec) != "bundled" else checkpoint.BUNDLED
    ckpt = checkpoint.load(path)
    model, vocab = checkpoint.build_model(ckpt, path)
    lineage = {
        "checkpoint": str(path),
        "step": ckpt.get("step", 0),
        "corpus": dataset.names_of(ckpt) or "?",
        "best_val": ckpt.get("best_val"),
    }
    return lineage, model, vocab


def _plan(
    model_flags: dict[str, Any],
    train_flags: dict[str, Any],
    cfg: TrainConfig,
    train_ids: np.ndarray,
    device: torch.device,
    dtype: torch.dtype,
    dist: Dist,
    from_init: bool,
    val_chars: int,
    eval_at_seconds: tuple[float, ...],
) -> sizing.Plan:
    """What sizing chooses for this run (see sizing.plan); its line is shown and saved in checkpoints.
    `val_chars` and `eval_at_seconds`: the validations the budget pays for, so its planned steps are made."""
    fixed = {k: model_flags[k] for k in ("layers", "hidden") if model_flags.get(k) is not None}
    if "batch_size" in train_flags:
        fixed["batch_size"] = train_flags["batch_size"]
    if model_flags.get("tie_weights") and "hidden" not in fixed:  # tied weights need hidden == embed
        fixed["hidden"] = model_flags.get("embed", ModelConfig.embed)

    def eval_every(shape: sizing.Shape) -> int:
        """The steps between validations a run of `shape` will have (as prepare picks them)."""
        if "eval_every" in train_flags:
            return cfg.eval_every
        return auto_eval_every((len(train_ids) - 1) // shape.batch_size // cfg.seq_len)

    overhead = sizing.Overhead(val_chars=val_chars, eval_every=eval_every, at_seconds=eval_at_seconds)
    plan = sizing.plan(
        model_flags, fixed, cfg, train_ids, device, dtype, dist.world, share=dist.broadcast, overhead=overhead
    )
    if from_init and plan.note:  # the model's shape came from --init, not from the probe
        plan = replace(plan, note=plan.note.replace("--layers, --hidden, --batch-size set it", "--init set the shape"))
    return plan


def prepare(
    corpus: Corpus,
    model_flags: dict[str, Any],
    train_flags: dict[str, Any],
    out: str | os.PathLike | None = None,
    resume: bool = False,
    init: str | os.PathLike | None = None,
    dist: Dist | None = None,
    eval_at_seconds: Iterable[float] = (),
) -> tuple[Run, TrainingState, Streams]:
    """The run, its training state and its streams. Flags are only what the user gave; the config defaults
    and, when resuming, the checkpoint supply the rest. `eval_at_seconds`: validations besides the
    schedule's, which the automatic shape plans for."""
    if init is not None and resume:
        raise CharRNNError("--init starts a new run and --resume continues one: give one of them")
    dist = dist or Dist()
    specs = corpus_specs(corpus)
    run_dir = pick_run_dir(out, specs[0], resume)
    saved: dict[str, Any] | None = None
    if resume:
        last = run_dir / "last.pt"
        if not last.exists():
            raise CharRNNError(f"nothing to resume in {run_dir}: it has no last.pt (start a new run without --resume)")
        saved = checkpoint.load(last)
        if saved.get("resume") is None:
            raise CharRNNError(f"{last} has no resume state")
        if corpus is None:
            specs = [Path(p) for p in dataset.paths_of(saved)]
    cfg: TrainConfig = _merge(TrainConfig, saved and saved["train_config"], train_flags, FIXED_ON_RESUME, what="run")
    data = dataset.load(specs, cfg.val_frac, cfg.separator)
    lineage, base, base_vocab = base_model(init) if init is not None else (None, None, None)
    if saved is not None:
        lineage = saved.get("init")
        vocab = Vocab(saved["vocab"])  # a fine-tuned run's vocabulary is larger than its corpus's
        if not set(data.vocab.chars) <= set(vocab.chars):
            raise CharRNNError(
                f"{', '.join(map(str, specs))} has a different character set from the run in {run_dir}: "
                "resume with the corpus it was trained on"
            )
        dataset.check_unchanged(saved, data, run_dir)
    elif base is not None:
        vocab = finetune.merged_vocab(base_vocab, data.vocab.chars)
        model_flags = _from_base(base.cfg, model_flags)
        cfg = replace(cfg, warmup_steps=min(cfg.warmup_steps, FINETUNE_WARMUP))
        if "weight_decay" not in train_flags:  # decay pulls the start model's weights towards zero
            cfg = replace(cfg, weight_decay=FINETUNE_WEIGHT_DECAY)
    else:
        vocab = data.vocab
    id_map = finetune.id_map(data.vocab, vocab)
    model_flags = {**model_flags, "vocab_size": len(vocab)}
    if saved is None:  # a large vocabulary gets an adaptive softmax (a resumed run keeps its head)
        model_flags.setdefault("cutoffs", auto_cutoffs(len(vocab)))
    val_ids = data.val[: cfg.val_chars]  # --val-chars: a cheaper validation on a huge split
    if id_map is not None:
        val_ids = id_map[val_ids]  # (N_val,) in the model's ids
    if cfg.val_frac > 0 and len(val_ids) < 2:
        raise CharRNNError(
            f"the validation split has {len(val_ids)} characters: raise --val-frac, "
            "use a longer corpus, or pass --val-frac 0 to train without validation"
        )
    device = dist.device or pick_device(cfg.device)
    dtype = pick_dtype(cfg.precision, device)
    val_chars = len(val_ids) if cfg.val_frac > 0 else 0
    milestones = tuple(eval_at_seconds)
    if device.type == "cpu":
        keep_freed_memory()  # before the probe, which must time the steps the run will make
    sizing_note = saved.get("sizing", "") if saved is not None else ""
    notes: list[str] = list(data.notices)
    plan = sizing.Plan(None, None)
    if saved is None:  # a resumed run keeps its shape; a new one may have it chosen
        plan = _plan(
            model_flags, train_flags, cfg, data.train, device, dtype, dist, base is not None, val_chars, milestones
        )
        if plan.choice is not None:
            shape = plan.choice.shape
            model_flags = {**model_flags, "model": plan.cell, "layers": shape.layers, "hidden": shape.hidden}
            cfg = replace(cfg, batch_size=shape.batch_size)
        if "lr" not in train_flags:
            cfg = replace(cfg, lr=auto_lr(model_flags.get("hidden", ModelConfig.hidden)))
        if plan.note:
            sizing_note = plan.note
            notes.append(plan.note)
    model_cfg: ModelConfig = _merge(ModelConfig, saved and saved["model_config"], model_flags, None, what="checkpoint")
    streams = Streams(data.train, cfg.batch_size, cfg.seq_len, dist.rank, dist.world, id_map)
    if saved is None and "eval_every" not in train_flags:
        cfg = replace(cfg, eval_every=auto_eval_every(streams.windows))

    torch.manual_seed(cfg.seed)
    model = CharRNN(model_cfg).to(device)
    if base is not None:
        model.load_state_dict(finetune.extend(base, base_vocab, vocab).state_dict())
    elif saved is not None:
        checkpoint.build_model(saved, run_dir / "last.pt")  # a clear error if the weights do not fit the config
    elif model.adaptive:
        counts = np.bincount(data.train if id_map is None else id_map[data.train], minlength=len(vocab))
        model.set_frequency_order(torch.from_numpy(counts))
    if model_cfg.dropout is None:
        if plan.choice is None and cfg.budget_seconds is not None:  # resuming an old run: measure it
            plan = _plan(
                to_dict(model_cfg),
                {"batch_size": cfg.batch_size, "eval_every": cfg.eval_every},
                cfg,
                data.train,
                device,
                dtype,
                dist,
                False,
                val_chars,
                milestones,
            )
            if plan.note:
                sizing_note = plan.note
                notes.append(plan.note)
        choice = plan.choice
        planned = cfg.steps if choice is None else choice.steps
        source = "--steps" if choice is None or choice.rate is None else "the budget"
        passes = planned / streams.windows
        model_cfg = replace(model_cfg, dropout=auto_dropout(passes, model_cfg.model))
        model.set_dropout(model_cfg.dropout)
        notes.append(
            f"dropout {model_cfg.dropout:g}: {source} allows about {passes:.1f} passes over the "
            "training text (--dropout sets it)"
        )
    run = Run(run_dir, dist, data, vocab, val_ids, model_cfg, cfg, device, dtype, resume, sizing_note, lineage, notes)
    state = TrainingState(model, cfg, device, dtype, dist)
    state.prior_elapsed = plan.seconds  # the probe counts against the budget
    if saved is not None:
        state.load_state_dict(saved)
    return run, state, streams
