"""bf16 weights for the batch-1 sampler, measured: a step's matrix-vector products with fp32 weights (numpy,
and a hand-written AVX-512 kernel) against bf16 weights (AVX512_BF16 dot products, or bf16 widened to fp32 in
registers), and what bf16 does to the bundled model's nats/char. Needs a C compiler and a CPU with
avx512_bf16; the sampler itself is not changed.

    python benchmarks/bf16_matvec.py [--steps 500] [--chars 4000]

The last line is `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from charrnn import checkpoint, kernel, weights
from charrnn.config import ModelConfig, SampleConfig
from charrnn.fastrnn import FastRNN, generate, mean_nats
from charrnn.model import CharRNN
from charrnn.sample import fast_rnn

sys.path.insert(0, str(Path(__file__).parent))
from speed import VOCAB, median_time  # noqa: E402

SOURCE = Path(__file__).with_name("bf16_matvec.c")


def cpu_flags() -> set[str]:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        return next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())


def build() -> ctypes.CDLL:
    cc = kernel.compiler()
    if cc is None:
        raise SystemExit("no C compiler")
    out = Path(tempfile.mkdtemp(prefix="charrnn-bf16-")) / "bf16_matvec.so"
    subprocess.run([*cc, "-O3", "-march=native", "-fPIC", "-shared", str(SOURCE), "-o", str(out)], check=True)
    lib = ctypes.CDLL(str(out))
    p, i = ctypes.c_void_p, ctypes.c_int
    lib.matvec_f32.argtypes = [p, p, p, i, i]
    lib.matvec_bf16_dot.argtypes = [p, p, p, i, i, p]
    lib.matvec_bf16_up.argtypes = [p, p, p, i, i]
    for f in (lib.matvec_f32, lib.matvec_bf16_dot, lib.matvec_bf16_up):
        f.restype = None
    return lib


def to_bf16(w: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bits (uint16), rounded to nearest even, as torch and the hardware round."""
    u = np.ascontiguousarray(w, dtype=np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


class Products:
    """y = W x for each of a FastRNN's maps in one of four ways, each a (N, K) weight and a (N,) output."""

    def __init__(self, lib: ctypes.CDLL, maps: list[tuple[np.ndarray, ...]], how: str) -> None:
        self.how = how
        self.fp32 = [np.ascontiguousarray(w) for w, *_ in maps]  # (N, K) each
        self.bf16 = [to_bf16(w) for w in self.fp32]  # (N, K) uint16 each
        self.out = [np.empty((1, len(w)), np.float32) for w in self.fp32]  # (1, N) each
        self.x = [np.empty(w.shape[1], np.float32) for w in self.fp32]  # (K,) each, contiguous inputs
        self.scratch = np.empty(max(w.shape[1] for w in self.fp32), np.uint16)  # (K,) x in bf16
        self.f32, self.dot, self.up = lib.matvec_f32, lib.matvec_bf16_dot, lib.matvec_bf16_up
        self.args = [
            (
                (self.fp32[i] if how in ("numpy", "c_fp32") else self.bf16[i]).ctypes.data,
                self.x[i].ctypes.data,
                self.out[i].ctypes.data,
                *self.fp32[i].shape,
            )
            for i in range(len(maps))
        ]
        assert all(w.shape[1] % 32 == 0 for w in self.fp32), "the kernels want K a multiple of 32"

    def __call__(self, i: int, x: np.ndarray) -> np.ndarray:
        """(1, N) = x (1, K) @ W_i.T, written into a buffer the next call for map i overwrites."""
        if self.how == "numpy":
            return np.matmul(x, self.fp32[i].T, out=self.out[i])  # (1, N)
        self.x[i][:] = x[0]
        w, xp, out, n, k = self.args[i]
        if self.how == "c_fp32":
            self.f32(w, xp, out, n, k)
        elif self.how == "bf16_dot":
            self.dot(w, xp, out, n, k, self.scratch.ctypes.data)
        else:
            self.up(w, xp, out, n, k)
        return self.out[i]


class Bf16RNN(FastRNN):
    """A FastRNN whose affine maps run through Products (batch 1, the numpy ufunc cells)."""

    def __init__(self, cfg: ModelConfig, tensors: dict, lib: ctypes.CDLL, how: str) -> None:
        super().__init__(cfg, tensors, backend="numpy")
        self.kernel, self._plan = None, None  # the plain step(), which calls _affine
        self.products = Products(lib, self.maps, how)

    def _affine(self, i: int) -> np.ndarray:
        _, b, lo, hi = self.maps[i]
        out = self.products(i, self.h[:, lo:hi])  # (1, N)
        if b is not None:
            out += b
        return out


def speeds(lib: ctypes.CDLL, hidden: int, steps: int, repeats: int) -> dict:
    """Steps/s of a 2xH LSTM step's matrix-vector products alone, each way; and how far each is from fp32."""
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=len(VOCAB), hidden=hidden, layers=2, embed=128)).eval()
    rnn = fast_rnn(model, backend="numpy")
    x = [
        np.random.default_rng(i).standard_normal((1, w.shape[1])).astype(np.float32) * 0.5
        for i, (w, *_) in enumerate(rnn.maps)
    ]  # (1, K) each
    want = [xi @ w.T for xi, (w, *_) in zip(x, rnn.maps)]  # (1, N) each
    out = {}
    for how in ("numpy", "c_fp32", "bf16_dot", "bf16_up"):
        prod = Products(lib, rnn.maps, how)

        def run(prod=prod) -> None:
            for _ in range(steps):
                for i in range(len(x)):
                    prod(i, x[i])

        rate = steps / median_time(run, repeats)
        err = max(float(np.abs(prod(i, x[i]) - want[i]).max() / np.abs(want[i]).max()) for i in range(len(x)))
        out[how] = {"steps_per_s": round(rate), "max_rel_err": float(f"{err:.2g}")}
    mb = sum(w.nbytes for w, *_ in rnn.maps) / 2**20
    print(f"  lstm 2x{hidden} ({mb:.1f} MB of fp32 weights), matrix-vector steps/s:", flush=True)
    for how, r in out.items():
        print(
            f"    {how:9s} {r['steps_per_s']:>7,}  ({r['steps_per_s'] / out['numpy']['steps_per_s']:.2f}x numpy; "
            f"largest error {r['max_rel_err']:.1e} of the largest output)",
            flush=True,
        )
    return out


