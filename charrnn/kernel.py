"""The compiled kernel (_kernel.c) of the sampler and of the GRU's training steps: built once per machine with the
C compiler at hand, loaded with ctypes. Imports no torch.

At batch 1 a FastRNN step is a few matrix-vector products and, around them, ~25 numpy calls of gate
arithmetic and drawing, each costing more in call overhead than in arithmetic. The kernel does that
arithmetic in one call per layer and one per draw; the products stay in numpy (OpenBLAS). Training a GRU has
the same shape of problem at batch 16 (torch's small ops around each time step's matmul): charrnn.grutrain
calls gru_train_fwd and gru_train_bwd once a time step, around torch's matmuls.

The kernel's tanh is glibc's vector tanhf (libmvec: x86-64 Linux, glibc >= 2.35, AVX2 or AVX-512); elsewhere
there is no kernel, since a scalar tanh would make the step slower than numpy's. A compiler is optional too:
`load()` returns None without one, when the build or the load fails, or with CHARRNN_KERNEL=0, and the sampler
keeps its numpy path, which gives the same text. The build lands in the
cache folder ($CHARRNN_CACHE, else the platform's), named by a hash of the source, the compiler command and
the machine (architecture and CPU flags, since -march=native code may not run on another CPU), written all or
nothing. A failed build leaves a `.failed` file with the compiler's message beside it, so a machine without a
working compiler pays for the attempt once, not on every start.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from charrnn.atomic import replace_with
from charrnn.data import cache_root

SOURCE = Path(__file__).with_name("_kernel.c")
# -march=native: the CPU's vector width. -ffp-contract=off: no fused multiply-add, so every product and sum
# rounds as numpy's separate ufuncs do. -fno-math-errno lets the compiler treat libm calls as pure; no
# -ffast-math, which would reorder arithmetic. CHARRNN_MVEC and -lmvec: glibc's vector tanhf, without which
# the kernel's tanh would be scalar and slower than numpy's own vectorised one (2x512 LSTM 4,273 chars/s
# against numpy's 4,610), so there is no scalar fallback build. --no-undefined: a libmvec without tanhf fails
# the build, not the load.
# CHARRNN_KERNEL_MARCH (say haswell) builds for an older CPU than this one: how a benchmark stands in for an
# AVX2-only machine on an AVX-512 one, as ATEN_CPU_CAPABILITY does for torch.
MARCH = os.environ.get("CHARRNN_KERNEL_MARCH", "native")
FLAGS = ["-O3", f"-march={MARCH}", "-fno-math-errno", "-ffp-contract=off", "-fPIC", "-shared", "-DCHARRNN_MVEC"]
LIBS = ["-lmvec", "-lm", "-Wl,--no-undefined"]
COMPILE_TIMEOUT_S = 120


@dataclass(frozen=True)
class Kernel:
    """The loaded functions, argument types resolved once (see _kernel.c for what each computes)."""

    lib: ctypes.CDLL
    path: Path
    lstm_cell: ctypes._CFuncPtr  # (g, bias|None, rows|None, c, h, h_stride, B, H)
    gru_cell: ctypes._CFuncPtr  # (gh, bh|None, gi, bi|None, h, h_stride, B, H)
    rnn_cell: ctypes._CFuncPtr  # (a, bias|None, rows|None, h, h_stride, B, H)
    gru_train_fwd: ctypes._CFuncPtr  # (gh, gi, hp, h, h_lp, saved, bf16, B, H, work): training, charrnn/grutrain.py
    gru_train_bwd: ctypes._CFuncPtr  # (carry, dout, m|None, saved, hp, dgi, dgh, bf16, B, H, work, d_bi, d_bh)
    dropout_apply: ctypes._CFuncPtr  # (x, y, n, seed, cut, scale, bf16): training, charrnn/dropout.py
    draw_one: ctypes._CFuncPtr  # (logits, V, inv_temp, u, work) -> index
    step1: ctypes._CFuncPtr  # (address of a StepPlan, id) -> 0, or -1 for an id outside the table
    lanes: int  # 16 or 8: libmvec's AVX-512 or AVX2 tanhf
    sgemv: int | None  # the address of cblas_sgemv in numpy's BLAS, which step1 needs; None: not found


class Product(ctypes.Structure):
    """_kernel.c's `product`: y (n,) = W (n, k) x, and the map's bias b (n,) or NULL; addresses as integers."""

    _fields_ = [(f, ctypes.c_void_p) for f in ("w", "b", "x", "y")] + [("n", ctypes.c_long), ("k", ctypes.c_long)]


MAX_PRODUCTS = 33  # as in _kernel.c: 16 GRU layers of two products, and the head


class StepPlan(ctypes.Structure):
    """_kernel.c's `step_plan`: everything step1 reads, addresses as integers (FastRNN._fused_plan fills it)."""

    _fields_ = [
        ("gemv", ctypes.c_void_p),
        ("kind", ctypes.c_int),  # 0 LSTM, 1 GRU, 2 tanh RNN
        ("layers", ctypes.c_int),
        ("hidden", ctypes.c_long),
        ("table", ctypes.c_void_p),
        ("vocab", ctypes.c_long),
        ("row_len", ctypes.c_long),
        ("h", ctypes.c_void_p),
        ("c", ctypes.c_void_p),
        ("p", Product * MAX_PRODUCTS),
    ]


