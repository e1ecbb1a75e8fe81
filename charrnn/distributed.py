"""Several processes, one model: torchrun's environment -> process group, DDP wrapping, and the few
collectives the training loop needs (state gather for checkpoints, validation reduce, stopping together).

With one process every method is a no-op, so the training loop has a single code path.

Every collective here must be called by every rank, in the same order; the loop guarantees it by making
each rank take the same decisions from the same (agreed) numbers. The global batch of B streams is split
by rows: rank r of `world` owns streams r*B/world .. (r+1)*B/world - 1 and carries their hidden state::

    global batch (B=8, world=2)       rank 0: rows 0..3  ->  DDP averages      ->  every rank takes
    rows 0..7 of data.Streams   ==>   rank 1: rows 4..7  ->  their gradients   ->  the same AdamW step

so the mean loss over each rank's rows, averaged across ranks, is exactly the single-process mean loss.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from charrnn.errors import CharRNNError
from charrnn.evaluate import EvalResult
from charrnn.model import State


@contextlib.contextmanager
def _peers(rank: int) -> Iterator[None]:
    """A collective fails when another rank has died (its own error is the one to read): say so in one
    line instead of a gloo traceback. Gloo notices a dead peer's closed socket at once, so no rank hangs;
    torchrun then stops the rest."""
    try:
        yield
    except RuntimeError as e:  # DistBackendError is one
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise CharRNNError(
            f"rank {rank}: another process of this distributed run stopped, so this one stops "
            f"too (read the other rank's error; here: {first})"
        ) from None


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device | None = None  # set under torchrun: cuda:LOCAL_RANK on GPUs, else cpu

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: str = "auto") -> Dist:
        """Under torchrun (WORLD_SIZE > 1): nccl on GPUs, gloo on CPUs (or with --device cpu, which is
        honoured on a machine with GPUs too); otherwise a single process.

        torchrun sets WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; the process group is
        joined here, before any collective (DDP's weight broadcast is the first)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise CharRNNError(
                f"WORLD_SIZE={world} but {', '.join(missing)} not set: start several processes "
                "with `torchrun --nproc-per-node N -m charrnn train ...`"
            )
        if torch.cuda.is_available() and device != "cpu":
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            device, backend = torch.device("cuda", local), "nccl"
        else:
            device, backend = torch.device("cpu"), "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend)
        return cls(dist.get_rank(), dist.get_world_size(), device)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """DDP averages gradients across ranks during backward (and broadcasts rank 0's weights now, so
        every rank starts equal); checkpoints keep the unwrapped model."""
        if self.world == 1:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        # an adaptive softmax may leave a rare cluster unused in a step: DDP must not wait for its gradient
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=getattr(model, "adaptive", False))

    def seed_step(self, seed: int, step: int) -> None:
        """With several ranks, dropout draws from a generator seeded by (seed, step, rank): masks differ
        between ranks (one shared seed would give every rank the same mask) and --resume stays exact
        without saving each rank's generator. One process keeps its single seeded generator."""
        if self.world > 1:
            entropy = np.random.SeedSequence([seed, step, self.rank]).generate_state(1, np.uint64)[0]
            torch.manual_seed(int(entropy) & 0x7FFF_FFFF_FFFF_FFFF)

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The average of a scalar over ranks: the global batch's loss, identical on every rank (so a
        non-finite loss on any rank makes every rank skip the same step)."""
        if self.world == 1:
            return value
        t = value.detach().float().reshape(1).to(self.device)
        with _peers(self.rank):
            dist.all_reduce(t)  # gloo has no AVG
        return t[0] / self.world

    def gather_state(self, state: State | None) -> list[torch.Tensor] | None:
        """The carried hidden state of all streams, (layers, B, H) each, in global row order, on the CPU."""
        if state is None:
            return None
        if self.world == 1:
            return [s.detach().float().cpu() for s in state]
        out = []
        for s in state:
            s = s.detach().contiguous()  # (layers, B/world, H)
            parts = [torch.empty_like(s) for _ in range(self.world)]
            with _peers(self.rank):
                dist.all_gather(parts, s)
            out.append(torch.cat(parts, dim=1).float().cpu())  # (layers, B, H)
        return out

    def scatter_state(self, saved: list[torch.Tensor] | None, device: torch.device) -> State | None:
        """This rank's rows of a saved global state (any world size that divides the batch)."""
        if saved is None:
            return None
        rows = saved[0].shape[1] // self.world
        return tuple(s[:, self.rank * rows : (self.rank + 1) * rows].contiguous().to(device) for s in saved)

    def shard(self, ids: np.ndarray) -> np.ndarray:
        """This rank's contiguous piece of the validation ids. Neighbouring pieces share one id, so every
        prediction (id i -> id i+1) is scored by exactly one rank and the total is the single-process
        count; each piece only starts with a cold state. A rank may get fewer than 2 ids (nothing to
        score) when the split is shorter than the number of ranks."""
        if self.world == 1:
            return ids
        bounds = np.linspace(0, len(ids) - 1, self.world + 1).round().astype(int)  # over the n-1 predictions
        return ids[bounds[self.rank] : bounds[self.rank + 1] + 1]

    def reduce_eval(self, local: EvalResult) -> EvalResult:
        """Characters and nats summed over ranks, so nats/char is over the whole validation split."""
        if self.world == 1:
            return local
        t = torch.tensor([local.chars, local.nats], dtype=torch.float64, device=self.device)
        with _peers(self.rank):
            dist.all_reduce(t)
        return EvalResult(chars=int(t[0]), nats=float(t[1]))

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's value of a small picklable object, on every rank."""
        if self.world == 1:
            return obj
        box = [obj]
        with _peers(self.rank):
            dist.broadcast_object_list(box, src=0)
        return box[0]

    def agree(self, signum: int | None, elapsed: float) -> tuple[int | None, float]:
        """Every rank stops at the same step and sees the same clock, so schedules never drift apart."""
        if self.world == 1:
            return signum, elapsed
        t = torch.tensor([signum or 0, elapsed], dtype=torch.float64, device=self.device)
        with _peers(self.rank):
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return (int(t[0]) or None), float(t[1])

    def barrier(self) -> None:
        if self.world > 1:
            with _peers(self.rank):
                dist.barrier()

    def close(self) -> None:
        """Leave the group while the interpreter is fully alive: gloo work objects still alive at interpreter
        teardown abort the process ("terminate called without an active exception", exit -6)."""
        if self.world > 1 and dist.is_initialized():
            gc.collect()  # DDP's hooks form reference cycles; collect them before the group is destroyed
            dist.destroy_process_group()
