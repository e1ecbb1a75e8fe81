"""The CPU sampling loop on numpy alone: the model's recurrence rearranged for one character at a time
(FastRNN), the draw (Sampler), and the loop that warms on the prime and feeds each draw back.

It imports no torch, so `charrnn sample` on a CPU starts at once from a .safetensors weights file
(weights.py). Only where the caller has already loaded torch may a batch of several rows use torch's
oneDNN linear, which is faster there.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from charrnn import kernel
from charrnn.config import ModelConfig, SampleConfig
from charrnn.errors import CharRNNError
from charrnn.vocab import Vocab


def generate(rnn: Any, vocab: Vocab, cfg: SampleConfig) -> Iterator[list[str]]:
    """Warm on cfg.prime (characters not in vocab are skipped), then yield, once per generated step, a list
    of cfg.num characters (one per independent sample), cfg.length times. `rnn`: a FastRNN, or anything
    with its warm(ids, num) -> logits and step(ids) -> logits (sample.py's torch stepper)."""
    if cfg.length == 0:
        return
    logits = rnn.warm(prime_ids(vocab, cfg.prime), cfg.num)  # (N, V)
    sample = Sampler(cfg, len(vocab))
    chars = vocab.chars
    for t in range(cfg.length):
        ids = sample(logits)  # (N,)
        yield [chars[i] for i in ids.tolist()]
        if t + 1 < cfg.length:  # the last character's logits would never be used
            logits = rnn.step(ids)  # (N, V)


def prime_ids(vocab: Vocab, prime: str) -> np.ndarray:
    """The prime's ids, unknown characters dropped; never empty, because the state must be warmed on
    something: a newline (the start of a line, as after a speech) if the vocabulary has one, else id 0."""
    ids = vocab.encode(prime, unknown="skip")  # (T,)
    if len(ids) == 0:
        ids = vocab.encode("\n") if "\n" in vocab else np.zeros(1, dtype=np.int64)  # (1,)
    return ids


def mean_nats(rnn: FastRNN, ids: np.ndarray) -> float:
    """Mean -log p of ids[1:] given what precedes them, from a zero state (what `eval` reports for a
    text of exactly these characters)."""
    rnn.reset_zero(1)
    total = 0.0
    for prev, nxt in zip(ids[:-1], ids[1:]):
        logits = rnn.step(np.array([prev]))[0].astype(np.float64)  # (V,)
        top = logits.max()
        total += top + np.log(np.exp(logits - top).sum()) - logits[nxt]
    return total / (len(ids) - 1)


class Sampler:
    """Turns a batch of logits into one id per row: greedy at temp 0, else temperature, then top-k, then
    top-p on what top-k left, then one draw by inverse CDF.

    The filters shrink the candidate set rather than masking the whole vocabulary: top-k keeps the k
    largest (argpartition, linear in V), top-p sorts only those, and the draw happens among the survivors
    and maps back to ids. A filtered character is simply not a candidate, and one that top-p zeroes inside the
    set is never drawn either: the draw takes the first index whose cumulative sum exceeds the target.
    """

    def __init__(self, cfg: SampleConfig, vocab_size: int) -> None:
        self.rng = np.random.default_rng(cfg.seed)
        self.greedy = cfg.temp == 0 or 1.0 / cfg.temp == float("inf")  # 1 / 5e-324 overflows: as good as 0
        self.inv_temp = 0.0 if self.greedy else 1.0 / cfg.temp
        self.top_k = cfg.top_k if cfg.top_k is not None and cfg.top_k < vocab_size else None
        self.top_p = cfg.top_p if cfg.top_p is not None and cfg.top_p < 1.0 else None
        self._p = np.empty((0, vocab_size))  # (N, V) work buffer, sized on first use
        self._rows = np.empty((0, 1), dtype=np.intp)  # (N, 1) row numbers for fancy indexing
        k = kernel.load()
        self._draw_one = None if k is None else k.draw_one  # None: _one's five numpy calls
        self._seen: tuple[Any, int, int] = (None, 0, 0)  # (logits array, its address, _work's address)

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        """(N, V) logits -> (N,) int64 ids; ``logits`` is only read."""
        if self.greedy:
            return np.argmax(logits, axis=1)  # (N,)
        if logits.shape[0] == 1 and self.top_k is None and self.top_p is None:
            return self._one(logits)
        return self._rows_at_once(logits)

    def _rows_at_once(self, logits: np.ndarray) -> np.ndarray:
        """The general path: any number of rows, any filters."""
        if self._p.shape[0] != logits.shape[0]:
            self._p = np.empty(logits.shape)  # (N, V) float64
            self._rows = np.arange(logits.shape[0])[:, None]  # (N, 1)
        p, rows = self._p, self._rows
        np.subtract(logits, logits.max(axis=1, keepdims=True), out=p)  # max 0: exp cannot overflow
        p *= self.inv_temp
        np.exp(p, out=p)  # (N, V) unnormalised probabilities, the largest exactly 1
        ids = None  # (N, C) the candidates' ids, None while all V are candidates in id order
        if self.top_k is not None:
            ids = np.argpartition(p, -self.top_k, axis=1)[:, -self.top_k :]  # (N, k) the k largest
            p = p[rows, ids]  # (N, k)
        if self.top_p is not None:
            order = np.argsort(-p, axis=1, kind="stable")  # (N, C) most likely first
            ids = order if ids is None else ids[rows, order]  # (N, C)
            p = p[rows, order]  # (N, C) descending
            cum = np.cumsum(p, axis=1)  # (N, C)
            # The mass ahead of rank j is cum[j - 1]; rank 0 has none ahead of it, so it always stays.
            p[:, 1:][cum[:, :-1] >= self.top_p * cum[:, -1:]] = 0.0
        picked = self._draw(p)  # (N,) positions among the candidates
        return picked if ids is None else ids[rows[:, 0], picked]  # (N,)

    def _one(self, logits: np.ndarray) -> np.ndarray:
        """One row, (1, V), no filters (what `charrnn sample` does by default): for a vocabulary of ~100 the
        calls, not the arithmetic, are the cost (28 us a draw by the general path, about a quarter of a 2x256
        step). So one kernel call where there is a kernel, else five numpy calls; the same float64 arithmetic
        and the same random draw as the general path either way, so the same seed gives the same character."""
        if self._draw_one is not None and logits.dtype == np.float32:
            seen, address, work = self._seen
            if logits is not seen:  # FastRNN returns the same buffer every step: its address is taken once
                logits = np.ascontiguousarray(logits)  # (1, V)
                self._work = np.empty(logits.shape[1])  # (V,) float64 scratch, kept alive with its address
                address, work = logits.ctypes.data, self._work.ctypes.data
                self._seen = (logits, address, work)
            u = self.rng.random()
            return np.array([self._draw_one(address, logits.shape[1], self.inv_temp, u, work)])
        return self._one_numpy(logits[0])

    def _one_numpy(self, logits: np.ndarray) -> np.ndarray:
        """_one for a (V,) row in five numpy calls."""
        p = logits.astype(np.float64)  # (V,)
        p -= p.max()
        p *= self.inv_temp
        np.exp(p, out=p)
        np.cumsum(p, out=p)  # (V,) non-decreasing
        return np.array([p.searchsorted(self.rng.random() * p[-1], side="right")])  # first cumsum > target

    def _draw(self, p: np.ndarray) -> np.ndarray:
        """One index per row of (N, C) unnormalised probabilities; the array is overwritten."""
        np.cumsum(p, axis=1, out=p)  # (N, C) cumulative, non-decreasing
        total = p[:, -1]  # (N,)
        # u < 1 and total >= 1 give u * total < total even after rounding, so some index always qualifies.
        target = self.rng.random(len(total)) * total  # (N,) in [0, total)
        return np.count_nonzero(p <= target[:, None], axis=1)  # (N,) first index with cumsum > target


class FastRNN:
    """The model's recurrence and head as float32 numpy, for stepping one character at a time on a CPU.

    Layout: the hidden states of all layers live in one (B, L*H) buffer, so layer l's input and its own
    previous state, [h_{l-1}, h_l], are the adjacent columns [(l-1)H, (l+1)H) and each layer above the
    first is ONE affine map through [W_ih | W_hh]. Layer 0's input is a character, so its input matmul,
    the embedding and the biases fold into a (V, G*H) table read by id.

    Sigmoid is computed as 0.5 * tanh(x / 2) + 0.5 with the halving folded into the weights, so an LSTM
    layer runs one tanh over all four gates; the LSTM gates are reordered i, f, o, g so the three sigmoid
    gates are adjacent. GRU's candidate gate needs r * (W_hn h + b_hn), so it cannot share a matmul over
    [x, h] with its input half; GRU layers above the first do two matmuls instead (no zero padding).

    The affine maps run on one of two backends, chosen per batch size in ``reset``:
    - "numpy": OpenBLAS, both cores. Best at batch 1, where a step is a few matrix-vector products whose
      cost is reading the weights from cache at full bandwidth.
    - "onednn": torch's oneDNN linear with weights pre-packed for the batch. With several rows the work is
      arithmetic, and oneDNN uses AVX-512 on this CPU where numpy's OpenBLAS picks AVX2 kernels: twice as
      fast at batch 32. It is a private torch op, so it is probed once and "numpy" stands in without it.
    One backend per loop, never both: OpenBLAS and torch's OpenMP each keep spinning threads, and on two
    cores the two pools starve each other (a batch-32 step took 11 ms instead of 0.65 ms with both).

    With the numpy backend, the compiled kernel (kernel.py), where there is one, does each layer's gate
    arithmetic in one call instead of ~10 ufunc calls; the matrix products stay numpy's. Same operations in
    the same order, so the same logits to rounding (the same bits, where libmvec's tanhf is numpy's).
    """

    # From batch 2 on, oneDNN wins: 2x512 LSTM steps on 2 cores took 567 us (numpy) vs 152 us (oneDNN) at
    # batch 2 and 1327 vs 630 us at batch 32, but 89 vs 148 us at batch 1.
    ONEDNN_MIN_BATCH = 2

    def __init__(self, cfg: ModelConfig, weights: Mapping[str, np.ndarray], backend: str = "auto") -> None:
        """`weights`: the model's state_dict as numpy arrays (a .safetensors file's contents)."""
        if backend not in ("auto", "numpy", "onednn"):
            raise CharRNNError(f"unknown FastRNN backend {backend!r}")
        if cfg.cutoffs:
            raise CharRNNError("FastRNN has no adaptive softmax: sample such a model through torch")
        self.kind, self.layers, self.hidden, self.backend = cfg.model, cfg.layers, cfg.hidden, backend
        H, L = cfg.hidden, cfg.layers

        def param(name: str, rows: int, dtype: type = np.float32) -> np.ndarray:
            w = weights.get(f"rnn.{name}")
            if w is None:  # a cell built with bias=False
                return np.zeros(rows)
            return np.asarray(w, dtype=dtype)  # only read: every array kept below is a new one

        # Per-row order and scale: sigmoid gates get the 0.5 of the tanh identity.
        if self.kind == "lstm":  # torch order i, f, g, o -> i, f, o, g
            order = np.r_[np.arange(0, 2 * H), np.arange(3 * H, 4 * H), np.arange(2 * H, 3 * H)]
            scale = np.r_[np.full(3 * H, 0.5), np.ones(H)]  # (4H,)
        elif self.kind == "gru":  # r, z, n: only r and z are sigmoids
            order = np.arange(3 * H)
            scale = np.r_[np.full(2 * H, 0.5), np.ones(H)]  # (3H,)
        else:
            order = np.arange(H)
            scale = np.ones(H)
        G = len(order) // H
        self.gates = G

        def gate_rows(*parts: np.ndarray) -> np.ndarray:
            """Reordered, scaled copy of weights side by side ([W_ih | W_hh] for one map over [h_{l-1}, h_l]),
            written gate block by gate block in one pass: each block is H contiguous rows with one scale.
            Float32 throughout (halving is exact); fancy indexing, an in-place scale and a concatenation made
            three passes and took most of a 2x512 FastRNN's 50 ms build, which every `charrnn sample` pays."""
            cols = np.cumsum([0, *(w.shape[1] for w in parts)])
            out = np.empty((G * H, cols[-1]), np.float32)  # (G*H, K)
            for g in range(G):
                src, k = order[g * H], np.float32(scale[g * H])
                for w, lo, hi in zip(parts, cols[:-1], cols[1:]):
                    np.multiply(w[src : src + H], k, out=out[g * H : (g + 1) * H, lo:hi])
            return out

        # Affine maps x -> x @ W.T + b, each reading a column range of the state buffer. Per layer: the
        # maps' indices; for GRU, (hidden map, input map) with the input map absent on layer 0.
        self.maps: list[tuple[np.ndarray, np.ndarray | None, int, int]] = []  # (W (N, K), b (N,), lo, hi)
        self.layer_maps: list[list[int]] = []
        embed = np.asarray(weights["embed.weight"], dtype=np.float64)  # (V, E)
        for layer in range(L):
            w_ih = param(f"weight_ih_l{layer}", G * H)  # (G*H, in) torch's gate order
            w_hh = param(f"weight_hh_l{layer}", G * H)  # (G*H, H)
            b_ih = param(f"bias_ih_l{layer}", G * H, np.float64)[order] * scale  # (G*H,)
            b_hh = param(f"bias_hh_l{layer}", G * H, np.float64)[order] * scale  # (G*H,)
            if self.kind == "gru":  # b_hn stays with W_hn h; r and z take theirs with the input's
                b_ih = b_ih + np.r_[b_hh[: 2 * H], np.zeros(H)]
                b_hh = np.r_[np.zeros(2 * H), b_hh[2 * H :]]
            if layer == 0:  # input share, embedding and biases in one table; one map for the hidden state
                w_in = w_ih.astype(np.float64)[order] * scale[:, None]  # (G*H, E)
                self.table = _f32(embed @ w_in.T + b_ih + (0 if self.kind == "gru" else b_hh))  # (V, G*H)
                hidden_b = b_hh if self.kind == "gru" else None
                self.layer_maps.append([self._add_map(gate_rows(w_hh), hidden_b, 0, H)])
            elif self.kind == "gru":
                hidden_map = self._add_map(gate_rows(w_hh), b_hh, layer * H, (layer + 1) * H)
                input_map = self._add_map(gate_rows(w_ih), b_ih, (layer - 1) * H, layer * H)
                self.layer_maps.append([hidden_map, input_map])
            else:
                w = gate_rows(w_ih, w_hh)  # (G*H, 2H) over [h_{l-1}, h_l]
                self.layer_maps.append([self._add_map(w, b_ih + b_hh, (layer - 1) * H, (layer + 1) * H)])
        head_w = weights.get("head.weight", weights["embed.weight"])  # tied weights may be stored once
        self.head_map = self._add_map(np.asarray(head_w), weights.get("head.bias"), (L - 1) * H, L * H)  # (V, H)
        self._cell = {"lstm": self._lstm, "gru": self._gru, "rnn": self._rnn}[self.kind]
        self._packed: dict[int, list[Any]] = {}  # oneDNN weights (torch tensors), by the batch they were packed for
        self.kernel = kernel.load()  # None: numpy's ufuncs do the gate arithmetic
        self._plan: list[tuple[Any, ...]] | None = None  # the kernel's per-layer calls, made in reset
        self.reset_zero(1)

    def _add_map(self, w: np.ndarray, b: np.ndarray | None, lo: int, hi: int) -> int:
        self.maps.append((_f32(w), None if b is None else _f32(b), lo, hi))
        return len(self.maps) - 1

    def reset_zero(self, batch: int) -> None:
        """A zero state for `batch` rows, as a fresh model starts."""
        zeros = np.zeros((self.layers, batch, self.hidden), np.float32)  # (L, B, H)
        self.reset((zeros, zeros) if self.kind == "lstm" else (zeros,))

    def reset(self, state: Sequence[np.ndarray]) -> None:
        """Load a state, tuple of (L, B, H) arrays as CharRNN.forward returns them (h, or h and c for an
        LSTM), size the buffers for its batch and pick the backend. The arrays are copied, never written."""
        L, H = self.layers, self.hidden
        B = state[0].shape[1]
        h = np.asarray(state[0], dtype=np.float32)  # (L, B, H)
        self.h = np.array(h.transpose(1, 0, 2), order="C").reshape(B, L * H)  # (B, L*H) an own copy
        self.c = None
        if self.kind == "lstm":
            self.c = np.array(state[1], dtype=np.float32)  # (L, B, H) an own copy
        self.rows = np.empty((B, self.gates * H), np.float32)  # (B, G*H) table rows of this step's ids
        self.tmp = np.empty((B, H), np.float32)  # (B, H)
        self.active = self._choose_backend(B)
        if self.active == "onednn":
            if B not in self._packed:
                self._packed[B] = [_pack(w, B) for w, _, _, _ in self.maps]
            packed = self._packed[B]
            torch = sys.modules["torch"]
            h = torch.from_numpy(self.h)  # (B, L*H) shares memory with self.h
            self._dnn = [
                (h[:, lo:hi], p, None if b is None else torch.from_numpy(b))
                for (_, b, lo, hi), p in zip(self.maps, packed, strict=True)
            ]
        else:
            self._out = [np.empty((B, len(w)), np.float32) for w, _, _, _ in self.maps]  # (B, N) each
        self._plan = self._kernel_plan() if self.active == "numpy" and self.kernel is not None else None
        self._step_plan = self._fused_plan() if self._plan is not None and B == 1 else None
        self._fused = None if self._step_plan is None else ctypes.addressof(self._step_plan)  # step1's argument

    def _kernel_plan(self) -> list[tuple[Any, ...]]:
        """Per layer, the matmuls (input view, transposed weight, output) and the kernel call's arguments, the
        buffers as integer addresses: taken once here, since deriving them costs more than a cell's arithmetic.
        The buffers live until the next reset, which makes a new plan."""
        H, L, B, k = self.hidden, self.layers, self.h.shape[0], self.kernel
        f32 = 4  # bytes
        self._rows_addr = self.rows.ctypes.data
        self._table_addr, self._row_bytes = self.table.ctypes.data, self.table.shape[1] * f32
        h_addr, h_stride = self.h.ctypes.data, L * H

        def mm(i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            w, _, lo, hi = self.maps[i]
            return (self.h[:, lo:hi], w.T, self._out[i])

        plan = []
        for layer, maps in enumerate(self.layer_maps):
            h_l = h_addr + layer * H * f32  # (B, H) this layer's columns of the state
            g, b = _addr(self._out[maps[0]]), _addr(self.maps[maps[0]][1])
            # The C call is cell(g, b, third, *rest); `third` is layer 0's table rows (passed by step) or, for
            # a GRU layer above it, its input map's output.
            if self.kind == "lstm":
                cell, third, rest = k.lstm_cell, None, (_addr(self.c[layer]), h_l, h_stride, B, H)
            elif self.kind == "gru":
                cell, third = k.gru_cell, None if layer == 0 else _addr(self._out[maps[1]])
                rest = (None if layer == 0 else _addr(self.maps[maps[1]][1]), h_l, h_stride, B, H)
            else:
                cell, third, rest = k.rnn_cell, None, (h_l, h_stride, B, H)
            plan.append(([mm(i) for i in maps], cell, g, b, third, rest))
        self._head_mm = (*mm(self.head_map), self.maps[self.head_map][1])
        return plan

    def _fused_plan(self) -> kernel.StepPlan | None:
        """At batch 1, the plan of the kernel's step1 (the whole step in one call, the products through
        numpy's BLAS); None where the kernel found no BLAS to call or the model is too deep. Built from the
        same buffers as _kernel_plan, so the two paths share one state; it points into them, so it lives
        until the next reset."""
        k = self.kernel
        if k.sgemv is None or len(self.maps) > kernel.MAX_PRODUCTS:
            return None
        plan = kernel.StepPlan(gemv=k.sgemv, kind=("lstm", "gru", "rnn").index(self.kind), layers=self.layers)
        plan.hidden, plan.table, plan.vocab, plan.row_len = self.hidden, _addr(self.table), *map(int, self.table.shape)
        plan.h, plan.c = _addr(self.h), _addr(self.c)
        order = [i for maps in self.layer_maps for i in maps] + [self.head_map]  # the order step1 runs them in
        for slot, i in enumerate(order):
            w, b, lo, hi = self.maps[i]
            x = self.h[0, lo:hi]  # (K,) contiguous at batch 1
            plan.p[slot] = kernel.Product(_addr(w), _addr(b), _addr(x), _addr(self._out[i]), *map(int, w.shape))
        return plan

    def _choose_backend(self, batch: int) -> str:
        """oneDNN only where torch is already loaded: this module never imports it (a sampler that starts
        at once), and for one row numpy is the faster backend anyway."""
        if self.backend == "numpy" or (self.backend == "auto" and batch < self.ONEDNN_MIN_BATCH):
            return "numpy"
        if self.backend == "auto" and "torch" not in sys.modules:
            return "numpy"
        if _onednn_ok():
            return "onednn"
        if self.backend == "onednn":
            raise CharRNNError("this torch build has no oneDNN linear; use the numpy backend")
        return "numpy"

    def state(self) -> tuple[np.ndarray, ...]:
        """The current state, tuple of (L, B, H) arrays, as ``CharRNN.forward`` returns it (copies)."""
        L, H, B = self.layers, self.hidden, self.h.shape[0]
        h = self.h.reshape(B, L, H).transpose(1, 0, 2).copy()  # (L, B, H)
        return (h, self.c.copy()) if self.kind == "lstm" else (h,)  # (L, B, H) each

    def warm(self, ids: np.ndarray, num: int) -> np.ndarray:
        """Step one row through the prime `ids` from a zero state, then copy the state into `num` rows:
        every sample starts from the same state. Returns the (num, V) logits after the prime."""
        self.reset_zero(1)
        for i in ids[:-1]:
            self.step(np.array([i]))
        last = self.step(np.array([ids[-1]]))[0].copy()  # (V,)
        self.reset(tuple(np.repeat(s, num, axis=1) for s in self.state()))  # (L, num, H) each
        return np.repeat(last[None, :], num, axis=0)  # (num, V)

    def step(self, ids: np.ndarray) -> np.ndarray:
        """Feed one id per row, (B,), and advance the state; returns the (B, V) logits, which the caller
        may read until the next step overwrites them."""
        if self._plan is not None:
            return self._step_kernel(ids)
        np.take(self.table, ids, axis=0, out=self.rows)  # (B, G*H) layer 0's input share, biases included
        for layer in range(self.layers):
            self._cell(layer)
        return self._affine(self.head_map)  # (B, V)

    def _step_kernel(self, ids: np.ndarray) -> np.ndarray:
        """step() with the kernel: per layer its matmuls, then one call for the gate arithmetic. Layer 0 reads
        its table row in place at batch 1 (anything but an integer id inside the table goes through np.take,
        which refuses it as before)."""
        one = len(ids) == 1 == len(self.rows) and isinstance(ids, np.ndarray) and ids.dtype.kind in "iu"
        if one and 0 <= (i := int(ids[0])) < len(self.table):
            if self._fused is not None:
                self.kernel.step1(self._fused, i)
                return self._out[self.head_map]  # (1, V)
            rows = self._table_addr + i * self._row_bytes  # (1, G*H) the id's table row
        else:
            np.take(self.table, ids, axis=0, out=self.rows)  # (B, G*H)
            rows = self._rows_addr
        matmul = np.matmul
        for layer, (mms, cell, g, b, third, rest) in enumerate(self._plan):
            for x, w_t, out in mms:
                matmul(x, w_t, out=out)  # (B, N)
            cell(g, b, third if layer else rows, *rest)
        x, w_t, out, b = self._head_mm
        matmul(x, w_t, out=out)  # (B, V)
        if b is not None:
            out += b
        return out

    def _affine(self, i: int) -> np.ndarray:
        """Map i applied to its columns of the state: a fresh or reused (B, N) array, free to overwrite."""
        if self.active == "onednn":
            x, packed, b = self._dnn[i]
            return _onednn_linear()(x, packed, b, "none", [], "").numpy()  # (B, N)
        w, b, lo, hi = self.maps[i]
        out = self._out[i]
        np.matmul(self.h[:, lo:hi], w.T, out=out)  # (B, N)
        if b is not None:
            out += b
        return out

    def _lstm(self, layer: int) -> None:
        H, tmp = self.hidden, self.tmp
        g = self._affine(self.layer_maps[layer][0])  # (B, 4H) i, f, o, g
        if layer == 0:
            g += self.rows
        np.tanh(g, out=g)
        sig = g[:, : 3 * H]  # (B, 3H) i, f, o
        sig *= 0.5
        sig += 0.5
        i, f, o, cand = g[:, :H], g[:, H : 2 * H], g[:, 2 * H : 3 * H], g[:, 3 * H :]
        c = self.c[layer]  # (B, H)
        c *= f
        np.multiply(i, cand, out=tmp)
        c += tmp
        np.tanh(c, out=tmp)
        np.multiply(o, tmp, out=self.h[:, layer * H : (layer + 1) * H])

    def _gru(self, layer: int) -> None:
        H, tmp = self.hidden, self.tmp
        maps = self.layer_maps[layer]
        gh = self._affine(maps[0])  # (B, 3H) r, z, n from the hidden state, b_hn included
        gi = self.rows if layer == 0 else self._affine(maps[1])  # (B, 3H) from the input
        rz = gh[:, : 2 * H]  # (B, 2H)
        rz += gi[:, : 2 * H]
        np.tanh(rz, out=rz)
        rz *= 0.5
        rz += 0.5
        r, z, n = gh[:, :H], gh[:, H : 2 * H], gh[:, 2 * H :]
        n *= r
        n += gi[:, 2 * H :]
        np.tanh(n, out=n)
        h = self.h[:, layer * H : (layer + 1) * H]  # (B, H)
        np.subtract(h, n, out=tmp)  # h' = n + z * (h - n)
        tmp *= z
        np.add(n, tmp, out=h)

    def _rnn(self, layer: int) -> None:
        H = self.hidden
        a = self._affine(self.layer_maps[layer][0])  # (B, H)
        if layer == 0:
            a += self.rows
        np.tanh(a, out=self.h[:, layer * H : (layer + 1) * H])


def _onednn_linear() -> Any:
    """torch's private oneDNN linear (the op torch.compile's CPU backend calls); a torch without it, or no
    torch, makes the backend fall back to numpy."""
    import torch

    return torch.ops.mkldnn._linear_pointwise


def _pack(w: np.ndarray, batch: int) -> Any:
    """Reorder a (N, K) weight once into oneDNN's blocked layout for this batch size (a torch tensor)."""
    import torch

    return torch.ops.mkldnn._reorder_linear_weight(torch.from_numpy(w), batch)  # (N, K), oneDNN layout


@functools.cache
def _onednn_ok() -> bool:
    """Whether the private oneDNN linear exists and agrees with numpy on a small case used as FastRNN
    uses it: packed weight, bias, and an input that is a column slice of a wider buffer."""
    try:
        import torch

        w = np.arange(12, dtype=np.float32).reshape(3, 4) / 7  # (3, 4)
        b = np.array([1.0, -2.0, 0.5], np.float32)  # (3,)
        buf = np.arange(12, dtype=np.float32).reshape(2, 6) / 5  # (2, 6)
        linear = _onednn_linear()
        y = linear(torch.from_numpy(buf)[:, 1:5], _pack(w, 2), torch.from_numpy(b), "none", [], "")  # (2, 3)
        want = buf[:, 1:5] @ w.T + b  # (2, 3)
        return torch.backends.mkldnn.is_available() and np.allclose(y.numpy(), want, atol=1e-5)
    except Exception:  # noqa: BLE001 - a torch without the op, or one whose signature changed
        return False


def _addr(a: np.ndarray | None) -> int | None:
    """A buffer's address for the kernel's calls (None: NULL)."""
    return None if a is None else a.ctypes.data


def _f32(a: np.ndarray) -> np.ndarray:
    """Contiguous float32: BLAS wants unit-stride rows, and fp32 is what the model was trained in."""
    return np.ascontiguousarray(a, dtype=np.float32)
