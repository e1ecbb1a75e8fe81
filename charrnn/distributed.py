"""Several processes, one model: torchrun's environment -> process group, DDP wrapping, and the few
collectives the training loop needs (state gather for checkpoints, validation reduce, stopping together).

With one process every method is a no-op, so the training loop has a single code path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from charrnn.evaluate import EvalResult
from charrnn.model import State


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device | None = None  # set under torchrun: cuda:LOCAL_RANK on GPUs, else cpu

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "Dist":
        """Under torchrun (WORLD_SIZE > 1): nccl on GPUs, gloo on CPUs; otherwise a single process."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        if torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            device, backend = torch.device("cuda", local), "nccl"
        else:
            device, backend = torch.device("cpu"), "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend)
        return cls(dist.get_rank(), dist.get_world_size(), device)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """DDP averages gradients across ranks during backward; checkpoints keep the unwrapped model."""
        if self.world == 1:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def gather_state(self, state: State | None) -> list[torch.Tensor] | None:
        """The carried hidden state of all streams, (layers, B, H) each, in global row order, on the CPU."""
        if state is None:
            return None
        if self.world == 1:
            return [s.detach().float().cpu() for s in state]
        out = []
        for s in state:
            parts = [torch.empty_like(s) for _ in range(self.world)]
            dist.all_gather(parts, s.contiguous())
            out.append(torch.cat(parts, dim=1).float().cpu())  # (layers, B, H)
        return out

    def scatter_state(self, saved: list[torch.Tensor] | None, device: torch.device) -> State | None:
        """This rank's rows of a saved global state (any world size that divides the batch)."""
        if saved is None:
            return None
        rows = saved[0].shape[1] // self.world
        return tuple(s[:, self.rank * rows : (self.rank + 1) * rows].contiguous().to(device) for s in saved)

    def shard(self, ids: np.ndarray) -> np.ndarray:
        """A contiguous piece of the validation ids for this rank."""
        if self.world == 1:
            return ids
        bounds = np.linspace(0, len(ids), self.world + 1).astype(int)
        return ids[bounds[self.rank] : bounds[self.rank + 1]]

    def reduce_eval(self, local: EvalResult) -> EvalResult:
        if self.world == 1:
            return local
        t = torch.tensor([local.chars, local.nats], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return EvalResult(chars=int(t[0]), nats=float(t[1]))

    def agree(self, signum: int | None, elapsed: float) -> tuple[int | None, float]:
        """Every rank stops at the same step and sees the same clock, so schedules never drift apart."""
        if self.world == 1:
            return signum, elapsed
        t = torch.tensor([signum or 0, elapsed], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return (int(t[0]) or None), float(t[1])

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()