def quality(lib: ctypes.CDLL, chars: int) -> dict:
    """nats/char of the bundled model with fp32 and bf16 weights: on the tail of its corpus (held-out text) and
    on a sample the fp32 model drew."""
    found = weights.for_checkpoint(checkpoint.BUNDLED)
    vocab = found.vocab
    text = Path(__file__).parents[1].joinpath("corpora", "shakespeare.txt").read_text(encoding="utf-8")
    held_out = vocab.encode(text[-chars:], unknown="skip")  # (T,)
    base = FastRNN(found.cfg, found.tensors, backend="numpy")
    base.kernel, base._plan = None, None
    sample = "".join(s[0] for s in generate(base, vocab, SampleConfig(length=chars, seed=1, prime="\n")))
    sampled = vocab.encode(sample, unknown="skip")  # (T,)
    out = {}
    for how in ("numpy", "bf16_dot", "bf16_up"):
        rnn = Bf16RNN(found.cfg, found.tensors, lib, how)
        out[how] = {"held_out": mean_nats(rnn, held_out), "sample": mean_nats(rnn, sampled)}
    print(f"  bundled {found.cfg.model} {found.cfg.layers}x{found.cfg.hidden}, nats/char over {chars:,} chars:")
    for how, r in out.items():
        d = {k: r[k] - out["numpy"][k] for k in r}
        print(
            f"    {how:9s} held-out {r['held_out']:.4f} ({d['held_out']:+.4f})  its fp32 sample {r['sample']:.4f} "
            f"({d['sample']:+.4f})",
            flush=True,
        )
    return {how: {k: round(v, 5) for k, v in r.items()} for how, r in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=500, help="steps a timing (500)")
    ap.add_argument("--repeats", type=int, default=5, help="timings, the median reported (5)")
    ap.add_argument("--chars", type=int, default=4000, help="characters for nats/char (4000)")
    args = ap.parse_args()
    if "avx512_bf16" not in cpu_flags():
        raise SystemExit("this CPU has no avx512_bf16: nothing to measure")
    lib = build()
    result = {"speed": {}, "nats_per_char": {}}
    print("bf16 weights at batch 1 (one thread: the products are numpy's or this file's kernels)", flush=True)
    for hidden in (512, 256):
        result["speed"][f"lstm2x{hidden}"] = speeds(lib, hidden, args.steps, args.repeats)
    result["nats_per_char"] = quality(lib, args.chars)
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