def load() -> Kernel | None:
    """The kernel, or None (no compiler, a failed build or load, CHARRNN_KERNEL=0): never an exception."""
    if os.environ.get("CHARRNN_KERNEL", "1").strip() == "0" or unsupported() is not None:
        return None
    return _load_cached(*_found_compiler(os.environ.get("CC"), os.environ.get("PATH")))


@functools.cache
def _found_compiler(cc_env: str | None, path_env: str | None) -> tuple[tuple[str, ...] | None, str]:
    """compiler() and its _stamp, looked up once for each $CC and $PATH: training asks load() several times a
    step (the GRU's layers, each dropout), and the lookup (a PATH search and a stat, ~50 us) is the same each time."""
    cc = compiler()
    return (None if cc is None else tuple(cc)), _stamp(cc)


@functools.cache
def unsupported() -> str | None:
    """Why this machine gets no kernel (None: it may): the vector tanhf it needs is glibc's, on x86-64 with AVX2."""
    if platform.machine().lower() not in ("x86_64", "amd64") or not sys.platform.startswith("linux"):
        return f"the kernel needs x86-64 Linux (glibc's libmvec), not {platform.machine()} {sys.platform}"
    try:
        libc = os.confstr("CS_GNU_LIBC_VERSION") or ""  # "glibc 2.36"
    except (ValueError, OSError):
        libc = ""
    name, _, version = libc.partition(" ")
    if name != "glibc" or tuple(int(v) for v in version.split(".")[:2] if v.isdigit()) < (2, 35):
        return f"the kernel needs glibc >= 2.35 for libmvec's tanhf, not {libc or 'another C library'}"
    if "avx2" not in _cpu_flags().split():
        return "the kernel needs a CPU with AVX2"
    return None


def compiler() -> list[str] | None:
    """$CC (split as a shell would), else the first of cc, gcc, clang on PATH; None if there is none. A $CC
    that is not there means no compiler: it is what the user asked for."""
    if cc := os.environ.get("CC", "").strip():
        argv = shlex.split(cc)
        found = shutil.which(argv[0])
        return [found, *argv[1:]] if found else None
    for name in ("cc", "gcc", "clang"):
        if found := shutil.which(name):
            return [found]
    return None


def _stamp(cc: list[str] | None) -> str:
    """The compiler file's size and date: they change when it is upgraded, and so does the build's name."""
    try:
        st = os.stat(cc[0]) if cc else None
    except OSError:
        return ""
    return f"{st.st_size}:{st.st_mtime_ns}" if st else ""


@functools.cache
def _load_cached(cc: tuple[str, ...] | None, stamp: str) -> Kernel | None:
    """One build and load per process and compiler; FastRNN and Sampler ask on construction. The cache folder
    is read on the first call only: a loaded library stays valid wherever its file goes (and the tests, which
    give each test its own $CHARRNN_CACHE, compile once, not once a test)."""
    try:
        return build_and_load(None if cc is None else list(cc), cache_root() / "kernel", stamp)
    except Exception:  # noqa: BLE001 - the kernel is an optimisation: any failure means the numpy path
        return None


