"""The training loop: TBPTT windows -> step -> schedule, with validation and best/last checkpoints on an
explicit schedule, step and time budgets, interruption, divergence recovery, and several processes.

It reports through a callback and returns numbers; it never parses flags or renders anything. Setting up
what it trains is recipe.py's job, and the state it trains is state.py's.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charrnn import checkpoint
from charrnn.config import FINETUNE_SCHEDULE_PASSES, SampleConfig, TrainConfig
from charrnn.data import Streams
from charrnn.distributed import Dist
from charrnn.errors import CharRNNError
from charrnn.evaluate import EvalResult, evaluate
from charrnn.model import CharRNN
from charrnn.recipe import Corpus, Run, prepare
from charrnn.sample import generate
from charrnn.state import TrainingState

BAD_STEPS_BEFORE_RESTORE = 3  # non-finite steps in a row before going back to the last good state
MAX_RESTORES = 3  # restores (each halving the learning rate) before giving up


@dataclass
class TrainEvent:
    """What the loop tells its caller: after every step ("step"), every validation ("eval"), every sample
    ("sample"), and notices ("info", "notice")."""

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


@dataclass
class EvalSchedule:
    """When to validate and save: every `every` steps, and at the first step at or past each of
    `at_seconds` of the budget (a benchmark's milestones). Always once more at the end."""

    every: int
    at_seconds: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.at_seconds = sorted(self.at_seconds)

    def due(self, step: int, elapsed: float) -> bool:
        passed = [t for t in self.at_seconds if elapsed >= t]
        self.at_seconds = self.at_seconds[len(passed) :]
        return bool(passed) or step % self.every == 0


def lr_at(cfg: TrainConfig, step: int, progress: float) -> float:
    """Linear warmup over warmup_steps, then cosine decay to min_lr_frac * lr at the end of the budget."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_frac + (1.0 - cfg.min_lr_frac) * cosine)


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


class Trainer:
    """Trains a prepared run: `fit()` steps until the budget is spent or a signal arrives, validating and
    saving on its schedule. `train_step()` is one step of the loop, public for benchmarks."""

    def __init__(
        self,
        run: Run,
        state: TrainingState,
        streams: Streams,
        report: Callable[[TrainEvent], Any] | None = None,
        schedule: EvalSchedule | None = None,
    ) -> None:
        self.run, self.state, self.streams = run, state, streams
        self.cfg, self.dist = run.cfg, run.dist
        self.report = report if (report and self.dist.is_main) else (lambda event: None)
        self.schedule = schedule or EvalSchedule(self.cfg.eval_every)
        self._signals = StopSignals()
        self._saved_at, self._validated_at, self._evals = -1, -1, 0

    @classmethod
    def from_flags(
        cls,
        corpus: Corpus,
        model_flags: dict[str, Any],
        train_flags: dict[str, Any],
        out: str | os.PathLike | None = None,
        resume: bool = False,
        report: Callable[[TrainEvent], Any] | None = None,
        init: str | os.PathLike | None = None,
        dist: Dist | None = None,
        eval_at_seconds: Iterable[float] = (),
    ) -> Trainer:
        """Prepare a run from the flags the user gave (see recipe.prepare) and a trainer for it."""
        milestones = list(eval_at_seconds)
        run, state, streams = prepare(corpus, model_flags, train_flags, out, resume, init, dist, milestones)
        return cls(run, state, streams, report, EvalSchedule(run.cfg.eval_every, milestones))

    @property
    def model(self) -> CharRNN:
        return self.state.model

    def progress(self, elapsed: float) -> float:
        budget, steps = self.cfg.budget_seconds, self.cfg.steps
        return max(self.state.step / steps if steps else 0.0, elapsed / budget if budget else 0.0)

    def lr(self, elapsed: float) -> float:
        """The schedule's rate now. Its cosine spans the budget; a fine-tuning run's (--init) spans at most
        FINETUNE_SCHEDULE_PASSES passes over the training text, then goes on at the floor rate: a trained
        model adapts to a small text within a few passes and then memorises it, so annealing early
        reaches a lower validation loss (best.pt keeps it) than a high rate held while it overfits."""
        progress = self.progress(elapsed)
        if self.run.init is not None:
            progress = max(progress, self.state.step / (FINETUNE_SCHEDULE_PASSES * self.streams.windows))
        return lr_at(self.cfg, self.state.step, progress) * self.state.lr_scale

    def train_step(self, lr: float | None = None) -> float:
        """The next window of every stream, one update; the loss, or nan when the update was skipped."""
        step = self.state.step
        x, y = self.streams.window(step)  # (B, T) each
        return self.state.train_step(
            x, y, self.lr(self.state.elapsed()) if lr is None else lr, self.streams.starts_epoch(step)
        )

    def _finished(self, elapsed: float) -> bool:
        budget, steps = self.cfg.budget_seconds, self.cfg.steps
        return (steps is not None and self.state.step >= steps) or (budget is not None and elapsed >= budget)

    def fit(self) -> TrainResult:
        run, state = self.run, self.state
        with run.lock() if self.dist.is_main else contextlib.nullcontext(), self._signals as signals:
            self.dist.barrier()
            state.start_clock()
            for note in run.notes:
                self._event("info", 0.0, 0.0, message=note)
            self._validated_at = state.step if run.resumed else -1
            if run.resumed:
                torn = run.trim_metrics(state.step) if self.dist.is_main else 0
                if torn:
                    self._event(
                        "notice",
                        0.0,
                        0.0,
                        message=f"{run.metrics_path}: dropped {torn} torn line{'s' * (torn > 1)} "
                        "(written when a run was killed)",
                    )
                if self._finished(state.prior_elapsed):
                    raise CharRNNError(
                        f"the run in {run.dir} already used its whole budget: pass a larger "
                        "--steps or --minutes with --resume to train further"
                    )
            chars_per_step = self.cfg.batch_size * self.cfg.seq_len
            bad, restores, rate = 0, 0, 0.0
            lr = self.lr(state.prior_elapsed)
            t_rate = state.elapsed()
            while True:
                stop_signal, elapsed = self.dist.agree(signals.received, state.elapsed())
                if stop_signal or self._finished(elapsed):
                    break
                lr = self.lr(elapsed)
                loss = self.train_step(lr)
                if math.isnan(loss):
                    bad += 1
                    if bad >= BAD_STEPS_BEFORE_RESTORE:
                        restores, bad = restores + 1, 0
                        self._restore_after_divergence(restores, lr, rate)
                    else:
                        self._event(
                            "notice", lr, rate, message=f"non-finite loss at step {state.step - 1}: update skipped"
                        )
                    continue
                bad = 0
                now = state.elapsed()
                rate = 0.8 * rate + 0.2 * chars_per_step / (now - t_rate) if rate else chars_per_step / (now - t_rate)
                t_rate = now
                self._event("step", lr, rate)
                if self.schedule.due(state.step, now):
                    self._checkpoint_and_log(lr, rate)
                    t_rate = state.elapsed()  # validation time is not training throughput
            if (signals.received or stop_signal) and self._saved_at != state.step:
                self._save(None)  # stop after the current step: weights and position, no validation
            elif self._validated_at != state.step or state.step == 0:
                self._checkpoint_and_log(lr, rate)
            self.dist.barrier()  # no rank exits (and makes torchrun stop the rest) before rank 0 has saved
            return TrainResult(
                run.dir,
                state.step,
                state.elapsed(),
                state.best_val,
                state.last_val,
                signals.received or stop_signal,
                run.resumed,
                self.dist.rank,
                self.dist.world,
            )

    def _restore_after_divergence(self, restores: int, lr: float, rate: float) -> None:
        if restores > MAX_RESTORES:
            raise CharRNNError(
                f"training diverged: the loss stayed non-finite after {MAX_RESTORES} restarts at "
                f"lower learning rates; the last good checkpoint is kept in {self.run.dir} "
                "(lower --lr or --clip)"
            )
        self.state.restore_good()
        self._event(
            "notice",
            lr,
            rate,
            message=(
                f"non-finite loss {BAD_STEPS_BEFORE_RESTORE} steps in a row at step {self.state.step - 1}: "
                f"restored the last good weights, learning rate x{self.state.lr_scale:g}"
            ),
        )

    def _validate(self) -> EvalResult | None | bool:
        """The validation result; None without a validation split; False when a stop request cut it short."""
        if self.cfg.val_frac == 0:
            return None
        part = self.dist.shard(self.run.val_ids)
        # One process may cut a long pass short on Ctrl-C; ranks would have to agree on it, so they do not.
        stop = (lambda: self._signals.received is not None) if self.dist.world == 1 else None
        local = (
            evaluate(self.model, part, self.run.device, self.run.dtype, should_stop=stop)
            if len(part) > 1
            else EvalResult(0, 0.0)
        )
        return False if local is None else self.dist.reduce_eval(local)

    def _save(self, val: EvalResult | None) -> None:
        """last.pt always; best.pt when validation improved (or on every save with no validation)."""
        state = self.state
        if val is not None:
            state.last_val = val
        improved = val is not None and (state.best_val is None or val.nats_per_char < state.best_val)
        if improved:
            state.best_val = val.nats_per_char
        self._saved_at = state.step
        resumable = state.state_dict(resumable=True)  # collective: every rank takes part
        if not self.dist.is_main:
            return
        record = self.run.record()
        checkpoint.save({**record, **resumable}, self.run.dir / "last.pt")
        if improved or self.cfg.val_frac == 0:
            checkpoint.save({**record, **state.state_dict(resumable=False)}, self.run.dir / "best.pt")

    def _checkpoint_and_log(self, lr: float, rate: float) -> None:
        self._validated_at = self.state.step
        val = self._validate()
        if val is False:  # stopped part-way: nothing recorded, last.pt saved as for any stop
            self._save(None)
            return
        self._save(val)
        if self.dist.is_main:
            self.run.log_metrics(
                {
                    "step": self.state.step,
                    "elapsed": round(self.state.elapsed(), 3),
                    "train_loss": self.state.smoothed_loss(),
                    "val_loss": val and val.nats_per_char,
                    "val_bpc": val and val.bits_per_char,
                    "lr": lr,
                    "chars_per_s": round(rate, 1),
                }
            )
        self.state.remember_good()
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
        text = "".join(chars[0] for chars in generate(self.model, self.run.vocab, cfg))
        head = f"=== step {self.state.step}" + (f"  val {val.nats_per_char:.4f} nats/char" if val else "") + " ==="
        self.run.append_sample(head, text)
        self._event("sample", lr, rate, val=val, message=text)

    def _event(self, kind: str, lr: float, rate: float, val: EvalResult | None = None, message: str = "") -> None:
        elapsed = self.state.elapsed()
        self.report(
            TrainEvent(
                kind,
                self.state.step,
                self.cfg.steps,
                min(1.0, self.progress(elapsed)),
                elapsed,
                self.state.smoothed_loss(),
                lr,
                rate,
                val,
                self.state.best_val,
                message,
            )
        )


def train(
    corpus: Corpus = None,
    model_flags: dict[str, Any] | None = None,
    train_flags: dict[str, Any] | None = None,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    report: Callable[[TrainEvent], Any] | None = None,
    init: str | os.PathLike | None = None,
    eval_at_seconds: Iterable[float] = (),
) -> TrainResult:
    """Train (or resume) a run on one text file or several (files, folders, globs). Flags are only the
    values the user gave; the config dataclasses and, when resuming, the checkpoint supply the rest.
    `init`: start from that trained model (fine-tuning). `eval_at_seconds`: extra validations."""
    dist = Dist.from_env((train_flags or {}).get("device", "auto"))
    trainer = None
    try:  # the process group is left cleanly even when setting up fails
        trainer = Trainer.from_flags(
            corpus, model_flags or {}, train_flags or {}, out, resume, report, init, dist, eval_at_seconds
        )
        return trainer.fit()
    finally:
        if trainer is not None:
            trainer.state.net = None  # DDP's reducer holds gloo work and tensors: free it before the group goes
        dist.close()
