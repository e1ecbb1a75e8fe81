"""Tests for charrnn.kernel: the compiled cells and draw give the numpy path's logits and text; with no
compiler, a failing one or a damaged cached build the sampler falls back to numpy (or rebuilds), never fails;
importing the kernel imports no torch."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_sample import KINDS, VOCAB, make_model

from charrnn import kernel
from charrnn.config import SampleConfig
from charrnn.fastrnn import Sampler
from charrnn.fastrnn import generate as fast_generate
from charrnn.sample import fast_rnn

# Where there is a compiler, the kernel must build: a build that silently failed would pass every test below
# against numpy alone.
needs_kernel = pytest.mark.skipif(
    kernel.compiler() is None or kernel.unsupported() is not None,
    reason=f"no C compiler, or {kernel.unsupported()}",
)


@pytest.fixture(autouse=True)
def fresh_load(monkeypatch: pytest.MonkeyPatch):
    """Each test decides for itself whether a kernel is loaded: no process-wide result carried in or out."""
    monkeypatch.delenv("CHARRNN_KERNEL", raising=False)
    kernel._load_cached.cache_clear()
    yield
    kernel._load_cached.cache_clear()


def pair(model, monkeypatch: pytest.MonkeyPatch):
    """(numpy-only FastRNN, kernel FastRNN) of one model, both on the numpy backend."""
    monkeypatch.setenv("CHARRNN_KERNEL", "0")
    plain = fast_rnn(model, backend="numpy")
    monkeypatch.delenv("CHARRNN_KERNEL")
    fast = fast_rnn(model, backend="numpy")
    assert plain.kernel is None and fast.kernel is not None
    return plain, fast


@needs_kernel
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("batch, layers", [(1, 2), (3, 2), (1, 3), (3, 1)])
def test_kernel_logits_match_numpy_for_300_steps(kind: str, batch: int, layers: int, monkeypatch) -> None:
    plain, fast = pair(make_model(kind, layers=layers), monkeypatch)
    rng = np.random.default_rng(1)
    state = tuple(rng.standard_normal((layers, batch, 16)).astype(np.float32) for _ in plain.state())
    plain.reset(state)
    fast.reset(state)
    assert fast._plan is not None and plain._plan is None
    assert (fast._fused is not None) == (batch == 1)  # one row: the whole step is one call, through numpy's BLAS
    for _ in range(300):
        ids = rng.integers(0, len(VOCAB), batch)  # (B,)
        np.testing.assert_allclose(fast.step(ids), plain.step(ids), rtol=0, atol=1e-5)
    # An LSTM's cell state grows to ~30 in 300 steps, where fp32's spacing is 2e-6: the AVX2 build's 8-lane sums
    # ended 1.5e-5 (5 ulp) from numpy's there, so the state is compared relative to its size as well.
    for got, want in zip(fast.state(), plain.state(), strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-5)


@needs_kernel
def test_the_kernel_finds_numpys_blas_and_its_sgemv_is_numpys_matmul() -> None:
    """step1 calls the cblas_sgemv of the library numpy's matmul runs on; a product through it equals numpy's
    to rounding (the same kernels, reached without numpy's and Python's call overhead)."""
    k = kernel.load()
    assert k is not None and k.sgemv is not None
    rng = np.random.default_rng(3)
    w = rng.standard_normal((300, 70)).astype(np.float32)  # (N, K)
    x, y = rng.standard_normal(70).astype(np.float32), np.empty(300, np.float32)  # (K,), (N,)
    fn = ctypes.CFUNCTYPE(
        None,
        *[ctypes.c_int] * 2,
        *[ctypes.c_long] * 2,
        ctypes.c_float,
        ctypes.c_void_p,
        ctypes.c_long,
        ctypes.c_void_p,
        ctypes.c_long,
        ctypes.c_float,
        ctypes.c_void_p,
        ctypes.c_long,
    )(k.sgemv)
    fn(101, 111, 300, 70, 1.0, w.ctypes.data, 70, x.ctypes.data, 1, 0.0, y.ctypes.data, 1)
    np.testing.assert_allclose(y, (x[None, :] @ w.T)[0], rtol=0, atol=1e-5)


@needs_kernel
@pytest.mark.parametrize("kind", KINDS)
def test_without_a_blas_to_call_the_kernel_steps_layer_by_layer_and_gives_the_same_logits(kind, monkeypatch) -> None:
    monkeypatch.setattr(kernel, "_blas_sgemv", lambda: None)
    _, split = pair(make_model(kind, layers=3), monkeypatch)
    kernel._load_cached.cache_clear()
    monkeypatch.undo()
    _, fused = pair(make_model(kind, layers=3), monkeypatch)
    assert split._fused is None and split._plan is not None and fused._fused is not None
    rng = np.random.default_rng(4)
    for _ in range(100):
        ids = rng.integers(0, len(VOCAB), 1)  # (1,)
        np.testing.assert_allclose(fused.step(ids), split.step(ids), rtol=0, atol=1e-5)
    for got, want in zip(fused.state(), split.state(), strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


@needs_kernel
def test_an_avx2_build_runs_on_eight_lanes_and_matches_numpy(tmp_path, monkeypatch) -> None:
    """CHARRNN_KERNEL_MARCH=haswell (what a benchmark standing in for an AVX2-only CPU sets): the 8-lane tanh,
    which an AVX-512 machine would otherwise never build, gives the numpy path's logits too."""
    monkeypatch.setenv("CHARRNN_CACHE", str(tmp_path))
    monkeypatch.setattr(kernel, "FLAGS", [f.replace("-march=native", "-march=haswell") for f in kernel.FLAGS])
    plain, fast = pair(make_model("lstm"), monkeypatch)
    assert fast.kernel.lanes == 8
    rng = np.random.default_rng(2)
    for _ in range(100):
        ids = rng.integers(0, len(VOCAB), 1)  # (1,)
        np.testing.assert_allclose(fast.step(ids), plain.step(ids), rtol=0, atol=1e-5)


