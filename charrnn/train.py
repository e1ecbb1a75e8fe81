"""The training loop: TBPTT windows -> model -> loss -> clip -> AdamW -> schedule, with periodic
validation, best/last checkpoints, step and time budgets, interruption, exact resume and several processes.

It reports through a callback and returns numbers; it never parses flags or renders anything.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from charrnn import checkpoint, data, finetune, sizing
from charrnn.config import (
    ModelConfig,
    SampleConfig,
    TrainConfig,
    auto_cutoffs,
    auto_dropout,
    auto_lr,
    from_dict,
    to_dict,
)
from charrnn.devices import autocast, pick_device, pick_dtype
from charrnn.distributed import Dist
from charrnn.errors import CharRNNError
from charrnn.evaluate import EvalResult, evaluate
from charrnn.model import CharRNN, State, detach_state
from charrnn.runs import RunLock, ensure_writable, pick_run_dir
from charrnn.sample import generate
from charrnn.vocab import Vocab

DEFAULT_CORPUS = Path("corpora") / "shakespeare.txt"
PACKAGED_CORPUS = Path(__file__).parent / "corpora" / "shakespeare.txt"
EMA_DECAY = 0.98  # smoothing of the displayed train loss: about the last 50 steps
BAD_STEPS_BEFORE_RESTORE = 3  # non-finite steps in a row before going back to the last good state
MAX_RESTORES = 3  # restores (each halving the learning rate) before giving up


@dataclass
class TrainEvent:
    """What the loop tells its caller: after every step ("step"), every validation ("eval"), and notices."""

    kind: str
    step: int
    total_steps: int | None
    progress: float  # fraction of the budget used, 0..1
    elapsed: float
    loss: float | None  # smoothed train loss, nats/char
    lr: float
    chars_per_s: float
    val: EvalResult | None = None
    best_val: float | None = None
    message: str = ""


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    elapsed: float
    best_val: float | None
    last_val: EvalResult | None
    signal: int | None  # the signal that stopped the run early, if one did
    resumed: bool
    rank: int = 0  # under torchrun: this process's rank, and the number of processes
    world: int = 1


def resolve_corpus(corpus: str | os.PathLike | None) -> Path:
    """The default corpus is ./corpora/shakespeare.txt, or the copy inside the package when run elsewhere."""
    if corpus is not None:
        return Path(corpus)
    return DEFAULT_CORPUS if DEFAULT_CORPUS.exists() else PACKAGED_CORPUS


def lr_at(cfg: TrainConfig, step: int, progress: float) -> float:
    """Linear warmup over warmup_steps, then cosine decay to min_lr_frac * lr at the end of the budget."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_frac + (1.0 - cfg.min_lr_frac) * cosine)


def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy in fp32 whatever the autocast dtype: the loss is the master quantity."""
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())  # (B*T, V) vs (B*T,)


def forward_loss(
    net: torch.nn.Module, model: CharRNN, x: torch.Tensor, y: torch.Tensor, state: State | None
) -> tuple[torch.Tensor, State]:
    """The window's mean loss and the new state, through `net` (the model, or its DDP wrapper). A full
    softmax goes through loss_fn on the logits; an adaptive head computes its own loss, never the logits."""
    if model.adaptive:
        return net(x, state, y)
    logits, state = net(x, state)  # (B, T, V)
    return loss_fn(logits, y), state


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; weight decay on matrices only (biases and gains are not regularised)."""
    params = list(dict.fromkeys(model.parameters()))  # tied weights once
    decay = [p for p in params if p.dim() >= 2]
    rest = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99))


