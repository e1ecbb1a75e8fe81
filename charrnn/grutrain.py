"""The GRU's training forward and backward on a CPU, with the compiled kernel doing each step's gate arithmetic.

torch runs the LSTM as one fused oneDNN kernel but the GRU as an autograd graph of small ops: at batch 16 a
2x512 GRU window is ~30 tensor ops a time step a layer, each costing more in dispatch than in arithmetic, and
a weight gradient accumulated one time step at a time. Here a time step is one torch matmul and one kernel
call, forward and backward, and the weight gradients are one matmul over the whole window. The parameters are
nn.GRU's own (same names, same layout, same equations), so checkpoints, evaluation and the samplers do not
change: only training takes this path, and only where `available()` says the kernel loaded.

    x (T, B, I) --W_ih, once--> gi (T, B, 3H)      per step t:  gh = h[t] @ W_hh^T + b_hh   (torch)
                                                                 gates, h[t+1] from gi[t], gh (kernel)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from charrnn import kernel as _kernel
from charrnn.dropout import dropout

KERNEL_DTYPES = (torch.float32, torch.bfloat16)  # the matmul dtypes the kernel reads and writes


def kernel_for(device: torch.device) -> _kernel.Kernel | None:
    """The kernel a GRU trained here, now, runs on, or None for nn.GRU: it needs a CPU, fp32 or bf16 autocast,
    and the kernel built and loaded (never with CHARRNN_KERNEL=0). Asked once a training step; the layers'
    forward and backward get its answer rather than asking again."""
    if device.type != "cpu" or compute_dtype(device) not in KERNEL_DTYPES:
        return None
    return _kernel.load()


def available(device: torch.device) -> bool:
    return kernel_for(device) is not None


def compute_dtype(device: torch.device) -> torch.dtype:
    """The matmuls' dtype: the autocast's where one is on (bf16 on a CPU), else float32."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return torch.float32