@needs_kernel
def test_kernel_step_refuses_ids_numpy_refuses(monkeypatch) -> None:
    """Layer 0 reads its table row by address at batch 1: an id outside the table must not read memory."""
    _, fast = pair(make_model("lstm"), monkeypatch)
    with pytest.raises(IndexError):
        fast.step(np.array([len(VOCAB)]))
    with pytest.raises(ValueError):
        fast.step(np.array([1, 2]))  # two ids for a one-row state


@needs_kernel
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("temp", [0.6, 1.0, 1.6])
def test_kernel_and_numpy_sample_the_same_text(kind: str, temp: float, monkeypatch) -> None:
    plain, fast = pair(make_model(kind), monkeypatch)
    cfg = SampleConfig(seed=5, length=400, temp=temp, prime="ab")
    monkeypatch.setenv("CHARRNN_KERNEL", "0")
    want = "".join(step[0] for step in fast_generate(plain, VOCAB, cfg))
    monkeypatch.delenv("CHARRNN_KERNEL")
    assert Sampler(cfg, len(VOCAB))._draw_one is not None
    got = "".join(step[0] for step in fast_generate(fast, VOCAB, cfg))
    assert got == want and len(set(got)) > 3


class FixedDraw:
    """Stands in for the numpy Generator in the one-row draw: the uniform pinned."""

    def __init__(self, u: float) -> None:
        self.u = u

    def random(self) -> float:
        return self.u


@needs_kernel
def test_the_compiled_draw_is_numpys_draw_for_draw() -> None:
    """Random logits, a fresh array each time and the same buffer reused, the ends of [0, 1), and the
    degenerate rows (an infinite or NaN logit) where numpy returns V."""
    rng = np.random.default_rng(0)
    compiled, plain = (Sampler(SampleConfig(temp=0.8, seed=3), vocab_size=70) for _ in range(2))
    plain._draw_one = None
    assert compiled._draw_one is not None
    buffer = np.empty((1, 70), np.float32)
    for n in range(3000):
        logits = (rng.standard_normal((1, 70)) * 4).astype(np.float32)  # (1, V)
        if n % 2:
            buffer[:] = logits
            logits = buffer
        assert compiled(logits).tolist() == plain(logits).tolist()
    weird = [[-1000.0, 5.0, 4.0, 1.0], [0.0, np.inf, 1.0, 2.0], [0.0, np.nan, 1.0, 2.0], [-np.inf] * 4]
    for row in weird:
        for u in (0.0, 0.3, np.nextafter(1.0, 0.0)):
            compiled.rng, plain.rng = FixedDraw(u), FixedDraw(u)
            logits = np.array([row], np.float32)  # (1, 4)
            with np.errstate(invalid="ignore"):
                assert compiled(logits).tolist() == plain(logits).tolist(), (row, u)