class StopSignals:
    """SIGINT/SIGTERM only raise a flag, so the current step and any checkpoint write finish untouched
    (a second Ctrl-C while saving changes nothing); the loop stops at the next step boundary."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = self.received or signum

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


# What a resumed run may not change: the model, and what fixes the data layout and the carried state.
FIXED_ON_RESUME = {"seq_len", "batch_size", "val_frac"}


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


def _check_same_corpus(saved: dict[str, Any], now: data.CorpusInfo, path: Path, run_dir: Path) -> None:
    """A resumed run continues at a position in the text and with the state it had there: on other text
    both would be silently wrong, so any change to the content is refused (the hash says)."""
    if not saved.get("sha256") or saved["sha256"] == now.sha256:
        return
    change = (
        f"{saved.get('size', 0):,} bytes then, {now.size:,} now"
        if saved.get("size") != now.size
        else "same size, different content"
    )
    if Path(saved.get("path", "")).resolve() != path.resolve():
        raise CharRNNError(
            f"{path} is not the text the run in {run_dir} trained on ({Path(saved.get('path', '?')).name}, "
            f"{saved.get('size', 0):,} bytes): resume with that file, or start a new run on this one (a new --out)"
        )
    raise CharRNNError(
        f"{path} has changed since the run in {run_dir} trained on it ({change}): resume with the original "
        f"text, or start a new run from these weights: charrnn train {path} --init {run_dir} --out NEW_FOLDER"
    )


FINETUNE_WARMUP = 10  # steps: the weights are trained already, a long warmup only wastes a short budget
SHAPE_KEYS = ("model", "layers", "hidden", "embed", "tie_weights", "cutoffs")


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


class Trainer:
    """One training run, start to finish. Holds the state that a checkpoint must capture to resume."""

    def __init__(
        self,
        corpus: Path | None,
        model_flags: dict[str, Any],
        train_flags: dict[str, Any],
        out: str | os.PathLike | None,
        resume: bool,
        report: Callable[[TrainEvent], None] | None,
        dist: Dist | None = None,
        init: str | os.PathLike | None = None,
    ) -> None:
        if init is not None and resume:
            raise CharRNNError("--init starts a new run and --resume continues one: give one of them")
        self.dist = dist or Dist()  # the process group, joined by train() (one process when not given)
        self.report = report if (report and self.dist.is_main) else (lambda event: None)
        self.resumed = resume
        corpus_path = resolve_corpus(corpus)
        self.run_dir = pick_run_dir(out, corpus_path, resume)
        self.saved: dict[str, Any] | None = None
        if resume:
            last = self.run_dir / "last.pt"
            if not last.exists():
                raise CharRNNError(
                    f"nothing to resume in {self.run_dir}: it has no last.pt (start a new run without --resume)"
                )
            self.saved = checkpoint.load(last)
            if corpus is None:
                corpus_path = Path(self.saved["corpus"]["path"])
        self.cfg: TrainConfig = _merge(
            TrainConfig, self.saved and self.saved["train_config"], train_flags, FIXED_ON_RESUME, what="run"
        )
        self.corpus = data.read_corpus(corpus_path)
        self.init, base = self._base_model(init) if init is not None else (None, None)
        if self.saved is not None:
            self.init = self.saved.get("init")
            self.vocab = Vocab(self.saved["vocab"])  # a fine-tuned run's vocabulary is larger than its corpus's
            if not set(self.corpus.vocab.chars) <= set(self.vocab.chars):
                raise CharRNNError(
                    f"{corpus_path} has a different character set from the run in {self.run_dir}: "
                    "resume with the corpus it was trained on"
                )
            _check_same_corpus(self.saved.get("corpus") or {}, self.corpus.info, corpus_path, self.run_dir)
        elif base is not None:
            self.vocab = finetune.merged_vocab(base[1], self.corpus.vocab.chars)
            model_flags = _from_base(base[0].cfg, model_flags)
            self.cfg = replace(self.cfg, warmup_steps=min(self.cfg.warmup_steps, FINETUNE_WARMUP))
        else:
            self.vocab = self.corpus.vocab
        id_map = finetune.id_map(self.corpus.vocab, self.vocab)
        model_flags = {**model_flags, "vocab_size": len(self.vocab)}
        if self.saved is None:  # a large vocabulary gets an adaptive softmax (a resumed run keeps its head)
            model_flags.setdefault("cutoffs", auto_cutoffs(len(self.vocab)))
        train_ids, self.val_ids = data.split(self.corpus.ids, self.cfg.val_frac)
        self.val_ids = self.val_ids[: self.cfg.val_chars]  # --val-chars: a cheaper validation on a huge split
        if id_map is not None:
            self.val_ids = id_map[self.val_ids]  # (N_val,) in the model's ids
        if self.cfg.val_frac > 0 and len(self.val_ids) < 2:
            raise CharRNNError(
                f"the validation split has {len(self.val_ids)} characters: raise --val-frac, "
                "use a longer corpus, or pass --val-frac 0 to train without validation"
            )
        self.device = self.dist.device or pick_device(self.cfg.device)
        self.dtype = pick_dtype(self.cfg.precision, self.device)
        self.sizing = self.saved.get("sizing", "") if self.saved is not None else ""
        self._notes: list[str] = []
        plan = sizing.Plan(None, None)
        if self.saved is None:  # a resumed run keeps its shape; a new one may have it chosen
            plan = self._plan(model_flags, train_flags, train_ids)
            if plan.choice is not None:
                shape = plan.choice.shape
                model_flags = {**model_flags, "model": plan.cell, "layers": shape.layers, "hidden": shape.hidden}
                self.cfg = replace(self.cfg, batch_size=shape.batch_size)
            if "lr" not in train_flags:
                self.cfg = replace(self.cfg, lr=auto_lr(model_flags.get("hidden", ModelConfig.hidden)))
        self.model_cfg: ModelConfig = _merge(
            ModelConfig, self.saved and self.saved["model_config"], model_flags, None, what="checkpoint"
        )
        self.streams = data.Streams(
            train_ids, self.cfg.batch_size, self.cfg.seq_len, self.dist.rank, self.dist.world, id_map
        )

        torch.manual_seed(self.cfg.seed)
        self.model = CharRNN(self.model_cfg).to(self.device)
        if base is not None:
            grown = finetune.extend(base[0], base[1], self.vocab)
            self.model.load_state_dict(grown.state_dict())
        elif self.model.adaptive and self.saved is None:
            counts = np.bincount(train_ids if id_map is None else id_map[train_ids], minlength=len(self.vocab))
            self.model.set_frequency_order(torch.from_numpy(counts))
        if self.model_cfg.dropout is None:
            if plan.choice is None and self.cfg.budget_seconds is not None:  # resuming an old run: measure it
                plan = self._plan(to_dict(self.model_cfg), {"batch_size": self.cfg.batch_size}, train_ids)
            choice = plan.choice
            source = "--steps" if choice is None or choice.rate is None else "the budget"
            self._notes.append(self._choose_dropout(self.cfg.steps if choice is None else choice.steps, source))
        self.opt = make_optimizer(self.model, self.cfg)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        self.step, self.prior_elapsed, self.best_val = 0, plan.seconds, None  # the probe counts against the budget
        self.loss_ema, self.loss_n, self.lr_scale = 0.0, 0, 1.0
        self.last_val: EvalResult | None = None
        self.state: State | None = None
        if self.saved is not None:
            self._restore(self.saved)
        self.ddp_model = self.dist.wrap(self.model)
        self._good = self._snapshot()

    # ---- checkpoint contents -------------------------------------------------------------------
    def _payload(self, resumable: bool, carried: list[torch.Tensor] | None = None) -> dict[str, Any]:
        payload = {
            "model": self.model.state_dict(),
            "model_config": to_dict(self.model_cfg),
            "vocab": self.vocab.chars,
            "train_config": to_dict(self.cfg),
            "corpus": asdict(self.corpus.info),
            "step": self.step,
            "elapsed": self.elapsed(),
            "best_val": self.best_val,
            "last_val": None if self.last_val is None else asdict(self.last_val),
            "precision": str(self.dtype).removeprefix("torch."),
            "sizing": self.sizing,
            "init": self.init,  # the model this run started from (--init), or None
        }
        if resumable:  # what --resume needs; best.pt leaves it out to stay small and shareable
            payload["resume"] = {
                "optimizer": self.opt.state_dict(),
                "rng_torch": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
                "window": self.step % self.streams.windows,
                "carried_state": carried,  # None before the first step or after a skipped one: a fresh state
                "loss_ema": self.loss_ema,
                "loss_n": self.loss_n,
                "lr_scale": self.lr_scale,
                "scaler": self.scaler.state_dict(),  # fp16's loss scale: {} when no scaler is in use
                "world": self.dist.world,
            }
        return payload

    def _restore(self, ckpt: dict[str, Any]) -> None:
        model, _ = checkpoint.build_model(ckpt, self.run_dir / "last.pt")
        self.model.load_state_dict(model.state_dict())
        res = ckpt.get("resume")
        if res is None:
            raise CharRNNError(f"{self.run_dir / 'last.pt'} has no resume state")
        self.opt.load_state_dict(res["optimizer"])
        torch.set_rng_state(res["rng_torch"])
        if res["rng_cuda"] and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(res["rng_cuda"])
        self.step, self.prior_elapsed = int(ckpt["step"]), float(ckpt["elapsed"])
        self.best_val = ckpt["best_val"]
        self.last_val = EvalResult(**ckpt["last_val"]) if ckpt["last_val"] else None
        self.loss_ema, self.loss_n, self.lr_scale = res["loss_ema"], res["loss_n"], res["lr_scale"]
        if res.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(res["scaler"])
        self.state = self.dist.scatter_state(res["carried_state"], self.device)

    def _snapshot(self) -> tuple[dict, dict]:
        return copy.deepcopy(self.model.state_dict()), copy.deepcopy(self.opt.state_dict())

    # ---- the loop ------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return self.prior_elapsed + (time.perf_counter() - self._t0)

    def progress(self, elapsed: float) -> float:
        budget, steps = self.cfg.budget_seconds, self.cfg.steps
        return max(self.step / steps if steps else 0.0, elapsed / budget if budget else 0.0)

    def _base_model(self, spec: str | os.PathLike) -> tuple[dict[str, Any], tuple[CharRNN, Vocab]]:
        """The model --init names (a checkpoint, a run folder, or `bundled`), and the lineage to record."""
        path = checkpoint.resolve(Path(spec)) if str(spec) != "bundled" else checkpoint.BUNDLED
        ckpt = checkpoint.load(path)
        model, vocab = checkpoint.build_model(ckpt, path)
        corpus = ckpt.get("corpus") or {}
        lineage = {
            "checkpoint": str(path),
            "step": ckpt.get("step", 0),
            "corpus": Path(corpus.get("path", "?")).name,
            "best_val": ckpt.get("best_val"),
        }
        return lineage, (model, vocab)

    def _plan(self, model_flags: dict[str, Any], train_flags: dict[str, Any], train_ids: np.ndarray) -> sizing.Plan:
        """What sizing chooses for this run (see sizing.plan); its line is shown and saved in checkpoints."""
        fixed = {k: model_flags[k] for k in ("layers", "hidden") if model_flags.get(k) is not None}
        if "batch_size" in train_flags:
            fixed["batch_size"] = train_flags["batch_size"]
        if model_flags.get("tie_weights") and "hidden" not in fixed:  # tied weights need hidden == embed
            fixed["hidden"] = model_flags.get("embed", ModelConfig.embed)
        plan = sizing.plan(
            model_flags, fixed, self.cfg, train_ids, self.device, self.dtype, self.dist.world, share=self.dist.broadcast
        )
        if plan.note:
            self.sizing = plan.note
            self._notes.append(plan.note)
        return plan

    def _choose_dropout(self, planned_steps: float, source: str) -> str:
        """Fix an automatic dropout from the passes over the training text that `planned_steps` make, in
        the model and in the config that checkpoints save; returns the line that tells the user."""
        passes = planned_steps / self.streams.windows
        self.model_cfg = replace(self.model_cfg, dropout=auto_dropout(passes))
        self.model.set_dropout(self.model_cfg.dropout)
        return (
            f"dropout {self.model_cfg.dropout:g}: {source} allows about {passes:.1f} passes over the "
            "training text (--dropout sets it)"
        )

    def _train_step(self, lr: float) -> float:
        """One window of every stream; returns the loss, or nan when the update was skipped."""
        x, y = self.streams.window(self.step)
        self.dist.seed_step(self.cfg.seed, self.step)  # several ranks: a different dropout mask on each
        if self.streams.starts_epoch(self.step) or self.state is None:
            self.state = self.model.init_state(x.shape[0], self.device)
        xt, yt = self._to_device(x), self._to_device(y)  # (B, T) each
        for group in self.opt.param_groups:
            group["lr"] = lr
        with autocast(self.device, self.dtype):
            loss, new_state = forward_loss(self.ddp_model, self.model, xt, yt, self.state)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.opt)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip)
        loss = self.dist.mean(loss)  # the global batch's loss, the same on every rank
        # Under fp16 an overflow of the *scaled* gradients is routine (the scaler skips that update and
        # lowers its scale); only a non-finite loss, or non-finite gradients without a scaler, is a real one.
        overflow = not torch.isfinite(grad_norm) and self.scaler.is_enabled()
        if not (torch.isfinite(loss) and (torch.isfinite(grad_norm) or overflow)):
            self.state = None  # a poisoned state would poison the next window too
            self.opt.zero_grad(set_to_none=True)
            self.scaler.update()
            return float("nan")
        self.scaler.step(self.opt)  # skips the update itself after an overflow
        self.scaler.update()
        self.state = detach_state(new_state)
        return loss.item()

    def _to_device(self, a: np.ndarray) -> torch.Tensor:
        """On CUDA the window goes through pinned memory, so the copy overlaps the GPU's work."""
        t = torch.from_numpy(a)
        if self.device.type == "cuda":
            t = t.pin_memory()
        return t.to(self.device, non_blocking=True)

    def _validate(self) -> EvalResult | None | bool:
        """The validation result; None without a validation split; False when a stop request cut it short."""
        if self.cfg.val_frac == 0:
            return None
        part = self.dist.shard(self.val_ids)
        # One process may cut a long pass short on Ctrl-C; ranks would have to agree on it, so they do not.
        stop = (lambda: self._signals.received is not None) if self.dist.world == 1 else None
        local = (
            evaluate(self.model, part, self.device, self.dtype, should_stop=stop)
            if len(part) > 1
            else EvalResult(0, 0.0)
        )
        return False if local is None else self.dist.reduce_eval(local)

    def _save(self, val: EvalResult | None) -> None:
        """last.pt always; best.pt when validation improved (or on every save with no validation)."""
        if val is not None:
            self.last_val = val
        improved = val is not None and (self.best_val is None or val.nats_per_char < self.best_val)
        if improved:
            self.best_val = val.nats_per_char
        self._saved_at = self.step
        carried = self.dist.gather_state(self.state)  # collective: every rank takes part
        if not self.dist.is_main:
            return
        checkpoint.save(self._payload(True, carried), self.run_dir / "last.pt")
        if improved or self.cfg.val_frac == 0:
            checkpoint.save(self._payload(False), self.run_dir / "best.pt")

    def _log_metrics(self, val: EvalResult | None, lr: float, rate: float) -> None:
        if not self.dist.is_main:
            return
        row = {
            "step": self.step,
            "elapsed": round(self.elapsed(), 3),
            "train_loss": self._smoothed(),
            "val_loss": val and val.nats_per_char,
            "val_bpc": val and val.bits_per_char,
            "lr": lr,
            "chars_per_s": round(rate, 1),
        }
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    def _trim_metrics(self) -> None:
        """On resume, drop rows written after the checkpoint, so the log reads as one uninterrupted run."""
        path = self.run_dir / "metrics.jsonl"
        if not (self.dist.is_main and path.exists()):
            return
        rows, torn = [], 0
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                rows.append((json.loads(line)["step"], line))
            except (ValueError, KeyError, TypeError):  # a line half-written when a run was killed
                torn += line.strip() != ""
        if torn:
            self._event(
                "notice",
                0.0,
                0.0,
                message=f"{path}: dropped {torn} torn line{'s' * (torn > 1)} (written when a run was killed)",
            )
        keep = [line for step, line in rows if isinstance(step, int) and step <= self.step]
        path.write_text("".join(r + "\n" for r in keep), encoding="utf-8")

    def _smoothed(self) -> float | None:
        return self.loss_ema / (1 - EMA_DECAY**self.loss_n) if self.loss_n else None

    def _finished(self, elapsed: float) -> bool:
        budget, steps = self.cfg.budget_seconds, self.cfg.steps
        return (steps is not None and self.step >= steps) or (budget is not None and elapsed >= budget)

    def run(self) -> TrainResult:
        if self.dist.is_main:
            ensure_writable(self.run_dir)
        with RunLock(self.run_dir) if self.dist.is_main else contextlib.nullcontext(), StopSignals() as signals:
            self._signals, self._saved_at, self._evals = signals, -1, 0
            self.dist.barrier()
            self._t0 = time.perf_counter()
            for note in self._notes:
                self._event("info", 0.0, 0.0, message=note)
            self._validated_at = self.step if self.resumed else -1
            if self.resumed:
                self._trim_metrics()
                if self._finished(self.prior_elapsed):
                    raise CharRNNError(
                        f"the run in {self.run_dir} already used its whole budget: pass a larger "
                        "--steps or --minutes with --resume to train further"
                    )
            chars_per_step = self.cfg.batch_size * self.cfg.seq_len
            bad, restores, rate = 0, 0, 0.0
            lr = lr_at(self.cfg, self.step, self.progress(self.prior_elapsed)) * self.lr_scale
            t_rate = time.perf_counter()
            while True:
                stop_signal, elapsed = self.dist.agree(signals.received, self.elapsed())
                if stop_signal or self._finished(elapsed):
                    break
                lr = lr_at(self.cfg, self.step, self.progress(elapsed)) * self.lr_scale
                loss = self._train_step(lr)
                if math.isnan(loss):
                    bad += 1
                    if bad >= BAD_STEPS_BEFORE_RESTORE:
                        restores += 1
                        if restores > MAX_RESTORES:
                            raise CharRNNError(
                                f"training diverged: the loss stayed non-finite after {MAX_RESTORES} restarts at "
                                f"lower learning rates; the last good checkpoint is kept in {self.run_dir} "
                                "(lower --lr or --clip)"
                            )
                        self.model.load_state_dict(self._good[0])
                        self.opt.load_state_dict(self._good[1])
                        self.lr_scale *= 0.5
                        bad = 0
                        self._event(
                            "notice",
                            lr,
                            rate,
                            message=(
                                f"non-finite loss {BAD_STEPS_BEFORE_RESTORE} steps in a row at step {self.step}: "
                                f"restored the last good weights, learning rate x{self.lr_scale:g}"
                            ),
                        )
                    else:
                        self._event("notice", lr, rate, message=f"non-finite loss at step {self.step}: update skipped")
                    self.step += 1
                    continue
                bad = 0
                self.step += 1
                self.loss_n += 1
                self.loss_ema = EMA_DECAY * self.loss_ema + (1 - EMA_DECAY) * loss
                now = time.perf_counter()
                rate = 0.8 * rate + 0.2 * chars_per_step / (now - t_rate) if rate else chars_per_step / (now - t_rate)
                t_rate = now
                asked = self._event("step", lr, rate) and self.dist.world == 1
                if asked or self.step % self.cfg.eval_every == 0:
                    self._checkpoint_and_log(lr, rate)
                    t_rate = time.perf_counter()  # validation time is not training throughput
            if (signals.received or stop_signal) and self._saved_at != self.step:
                self._save(None)  # stop after the current step: weights and position, no validation
            elif self._validated_at != self.step or self.step == 0:
                self._checkpoint_and_log(lr, rate)
            self.dist.barrier()  # no rank exits (and makes torchrun stop the rest) before rank 0 has saved
            return TrainResult(
                self.run_dir,
                self.step,
                self.elapsed(),
                self.best_val,
                self.last_val,
                signals.received or stop_signal,
                self.resumed,
                self.dist.rank,
                self.dist.world,
            )

    def _checkpoint_and_log(self, lr: float, rate: float) -> None:
        self._validated_at = self.step
        val = self._validate()
        if val is False:  # stopped part-way: nothing recorded, last.pt saved as for any stop
            self._save(None)
            return
        self._save(val)
        self._log_metrics(val, lr, rate)
        self._good = self._snapshot()
        self._event("eval", lr, rate, val=val)
        self._evals += 1
        if self.dist.is_main and self.cfg.sample_every and self._evals % self.cfg.sample_every == 0:
            self._sample(val, lr, rate)

    def _sample(self, val: EvalResult | None, lr: float, rate: float) -> None:
        """A short sample, to see the model learn: always from a newline at temperature 0.8 with the same
        seed, so successive samples differ only by what the model learned. It draws from its own numpy
        generator and runs the model in eval mode (no dropout), so the training random streams, and so
        the weights, are exactly what they would be without it (tested)."""
        cfg = SampleConfig(temp=0.8, length=self.cfg.sample_length, prime="\n", seed=self.cfg.seed)
        text = "".join(chars[0] for chars in generate(self.model, self.vocab, cfg))
        head = f"=== step {self.step}" + (f"  val {val.nats_per_char:.4f} nats/char" if val else "") + " ==="
        with open(self.run_dir / "samples.txt", "a", encoding="utf-8") as f:
            f.write(f"{head}\n{text}\n\n")
        self._event("sample", lr, rate, val=val, message=text)

    def _event(self, kind: str, lr: float, rate: float, val: EvalResult | None = None, message: str = "") -> bool:
        """Tell the caller; a true answer to a "step" event asks for a validation and save right now."""
        elapsed = self.elapsed()
        return self.report(
            TrainEvent(
                kind,
                self.step,
                self.cfg.steps,
                min(1.0, self.progress(elapsed)),
                elapsed,
                self._smoothed(),
                lr,
                rate,
                val,
                self.best_val,
                message,
            )
        )


def train(
    corpus: str | os.PathLike | None = None,
    model_flags: dict[str, Any] | None = None,
    train_flags: dict[str, Any] | None = None,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    report: Callable[[TrainEvent], None] | None = None,
    init: str | os.PathLike | None = None,
) -> TrainResult:
    """Train (or resume) a run. Flags are only the values the user gave; the config dataclasses and, when
    resuming, the checkpoint supply the rest. `init`: start from that trained model (fine-tuning)."""
    dist = Dist.from_env((train_flags or {}).get("device", "auto"))
    trainer = None
    try:  # the process group is left cleanly even when building the trainer fails
        trainer = Trainer(
            Path(corpus) if corpus is not None else None,
            model_flags or {},
            train_flags or {},
            out,
            resume,
            report,
            dist,
            init,
        )
        return trainer.run()
    finally:
        if trainer is not None:
            trainer.ddp_model = None  # DDP's reducer holds gloo work and tensors: free it before the group goes
        dist.close()