def _repeated(w: torch.Tensor, b: torch.Tensor | None, rows: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """x -> x @ w.T + b for the `rows`-row operand of every time step of a window. oneDNN's linear with the
    weight reordered once for that shape runs these small products 1.2-1.9x faster than addmm (GRU 2x256 and
    2x512, batch 16, bf16 and fp32, on a Zen 4: benchmarks/README.md); where torch has no oneDNN, F.linear."""
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(w, rows)
        linear = torch.ops.mkldnn._linear_pointwise
        linear(w.new_zeros(rows, w.shape[1]), packed, b, "none", [], "")  # fails here, not mid-window
    except Exception:  # noqa: BLE001 - no op of that name, or of another signature, in this torch: the plain one
        return lambda x: F.linear(x, w, b).contiguous()
    return lambda x: linear(x, packed, b, "none", [], "").contiguous()  # the kernel reads rows of 3H


class _Layer(torch.autograd.Function):
    """One GRU layer over one window on kernel k: (x (T, B, I) lp, h0 (B, H) fp32, weights lp) -> (out (T, B, H)
    lp, h_T (B, H) fp32). lp is float32 or bfloat16; the saved gates and the state that carries across windows
    are float32."""

    @staticmethod
    def forward(ctx, k, x, h0, w_ih, w_hh, b_ih, b_hh):
        ctx.k = k
        T, B, _ = x.shape
        H = h0.shape[1]
        lp, bf16 = x.dtype, int(x.dtype == torch.bfloat16)
        with torch.autocast(x.device.type, enabled=False):
            gi = torch.addmm(b_ih, x.reshape(T * B, -1), w_ih.t()).float().view(T, B, 3 * H)  # (T, B, 3H)
            hs = torch.empty(T + 1, B, H)  # (T+1, B, H) fp32: h[0] = h0, h[t+1] after step t
            hs_lp = torch.empty(T + 1, B, H, dtype=lp)  # (T+1, B, H) the same in lp, the matmuls' operand
            saved = torch.empty(T, B, 4 * H)  # (T, B, 4H) r, z, n, gh_n of every step
            work = torch.empty(4 * H)  # (4H,) the kernel's scratch
            hs[0] = h0
            hs_lp[0] = h0
            hidden = _repeated(w_hh, b_hh, B)
            f32, lps = B * H * 4, B * H * hs_lp.element_size()  # bytes of one (B, H) step
            p_gi, p_h, p_hlp, p_s = gi.data_ptr(), hs.data_ptr(), hs_lp.data_ptr(), saved.data_ptr()
            p_work = work.data_ptr()
            for t in range(T):
                gh = hidden(hs_lp[t])  # (B, 3H)
                k.gru_train_fwd(
                    gh.data_ptr(),
                    p_gi + 3 * t * f32,
                    p_h + t * f32,
                    p_h + (t + 1) * f32,
                    p_hlp + (t + 1) * lps,
                    p_s + 4 * t * f32,
                    bf16,
                    B,
                    H,
                    p_work,
                )
        ctx.save_for_backward(x, hs, hs_lp, saved, w_ih, w_hh)
        return hs_lp[1:].clone(), hs[T].clone()

    @staticmethod
    def backward(ctx, d_out, d_hT):
        k = ctx.k
        x, hs, hs_lp, saved, w_ih, w_hh = ctx.saved_tensors
        T, B, H = saved.shape[0], saved.shape[1], hs.shape[2]
        lp, bf16 = hs_lp.dtype, int(hs_lp.dtype == torch.bfloat16)
        with torch.autocast(x.device.type, enabled=False):
            d_out = torch.zeros(T, B, H) if d_out is None else d_out.float().contiguous()  # (T, B, H)
            carry = torch.zeros(B, H) if d_hT is None else d_hT.float().clone()  # (B, H)
            dgi = torch.empty(T, B, 3 * H, dtype=lp)  # (T, B, 3H)
            dgh = torch.empty(T, B, 3 * H, dtype=lp)  # (T, B, 3H)
            m = None  # (B, H) dgh[t] @ W_hh, into step t - 1
            work = torch.empty(4 * H)  # (4H,) the kernel's scratch
            d_b_ih, d_b_hh = torch.zeros(3 * H), torch.zeros(3 * H)  # (3H,) summed by the kernel, step by step
            back = _repeated(w_hh.t().contiguous(), None, B)
            f32, lps = B * H * 4, B * H * hs_lp.element_size()  # bytes of one (B, H) step
            p_c, p_d, p_s, p_h = carry.data_ptr(), d_out.data_ptr(), saved.data_ptr(), hs.data_ptr()
            p_gi, p_gh = dgi.data_ptr(), dgh.data_ptr()
            p_work, p_b_ih, p_b_hh = work.data_ptr(), d_b_ih.data_ptr(), d_b_hh.data_ptr()
            for t in range(T - 1, -1, -1):
                k.gru_train_bwd(
                    p_c,
                    p_d + t * f32,
                    None if m is None else m.data_ptr(),
                    p_s + 4 * t * f32,
                    p_h + t * f32,
                    p_gi + 3 * t * lps,
                    p_gh + 3 * t * lps,
                    bf16,
                    B,
                    H,
                    p_work,
                    p_b_ih,
                    p_b_hh,
                )
                m = back(dgh[t])  # (B, H)
            dh0 = carry + m.float()  # (B, H)
            gi2, gh2 = dgi.view(T * B, 3 * H), dgh.view(T * B, 3 * H)  # (T*B, 3H)
            d_w_hh = gh2.t() @ hs_lp[:-1].reshape(T * B, H)  # (3H, H)
            d_w_ih = gi2.t() @ x.reshape(T * B, -1)  # (3H, I)
            dx = (gi2 @ w_ih).view(T, B, -1)  # (T, B, I)
        return None, dx, dh0, d_w_ih, d_w_hh, d_b_ih.to(lp), d_b_hh.to(lp)


def gru_forward(
    rnn: nn.GRU,
    x: torch.Tensor,
    h0: torch.Tensor | None,
    weights: dict[str, torch.Tensor] | None = None,
    kernel: _kernel.Kernel | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """What `rnn(x, h0)` returns for a batch-first nn.GRU in training, (out (B, T, H), h_n (L, B, H)), through
    `kernel` (kernel_for's answer; None: load it). `weights` replaces some of rnn's parameters by name (weight
    drop); dropout between layers is rnn.dropout, as nn.GRU applies it."""
    k = kernel or _kernel.load()
    lp = compute_dtype(x.device)
    B, T, _ = x.shape
    if h0 is None:
        h0 = x.new_zeros(rnn.num_layers, B, rnn.hidden_size, dtype=torch.float32)
    params = dict(rnn.named_parameters()) | (weights or {})
    inp = x.transpose(0, 1).to(lp).contiguous()  # (T, B, I)
    last = []
    for layer in range(rnn.num_layers):
        if layer and rnn.dropout and rnn.training:
            inp = dropout(inp, rnn.dropout)  # (T, B, H)
        w = [params[f"{name}_l{layer}"].to(lp) for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        inp, h = _Layer.apply(k, inp, h0[layer].float().contiguous(), *w)  # (T, B, H), (B, H)
        last.append(h)
    return inp.transpose(0, 1), torch.stack(last)  # (B, T, H), (L, B, H)
