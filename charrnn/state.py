"""The training state: everything a training step changes and a resume must restore (model, optimizer, loss
scaler, random generators, step, time used, carried hidden state, smoothed loss, best validation), with the
step itself and one state_dict()/load_state_dict() pair that last.pt keeps. No files, no schedule.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from charrnn.config import TrainConfig
from charrnn.devices import autocast
from charrnn.distributed import Dist
from charrnn.evaluate import EvalResult
from charrnn.model import CharRNN, State, detach_state

EMA_DECAY = 0.98  # smoothing of the displayed train loss: about the last 50 steps


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


class TrainingState:
    """One run's model and what moves with it. `step(x, y, lr)` is one optimizer step on a window of every
    stream; the caller decides when (the loop) and on what (the streams)."""

    def __init__(
        self, model: CharRNN, cfg: TrainConfig, device: torch.device, dtype: torch.dtype, dist: Dist | None = None
    ) -> None:
        self.model, self.cfg, self.device, self.dtype = model, cfg, device, dtype
        self.dist = dist or Dist()
        self.opt = make_optimizer(model, cfg)
        self.scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        self.step = 0
        self.prior_elapsed = 0.0  # seconds used before this process's clock started (a probe, a resumed run)
        self.best_val: float | None = None
        self.last_val: EvalResult | None = None
        self.loss_ema, self.loss_n, self.lr_scale = 0.0, 0, 1.0
        self.hidden: State | None = None  # carried from one window to the next, detached
        self.net = self.dist.wrap(model)  # the model, or its DDP wrapper: what the forward pass goes through
        self._t0: float | None = None
        self._good = self._snapshot()

    # ---- time --------------------------------------------------------------------------------
    def start_clock(self) -> None:
        self._t0 = time.perf_counter()

    def elapsed(self) -> float:
        """Seconds of the budget used so far, across resumes."""
        return self.prior_elapsed + (0.0 if self._t0 is None else time.perf_counter() - self._t0)

    # ---- the step ----------------------------------------------------------------------------
    def train_step(self, x: np.ndarray, y: np.ndarray, lr: float, fresh: bool = False) -> float:
        """One update on a (B, T) window; `fresh` starts the streams from zero state (a new epoch). Returns
        the loss, or nan when the update was skipped (nothing learned; the step still counts)."""
        self.dist.seed_step(self.cfg.seed, self.step)  # several ranks: a different dropout mask on each
        if fresh or self.hidden is None:
            self.hidden = self.model.init_state(x.shape[0], self.device)
        xt, yt = self._to_device(x), self._to_device(y)  # (B, T) each
        for group in self.opt.param_groups:
            group["lr"] = lr
        with autocast(self.device, self.dtype):
            loss, new_hidden = forward_loss(self.net, self.model, xt, yt, self.hidden)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.opt)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip)
        loss = self.dist.mean(loss)  # the global batch's loss, the same on every rank
        self.step += 1
        # Under fp16 an overflow of the *scaled* gradients is routine (the scaler skips that update and
        # lowers its scale); only a non-finite loss, or non-finite gradients without a scaler, is a real one.
        overflow = not torch.isfinite(grad_norm) and self.scaler.is_enabled()
        if not (torch.isfinite(loss) and (torch.isfinite(grad_norm) or overflow)):
            self.hidden = None  # a poisoned state would poison the next window too
            self.opt.zero_grad(set_to_none=True)
            self.scaler.update()
            return float("nan")
        self.scaler.step(self.opt)  # skips the update itself after an overflow
        self.scaler.update()
        self.hidden = detach_state(new_hidden)
        value = loss.item()
        self.loss_n += 1
        self.loss_ema = EMA_DECAY * self.loss_ema + (1 - EMA_DECAY) * value
        return value

    def smoothed_loss(self) -> float | None:
        return self.loss_ema / (1 - EMA_DECAY**self.loss_n) if self.loss_n else None

    def _to_device(self, a: np.ndarray) -> torch.Tensor:
        """On CUDA the window goes through pinned memory, so the copy overlaps the GPU's work."""
        t = torch.from_numpy(a)
        if self.device.type == "cuda":
            t = t.pin_memory()
        return t.to(self.device, non_blocking=True)

    # ---- the last good state, for going back after a divergence -------------------------------
    def remember_good(self) -> None:
        self._good = self._snapshot()

    def restore_good(self) -> None:
        """Back to the weights and optimizer of the last validation, at half the learning rate."""
        self.model.load_state_dict(self._good[0])
        self.opt.load_state_dict(self._good[1])
        self.lr_scale *= 0.5

    def _snapshot(self) -> tuple[dict, dict]:
        return copy.deepcopy(self.model.state_dict()), copy.deepcopy(self.opt.state_dict())

    # ---- checkpoint contents ------------------------------------------------------------------
    def state_dict(self, resumable: bool = True) -> dict[str, Any]:
        """The part of a checkpoint this state owns; `resume` (what --resume needs) only when resumable,
        as best.pt leaves it out to stay small and shareable. A collective under several processes: every
        rank must call it (the carried state is gathered from all of them)."""
        carried = self.dist.gather_state(self.hidden) if resumable else None
        out: dict[str, Any] = {
            "model": self.model.state_dict(),
            "step": self.step,
            "elapsed": self.elapsed(),
            "best_val": self.best_val,
            "last_val": None if self.last_val is None else asdict(self.last_val),
        }
        if resumable:
            out["resume"] = {
                "optimizer": self.opt.state_dict(),
                "rng_torch": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
                "carried_state": carried,  # None before the first step or after a skipped one: a fresh state
                "loss_ema": self.loss_ema,
                "loss_n": self.loss_n,
                "lr_scale": self.lr_scale,
                "scaler": self.scaler.state_dict(),  # fp16's loss scale: {} when no scaler is in use
                "world": self.dist.world,
            }
        return out

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        """Restore from a checkpoint that has a `resume` block (last.pt); the model weights included."""
        self.model.load_state_dict(ckpt["model"])
        res = ckpt["resume"]
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
        self.hidden = self.dist.scatter_state(res["carried_state"], self.device)
        self._good = self._snapshot()