@functools.cache
def _cpu_flags() -> str:
    """The CPU's feature flags as /proc/cpuinfo lists them (x86 "flags", ARM "Features"), sorted; else the
    processor's name."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return " ".join(sorted(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return platform.processor()


def machine_id() -> str:
    """The architecture, OS, pointer size and CPU feature flags: code built with -march=native for one CPU
    may crash on another, so another CPU must mean another build."""
    return f"{platform.machine()}|{sys.platform}|{sys.maxsize > 2**32}|{_cpu_flags()}"


def build_and_load(cc: list[str] | None, folder: Path, stamp: str = "") -> Kernel | None:
    """Load the build for this source, compiler and machine from `folder`, compiling it first if it is not
    there or is not the file that was built (a `.sha256` beside it says which: a truncated library could
    crash the process that maps it, so a file is only loaded once its bytes check out). None if the build
    fails, or if a `.failed` file (holding the compiler's message) says it did before: delete it to try again."""
    if cc is None:
        return None
    key = hashlib.sha256(
        b"\0".join([SOURCE.read_bytes(), repr((cc, stamp, FLAGS, LIBS)).encode(), machine_id().encode()])
    ).hexdigest()[:20]
    path = folder / f"charrnn_kernel-{key}.so"
    digest, failed = path.with_suffix(".sha256"), path.with_suffix(".failed")
    if path.exists():
        try:
            intact = digest.read_text(encoding="utf-8").strip() == _sha256(path)
        except OSError:
            intact = False
        kernel = _open(path) if intact else None
        if kernel is not None:
            return kernel
    elif failed.exists():
        return None
    folder.mkdir(parents=True, exist_ok=True)
    argv = [*cc, *FLAGS, str(SOURCE), "-o", "{out}", *LIBS]
    try:
        replace_with(path, functools.partial(_compile, argv))
        replace_with(digest, lambda tmp: tmp.write_text(_sha256(path) + "\n", encoding="utf-8"))
        kernel = _open(path)
        error = f"{shlex.join(argv)}\nbuilt, but did not load or failed its self-test"
    except Exception as e:  # noqa: BLE001 - the numpy path
        kernel, error = None, str(e)
    if kernel is not None:
        return kernel
    path.unlink(missing_ok=True)
    try:
        replace_with(failed, lambda tmp: tmp.write_text(error + "\n", encoding="utf-8"))
    except Exception:  # noqa: BLE001 - a read-only cache: the attempt is simply repeated next time
        pass
    return None


def _compile(argv: list[str], out: Path) -> None:
    """Run the compiler with "{out}" in argv standing for the output path; its message on failure."""
    done = subprocess.run(
        [str(out) if a == "{out}" else a for a in argv],
        capture_output=True,
        text=True,
        timeout=COMPILE_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)}\n{done.stderr.strip()}")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _open(path: Path) -> Kernel | None:
    """ctypes-load a build and check it on a small case; None if it does not load or computes wrong."""
    try:
        lib = ctypes.CDLL(str(path))
    except OSError:
        return None
    p, i, lng, dbl = ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_double
    signatures = {
        "lstm_cell": ([p, p, p, p, p, lng, i, i], None),
        "gru_cell": ([p, p, p, p, p, lng, i, i], None),
        "rnn_cell": ([p, p, p, p, lng, i, i], None),
        "gru_train_fwd": ([p, p, p, p, p, p, i, i, i, p], None),
        "gru_train_bwd": ([p, p, p, p, p, p, p, i, i, i, p, p, p], None),
        "dropout_apply": ([p, p, lng, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_float, i], None),
        "draw_one": ([p, lng, dbl, dbl, p], lng),
        "step1": ([p, lng], i),
        "kernel_lanes": ([], i),
    }
    try:
        funcs = {}
        for name, (args, res) in signatures.items():
            f = getattr(lib, name)
            f.argtypes, f.restype = args, res
            funcs[name] = f
        lanes = funcs.pop("kernel_lanes")()
        kernel = Kernel(lib=lib, path=path, lanes=lanes, sgemv=None, **funcs)
    except AttributeError:  # a build of another source under this name
        return None
    if not (lanes > 1 and _self_test(kernel)):  # lanes 1, a scalar tanhf: slower than numpy
        return None
    sgemv = _blas_sgemv()
    return replace(kernel, sgemv=sgemv) if sgemv is not None and _step_test(kernel, sgemv) else kernel


_SGEMV_NAMES = ("scipy_cblas_sgemv64_", "scipy_cblas_sgemv", "cblas_sgemv64_", "cblas_sgemv")  # numpy's wheels first


def _blas_sgemv() -> int | None:
    """The address of cblas_sgemv in the BLAS numpy's matmul runs on, or None. threadpoolctl knows which
    libraries are the process's BLAS (numpy's wheels bundle OpenBLAS under a prefixed, 64-bit-integer name,
    scipy_cblas_sgemv64_; a distribution's numpy links the system's cblas_sgemv); numpy's own comes first."""
    try:
        from threadpoolctl import threadpool_info

        paths = [i["filepath"] for i in threadpool_info() if i.get("user_api") == "blas"]
    except Exception:  # noqa: BLE001 - no BLAS found means the numpy matmuls, not a failure
        return None
    numpy_dir = str(Path(np.__file__).parent)
    for path in sorted(paths, key=lambda p: not p.startswith(numpy_dir)):  # numpy.libs/ sits beside numpy/
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _SGEMV_NAMES:
            if hasattr(lib, name):
                return ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
    return None


