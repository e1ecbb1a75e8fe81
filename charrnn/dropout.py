"""Dropout in training on a CPU through the compiled kernel: the mask comes from a counter-based generator and
is regenerated in the backward pass rather than stored.

torch's CPU dropout draws one mt19937 number an element in one thread: 8.5 ms for a (16, 128, 512) window on
the Zen 4, three of them a step (embeddings, between layers, the top layer's output), 15% of a GRU 2x512
batch-16 step once the recurrence ran through the kernel. The kernel's generator is splitmix64 of a seed and
the element's index, ~0.5 ms for the same window; the seed is one draw from torch's generator, so
torch.manual_seed and a resumed run's saved RNG state make the masks reproducible as before (they are other
masks than F.dropout's, with the same distribution). Kept values are x / (1 - p) in float32 rounded once to
x's dtype, where F.dropout in bf16 multiplies by 1 / (1 - p) rounded to bf16 first (1.2969 for 1.2937 at
p 0.227, every kept unit 0.25% too large). Anywhere else (a GPU, a dtype the kernel does not
write, no kernel) it is F.dropout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from charrnn import kernel as _kernel

_DTYPES = (torch.float32, torch.bfloat16)


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """F.dropout(x, p, training), faster on a CPU."""
    if not training or p == 0:
        return x
    k = _kernel.load() if x.device.type == "cpu" and x.dtype in _DTYPES and 0 < p < 1 else None
    if k is None:
        return F.dropout(x, p, training)
    return _Dropout.apply(k, x, p)


def _cut(p: float) -> int:
    """An element is kept where its 32 random bits are >= this: a drop probability of p within 2^-32."""
    return min(round(p * 2**32), 2**32 - 1)


class _Dropout(torch.autograd.Function):
    """y = x * keep / (1 - p) with keep drawn from the seed, in forward and again for the gradient in backward;
    only the seed is saved (F.dropout saves a mask the size of x)."""

    @staticmethod
    def forward(ctx, k, x, p):
        x = x.contiguous()  # element i of x and of its gradient must be the same element: both contiguous
        seed = int(torch.empty((), dtype=torch.int64).random_())  # [0, 2^63): one draw from torch's generator
        ctx.k, ctx.seed, ctx.p = k, seed, p
        return _apply(k, x, seed, p)

    @staticmethod
    def backward(ctx, dy):
        return None, _apply(ctx.k, dy.contiguous(), ctx.seed, ctx.p), None


def _apply(k: _kernel.Kernel, x: torch.Tensor, seed: int, p: float) -> torch.Tensor:
    y = torch.empty_like(x)  # contiguous, as x is
    bf16 = int(x.dtype == torch.bfloat16)
    k.dropout_apply(x.data_ptr(), y.data_ptr(), x.numel(), seed, _cut(p), 1.0 / (1.0 - p), bf16)
    return y