def test_kernel_off_switch(monkeypatch) -> None:
    with monkeypatch.context() as m:
        m.setattr(kernel, "unsupported", lambda: "a machine without libmvec")
        assert kernel.load() is None
    monkeypatch.setenv("CHARRNN_KERNEL", "0")
    assert kernel.load() is None
    rnn = fast_rnn(make_model("gru"), backend="numpy")
    assert rnn.kernel is None and rnn._plan is None
    assert Sampler(SampleConfig(), len(VOCAB))._draw_one is None


@needs_kernel
def test_no_compiler_falls_back_and_prints_the_same_text(tiny_run, tmp_path, monkeypatch, run_cli) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run.run_dir, run)
    args = ("sample", "-c", run, "--seed", 7, "--length", 200, "--temp", 0.9)
    code, with_kernel, err = run_cli(*args)
    assert code == 0, err
    assert kernel.load() is not None
    monkeypatch.setenv("CC", "/nonexistent/cc")
    monkeypatch.setenv("CHARRNN_CACHE", str(tmp_path / "empty-cache"))
    kernel._load_cached.cache_clear()
    assert kernel.compiler() is None and kernel.load() is None
    code, without, err = run_cli(*args)
    assert code == 0, err
    assert without == with_kernel and len(without) > 200


def fake_compiler(tmp_path: Path, body: str) -> list[str]:
    """A shell script standing in for cc; each call appends a line to calls.log."""
    script = tmp_path / "fakecc"
    script.write_text(f"#!/bin/sh\necho called >> {tmp_path / 'calls.log'}\n{body}\n")
    script.chmod(0o755)
    return [str(script)]


@pytest.mark.skipif(sys.platform == "win32", reason="a shell script as the compiler")
def test_a_failing_compiler_means_numpy_and_is_tried_once(tmp_path) -> None:
    cc = fake_compiler(tmp_path, "echo 'error: no such thing' >&2; exit 1")
    folder = tmp_path / "kernel"
    assert kernel.build_and_load(cc, folder) is None
    calls = (tmp_path / "calls.log").read_text().count("called")
    assert calls == 1
    (failed,) = folder.glob("*.failed")
    assert "no such thing" in failed.read_text()
    assert kernel.build_and_load(cc, folder) is None  # on record: not tried again
    assert (tmp_path / "calls.log").read_text().count("called") == calls
    assert not list(folder.glob("*.so")) and not list(folder.glob(".*tmp*"))


@pytest.mark.skipif(sys.platform == "win32", reason="a shell script as the compiler")
def test_a_compiler_that_writes_garbage_means_numpy(tmp_path) -> None:
    """It "succeeds" but its output is no library: refused at load, never mapped as code."""
    cc = fake_compiler(tmp_path, 'while [ "$1" != -o ]; do shift; done; echo garbage > "$2"')
    assert kernel.build_and_load(cc, tmp_path / "kernel") is None


@needs_kernel
@pytest.mark.parametrize("damage", ["garbage", "truncated", "no digest", "another build"])
def test_a_damaged_cached_build_is_rebuilt(tmp_path, damage: str) -> None:
    folder = tmp_path / "kernel"
    first = kernel.build_and_load(kernel.compiler(), folder)
    assert first is not None
    lib = first.path
    good = lib.read_bytes()
    if damage == "no digest":
        lib.with_suffix(".sha256").unlink()
    else:  # a new file in its place: this process has the old one mapped, and must not see it change
        bad = tmp_path / "bad.so"
        if damage == "another build":  # loads and works, but is not the file the digest names: not used
            kernel._compile(
                [*kernel.compiler(), *kernel.FLAGS, "-DCHARRNN_OTHER", str(kernel.SOURCE), "-o", "{out}"], bad
            )
            assert bad.read_bytes() != good
        else:  # truncated: mapping it could crash the process, so it must never be loaded
            bad.write_bytes(b"\x7fELF" + b"\0" * 100 if damage == "garbage" else good[: len(good) // 2])
        os.replace(bad, lib)
    again = kernel.build_and_load(kernel.compiler(), folder)
    assert again is not None and again.path == lib and lib.read_bytes() == good
    logits = np.array([0.0, 3.0, 1.0], np.float32)  # (3,)
    assert again.draw_one(logits.ctypes.data, 3, 1.0, 0.5, np.empty(3).ctypes.data) == 1


def test_importing_the_kernel_imports_no_torch(tmp_path) -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import charrnn.kernel, charrnn.fastrnn\n"
        "k = charrnn.kernel.load()\n"
        "print('loaded' if k else 'none')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "CHARRNN_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ("none" if kernel.compiler() is None or kernel.unsupported() else "loaded")