def _self_test(k: Kernel) -> bool:
    """A few microseconds of checks against numpy, so a miscompiled or mislinked build is never used: tanh
    over a length that is no multiple of the vector width, the LSTM cell, and one draw."""
    x = np.linspace(-9.0, 9.0, 37, dtype=np.float32)  # (37,)
    a, h = x.copy(), np.zeros(37, np.float32)
    k.rnn_cell(a.ctypes.data, None, None, h.ctypes.data, 37, 1, 37)
    if not np.allclose(h, np.tanh(x.astype(np.float64)), rtol=0, atol=1e-6):
        return False
    g = np.linspace(-3.0, 3.0, 4 * 5, dtype=np.float32)  # (4H,) H = 5
    c = np.linspace(-1.0, 1.0, 5, dtype=np.float32)  # (H,)
    t = np.tanh(g.astype(np.float64))
    i, f, o, cand = 0.5 * t[:5] + 0.5, 0.5 * t[5:10] + 0.5, 0.5 * t[10:15] + 0.5, t[15:]
    want_c = f * c + i * cand
    want_h = o * np.tanh(want_c)
    h = np.zeros(5, np.float32)
    k.lstm_cell(g.ctypes.data, None, None, c.ctypes.data, h.ctypes.data, 5, 1, 5)
    if not (np.allclose(c, want_c, atol=1e-6) and np.allclose(h, want_h, atol=1e-6)):
        return False
    logits = np.array([0.0, 2.0, -1.0, 1.0], np.float32)  # (4,) probabilities .09, .64, .03, .24
    work = np.empty(4)
    cum = np.cumsum(np.exp(logits - 2.0))
    picks = [k.draw_one(logits.ctypes.data, 4, 1.0, u, work.ctypes.data) for u in (0.0, 0.5, 0.99)]
    if picks != [int(np.searchsorted(cum, u * cum[-1], side="right")) for u in (0.0, 0.5, 0.99)]:
        return False
    return _gru_train_test(k) and _dropout_test(k)


def _dropout_test(k: Kernel) -> bool:
    """Training's dropout (an odd length, float32 and bfloat16): about a quarter dropped at p 1/4, the rest
    scaled by 4/3 and rounded as torch rounds, the same mask from the same seed and another from another."""
    n, cut, scale = 1001, 1 << 30, np.float32(4 / 3)  # cut = p 2^32
    x = np.linspace(0.5, 1.5, n, dtype=np.float32)  # (n,)
    y, same, other = (np.empty(n, np.float32) for _ in range(3))
    for out, seed in ((y, 7), (same, 7), (other, 8)):
        k.dropout_apply(x.ctypes.data, out.ctypes.data, n, seed, cut, scale, 0)
    kept = y != 0
    if not (0.2 < 1 - kept.mean() < 0.3 and np.array_equal(y[kept], x[kept] * scale)):
        return False
    if not (np.array_equal(y, same) and not np.array_equal(kept, other != 0)):
        return False
    x_lp, y_lp = _to_bf16(x), np.empty(n, np.uint16)
    k.dropout_apply(x_lp.ctypes.data, y_lp.ctypes.data, n, 7, cut, scale, 1)
    return np.array_equal(y_lp, np.where(kept, _to_bf16(_from_bf16(x_lp) * scale), 0))


def _gru_train_test(k: Kernel) -> bool:
    """One GRU training step forward and backward (B 2, H 3; float32 and bfloat16 operands) against numpy's
    float64 formulas, so a miscompiled training kernel never trains a model."""
    H, rng = 3, np.random.default_rng(0)
    gh, gi = rng.standard_normal((2, 3 * H), np.float32), rng.standard_normal((2, 3 * H), np.float32)
    hp, dout, m = (rng.standard_normal((2, H), np.float32) for _ in range(3))
    for bf16, tol in ((0, 1e-5), (1, 1e-2)):  # bf16 results are rounded to 8 bits of mantissa
        to, back = (_to_bf16, _from_bf16) if bf16 else (np.ascontiguousarray, np.asarray)
        gh_lp, m_lp = to(gh), to(m)
        want_h, want_dgi, want_carry = _gru_step_reference(back(gh_lp), gi, hp, dout, back(m_lp))
        h, h_lp = np.empty((2, H), np.float32), to(np.zeros((2, H), np.float32))
        saved, work = np.empty(2 * 4 * H, np.float32), np.empty(4 * H, np.float32)
        k.gru_train_fwd(
            gh_lp.ctypes.data, gi.ctypes.data, hp.ctypes.data, h.ctypes.data, h_lp.ctypes.data,
            saved.ctypes.data, bf16, 2, H, work.ctypes.data,
        )  # fmt: skip
        carry, dgi, dgh = (
            np.zeros((2, H), np.float32),
            to(np.zeros((2, 3 * H), np.float32)),
            to(np.zeros((2, 3 * H), np.float32)),
        )
        d_bi, d_bh = np.zeros(3 * H, np.float32), np.zeros(3 * H, np.float32)
        k.gru_train_bwd(
            carry.ctypes.data, dout.ctypes.data, m_lp.ctypes.data, saved.ctypes.data, hp.ctypes.data,
            dgi.ctypes.data, dgh.ctypes.data, bf16, 2, H, work.ctypes.data, d_bi.ctypes.data, d_bh.ctypes.data,
        )  # fmt: skip
        close = [(h, want_h), (back(h_lp), want_h), (back(dgi), want_dgi), (carry, want_carry), (d_bi, want_dgi.sum(0))]
        if not all(np.allclose(got, want, rtol=tol, atol=tol) for got, want in close):
            return False
    return True


def _gru_step_reference(gh, gi, hp, dout, m):
    """torch's GRU step and its backward in float64: h (B, H), d gi (B, 3H), the carry dh * z (B, H)."""
    gh, gi, hp, dh = (np.asarray(a, np.float64) for a in (gh, gi, hp, np.asarray(dout) + np.asarray(m)))
    H = hp.shape[1]
    r, z = (1 / (1 + np.exp(-(gi[:, j * H : (j + 1) * H] + gh[:, j * H : (j + 1) * H]))) for j in (0, 1))
    n = np.tanh(gi[:, 2 * H :] + r * gh[:, 2 * H :])
    dn = dh * (1 - z) * (1 - n * n)
    dgi = np.concatenate([dn * gh[:, 2 * H :] * r * (1 - r), dh * (hp - n) * z * (1 - z), dn], axis=1)
    return n + z * (hp - n), dgi, dh * z


def _to_bf16(a: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits (uint16), rounded to nearest even as torch and the kernel round."""
    u = np.ascontiguousarray(a, np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def _from_bf16(a: np.ndarray) -> np.ndarray:
    return (a.astype(np.uint32) << 16).view(np.float32)


def _step_test(k: Kernel, sgemv: int) -> bool:
    """step1 through the BLAS found, on a one-layer tanh RNN (H 3, V 2) against numpy: a BLAS whose cblas_sgemv
    takes other arguments than _kernel.c declares is never used."""
    w = np.array([[0.5, -1.0, 0.25], [1.5, 0.0, -0.5], [0.0, 2.0, 1.0]], np.float32)  # (H, H)
    head = np.array([[1.0, -1.0, 0.5], [0.25, 0.5, -2.0]], np.float32)  # (V, H)
    head_b = np.array([0.125, -0.25], np.float32)  # (V,)
    table = np.array([[0.1, -0.2, 0.3], [-0.4, 0.5, 0.6]], np.float32)  # (V, H)
    h0 = np.array([0.3, -0.7, 0.9], np.float32)  # (H,)
    h, a, logits = h0.copy(), np.empty(3, np.float32), np.empty(2, np.float32)
    plan = StepPlan(gemv=sgemv, kind=2, layers=1, hidden=3, table=table.ctypes.data, vocab=2, row_len=3)
    plan.h = h.ctypes.data
    plan.p[0] = Product(w.ctypes.data, None, h.ctypes.data, a.ctypes.data, 3, 3)
    plan.p[1] = Product(head.ctypes.data, head_b.ctypes.data, h.ctypes.data, logits.ctypes.data, 2, 3)
    if k.step1(ctypes.addressof(plan), 1) != 0 or k.step1(ctypes.addressof(plan), 2) != -1:
        return False
    want_h = np.tanh(w.astype(np.float64) @ h0 + table[1])
    return np.allclose(h, want_h, atol=1e-6) and np.allclose(logits, head @ want_h + head_b, atol=1e-5)
