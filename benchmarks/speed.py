"""Speed and memory benchmark: matmul roofline, training and sampling throughput, time to first sampled
character, and preparing a 100 MB corpus — all on this machine, in one run.

    python benchmarks/speed.py [--quick]

Figures are medians of repeated timings. The last line is `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import torch

from charrnn import checkpoint, devices, fastrnn, kernel
from charrnn.config import ModelConfig, SampleConfig, to_dict
from charrnn.devices import describe_cpu, pick_dtype
from charrnn.loop import Trainer
from charrnn.model import CharRNN, count_parameters
from charrnn.sample import fast_rnn, generate, naive_generate
from charrnn.vocab import Vocab

VOCAB = Vocab("".join(sorted(set("\n !&',-.:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz3$"))))


def median_time(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def matmul_gflops(m: int, k: int, n: int, dtype: torch.dtype, repeats: int) -> float:
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    reps = max(3, int(2e9 / (2 * m * k * n)))  # at least 2 GFLOP per timing
    t = median_time(lambda: [a @ b for _ in range(reps)], repeats)
    return 2 * m * k * n * reps / t / 1e9


def roofline(repeats: int) -> dict:
    shapes = {
        "4096x4096x4096": (4096, 4096, 4096),
        "lstm512 input proj (8192x512x2048)": (8192, 512, 2048),
        "lstm512 recurrent step (64x512x2048)": (64, 512, 2048),
    }
    out = {}
    for name, (m, k, n) in shapes.items():
        out[name] = {
            p: round(matmul_gflops(m, k, n, dt, repeats), 1)
            for p, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16))
        }
        print(
            f"  matmul {name:40s} fp32 {out[name]['fp32']:8.1f} GFLOP/s   bf16 {out[name]['bf16']:8.1f} GFLOP/s",
            flush=True,
        )
    return out


def write_corpus(path: Path, n_bytes: int, seed: int = 0) -> None:
    """Pseudo-text from a fixed word list, written in 1 MB blocks (memory stays flat)."""
    rng = np.random.default_rng(seed)
    words = np.array(
        "the and of to my that in you is not with it for be his your this but he have as thou so "
        "him will me what by all are her do no shall if lord good now thee love more king then sir "
        "well come let our at how say night death heart time eyes day make speak upon ROMEO: JULIET:".split()
    )
    with open(path, "w", encoding="utf-8") as f:
        written = 0
        while written < n_bytes:
            block = " ".join(rng.choice(words, 200_000)).replace(": ", ":\n")
            block = block[: n_bytes - written]
            f.write(block)
            written += len(block)


def train_throughput(corpus: Path, cell: str, hidden: int, precision: str, repeats: int, tmp: Path) -> dict:
    flags = {"seq_len": 128, "batch_size": 64, "device": "cpu", "precision": precision, "steps": 10**9}
    trainer = Trainer.from_flags(
        corpus, {"model": cell, "hidden": hidden, "layers": 2}, flags, tmp / f"run-{cell}{hidden}-{precision}"
    )

    def step() -> None:
        trainer.train_step(1e-3)

    t = median_time(step, repeats, warmup=3)
    chars = 64 * 128 / t
    n_params = count_parameters(trainer.model, non_embedding=True)
    return {
        "chars_per_s": round(chars),
        "tflops": round(6 * n_params * chars / 1e12, 3),
        "params": n_params,
        "dtype": str(trainer.run.dtype).removeprefix("torch."),
    }


def alternating(run, repeats: int) -> tuple[float, float]:
    """Median seconds of run(False) and run(True), called alternately 2 * (repeats + 1) times in one process
    (the first call of each is warm-up): what the machine's drift does to one side it does to the other.
    run(on) makes the switch and returns the seconds of what it timed."""
    times: dict[bool, list[float]] = {False: [], True: []}
    for i in range(2 * (repeats + 1)):
        on = i % 2 == 1
        t = run(on)
        if i >= 2:
            times[on].append(t)
    return statistics.median(times[False]), statistics.median(times[True])


def gru_training(result: dict, repeats: int, tmp: Path) -> None:
    """A GRU training step through torch's nn.GRU and through charrnn.grutrain's kernel, alternating in one
    trainer (the switch is CHARRNN_KERNEL, read at every forward), at the automatic shape's batch sizes."""
    print("2b. GRU training step: nn.GRU against the kernel (window 128)", flush=True)
    corpus = tmp / "gru.txt"
    write_corpus(corpus, 2_000_000)
    result["gru_train"] = {}
    for hidden, batch in ((256, 16), (256, 32), (512, 16)):
        for precision in ("auto", "fp32"):
            flags = {"seq_len": 128, "batch_size": batch, "device": "cpu", "precision": precision, "steps": 10**9}
            name = f"gru2x{hidden}-b{batch}-{precision}"
            trainer = Trainer.from_flags(corpus, {"model": "gru", "hidden": hidden, "layers": 2}, flags, tmp / name)

            def step(on: bool, trainer=trainer) -> float:
                with kernel_switch(on):
                    t0 = time.perf_counter()
                    trainer.train_step(1e-3)
                    return time.perf_counter() - t0

            plain, fast = (batch * 128 / t for t in alternating(step, repeats))
            r = {
                "nn_gru_chars_per_s": round(plain),
                "kernel_chars_per_s": round(fast),
                "speedup": round(fast / plain, 2),
            }
            result["gru_train"][name] = r
            print(
                f"  gru 2x{hidden} batch {batch} {precision:4s} ({str(trainer.run.dtype).removeprefix('torch.'):8s}) "
                f"nn.GRU {plain:>7,.0f} chars/s, kernel {fast:>7,.0f} chars/s: {fast / plain:.2f}x",
                flush=True,
            )


def freed_memory(result: dict, repeats: int, tmp: Path) -> None:
    """A training step with glibc keeping freed memory (devices.keep_freed_memory, which every CPU run now
    calls) against glibc giving it back (its initial thresholds, 128 KiB, held fixed, and malloc_trim after
    each switch), alternating in one trainer; the minor page faults of the timed steps say why."""
    import ctypes
    import resource

    print("2c. training step: freed memory kept against given back (window 128, batch 16)", flush=True)
    try:
        libc = ctypes.CDLL(None)
        mallopt, trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):
        print("  skipped: not glibc", flush=True)
        return
    corpus = tmp / "kept.txt"
    write_corpus(corpus, 2_000_000)
    result["freed_memory"] = {}
    for cell, hidden, precision in (
        ("gru", 512, "auto"),
        ("gru", 256, "auto"),
        ("lstm", 512, "auto"),
        ("gru", 512, "fp32"),
    ):
        flags = {"seq_len": 128, "batch_size": 16, "device": "cpu", "precision": precision, "steps": 10**9}
        name = f"{cell}2x{hidden}-b16-{precision}"
        trainer = Trainer.from_flags(corpus, {"model": cell, "hidden": hidden, "layers": 2}, flags, tmp / name)
        faults: dict[bool, list[int]] = {False: [], True: []}

        def step(keep: bool, trainer=trainer, faults=faults) -> float:
            if keep:
                devices.keep_freed_memory()
            else:  # glibc's initial thresholds, held fixed
                mallopt(devices._M_MMAP_THRESHOLD, 128 << 10)
                mallopt(devices._M_TRIM_THRESHOLD, 128 << 10)
            trim(0)
            trainer.train_step(1e-3)  # the first step after a switch settles the heap
            f0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
            trainer.train_step(1e-3)
            t = time.perf_counter() - t0
            faults[keep].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
            return t

        back, kept = (t * 1e3 for t in alternating(step, repeats))
        r = {
            "given_back_ms": round(back, 1),
            "kept_ms": round(kept, 1),
            "speedup": round(back / kept, 2),
            "given_back_faults": round(statistics.mean(faults[False][1:])),  # the timed steps, warm-up left out
            "kept_faults": round(statistics.mean(faults[True][1:])),
        }
        result["freed_memory"][name] = r
        print(
            f"  {name:18s} given back {back:6.1f} ms ({r['given_back_faults']:>6,} page faults), "
            f"kept {kept:6.1f} ms ({r['kept_faults']:>6,}): {back / kept:.2f}x",
            flush=True,
        )
    devices.keep_freed_memory()  # as every CPU run has it


def dropout_speed(result: dict, repeats: int, tmp: Path) -> None:
    """Dropout forward and backward on a batch-16 window of 512 units: torch's F.dropout against charrnn's
    (the kernel's counter-based masks, regenerated for the gradient), alternating."""
    import torch.nn.functional as F

    from charrnn import dropout as dropout_mod

    print("2d. dropout forward and backward, (16, 128, 512), p 0.2", flush=True)
    result["dropout"] = {}
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(16, 128, 512).to(dtype).requires_grad_(True)
        g = torch.randn(16, 128, 512).to(dtype)

        def both_ways(ours: bool, x=x, g=g) -> float:
            t0 = time.perf_counter()
            (dropout_mod.dropout if ours else F.dropout)(x, 0.2).backward(g)
            return time.perf_counter() - t0

        torch_ms, ours_ms = (t * 1e3 for t in alternating(both_ways, repeats))
        key = str(dtype).removeprefix("torch.")
        result["dropout"][key] = {"f_dropout_ms": round(torch_ms, 2), "charrnn_ms": round(ours_ms, 2)}
        print(
            f"  {key:8s} F.dropout {torch_ms:6.2f} ms, charrnn {ours_ms:6.2f} ms: {torch_ms / ours_ms:.1f}x", flush=True
        )
    corpus = tmp / "dropout.txt"
    write_corpus(corpus, 2_000_000)
    kernel_dtypes = dropout_mod._DTYPES  # what the kernel takes; put back after each timing
    for cell in ("gru", "lstm"):  # a whole training step, dropout 0.2, with each dropout in one trainer
        flags = {"seq_len": 128, "batch_size": 16, "device": "cpu", "steps": 10**9}
        model = {"model": cell, "hidden": 512, "layers": 2, "dropout": 0.2}
        trainer = Trainer.from_flags(corpus, model, flags, tmp / f"dropout-{cell}")

        def step(ours: bool, trainer=trainer) -> float:
            dropout_mod._DTYPES = kernel_dtypes if ours else ()  # (): F.dropout
            t0 = time.perf_counter()
            trainer.train_step(1e-3)
            return time.perf_counter() - t0

        before, after = (t * 1e3 for t in alternating(step, repeats))
        dropout_mod._DTYPES = kernel_dtypes
        result["dropout"][f"{cell}2x512-b16-step"] = {"f_dropout_ms": round(before, 1), "charrnn_ms": round(after, 1)}
        print(
            f"  {cell} 2x512 batch 16 training step ({str(trainer.run.dtype).removeprefix('torch.')}): "
            f"F.dropout {before:6.1f} ms, charrnn {after:6.1f} ms: {before / after:.2f}x",
            flush=True,
        )


@contextlib.contextmanager
def kernel_switch(on: bool):
    """CHARRNN_KERNEL set for the duration (FastRNN and Sampler read it when they are built), then restored."""
    before = os.environ.get("CHARRNN_KERNEL")
    os.environ["CHARRNN_KERNEL"] = "1" if on else "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("CHARRNN_KERNEL", None)
        else:
            os.environ["CHARRNN_KERNEL"] = before


def sample_rate(model: CharRNN, num: int, length: int, repeats: int, naive: bool = False) -> float:
    """chars/s of `generate` (or of the naive nn.LSTM loop), with the compiled kernel where there is one."""
    cfg = SampleConfig(length=length, num=num, seed=0)
    gen = naive_generate if naive else generate
    with kernel_switch(True):
        t = median_time(lambda: sum(1 for _ in gen(model, VOCAB, cfg)), repeats)
    return num * length / t


def matvec_products(model: CharRNN, steps: int = 2000):
    """The sampler's bound at batch 1: a function making `steps` steps' matrix-vector products alone (every
    weight read once a step), nothing around them, on the same arrays the sampler uses."""
    rnn = fast_rnn(model, backend="numpy")
    rnn.reset_zero(1)
    maps = [(w, rnn.h[:, lo:hi], np.empty((1, len(w)), np.float32)) for w, _, lo, hi in rnn.maps]

    def products() -> None:
        for _ in range(steps):
            for w, x, out in maps:
                np.matmul(x, w.T, out=out)  # (1, N)

    return products


def share_of_bound(model: CharRNN, repeats: int, length: int = 2000) -> dict[str, float]:
    """chars/s at batch 1 of the bound (the products alone), of the sampler with its compiled kernel, and
    of the sampler on numpy alone (CHARRNN_KERNEL=0), timed in turn, `repeats` rounds of each; medians,
    and each sampler's share of the bound as the median of its rounds' ratios. On a 2-core VM a second's
    load or a frequency change moved one back-to-back measurement by 10-20%; in turn, it moves all three.

    The sampler is the loop `charrnn sample` runs (warm on the prime, then draw and step), on a FastRNN
    built once: building one (6 ms for 2x512) is part of the start-up, which first_char_seconds times."""
    cfg = SampleConfig(length=length, num=1, seed=0)

    def sampler(use_kernel: bool):
        with kernel_switch(use_kernel):
            rnn = fast_rnn(model)

        def run() -> None:
            with kernel_switch(use_kernel):  # generate builds its Sampler, which reads the switch too
                sum(1 for _ in fastrnn.generate(rnn, VOCAB, cfg))

        return run

    runs = {"bound": matvec_products(model, length), "kernel": sampler(True), "numpy": sampler(False)}
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats + 1):
        for name, fn in runs.items():
            t = time.perf_counter()
            fn()
            rates[name].append(length / (time.perf_counter() - t))
    rates = {name: r[1:] for name, r in rates.items()}  # the first round warms caches and the kernel's plan
    out = {name: statistics.median(r) for name, r in rates.items()}
    for name in ("kernel", "numpy"):
        out[f"{name}_of_bound"] = statistics.median(x / b for x, b in zip(rates[name], rates["bound"]))
    return out


def smaller_weights(model: CharRNN, repeats: int) -> dict:
    """The same matrix-vector products with the weights in fp16 and int8, as numpy would run them: smaller
    weights only pay where a kernel reads them at full speed, and numpy has BLAS for fp32/fp64 alone."""
    rnn = fast_rnn(model, backend="numpy")
    out = {}
    for dtype, steps in (("float32", 500), ("float16", 20), ("int8", 50)):
        maps = [(w.astype(dtype), np.ones((1, w.shape[1]), dtype)) for w, _, _, _ in rnn.maps]

        def products(maps=maps, steps=steps) -> None:
            for _ in range(steps):
                for w, x in maps:
                    np.matmul(x, w.T)

        out[dtype] = round(steps / median_time(products, repeats))
    return out


def first_char_seconds(ckpt: str, repeats: int, env: dict | None = None) -> float:
    """Launch to the first sampled character of `charrnn sample`, measured from outside the process."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "charrnn", "sample", "--checkpoint", ckpt, "--length", "200", "--prime", "ROMEO:"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        proc.stdout.read(len("ROMEO:") + 1)  # the echoed prime, then the first sampled character
        times.append(time.perf_counter() - t)
        proc.wait()
    return statistics.median(times)


def import_torch_seconds(repeats: int) -> float:
    """`python -c "import torch"` from launch to exit: what a sampler that imports torch pays first."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import torch"], check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


# Peak memory is VmHWM of the child's own address space: ru_maxrss would report this (large) parent's
# high-water mark, which a spawned child inherits on Linux.
HWM = "int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) / 1024"

PREP = textwrap.dedent("""
    import json, sys, time
    t = time.perf_counter()
    from charrnn import data
    corpus = data.read_corpus(sys.argv[1])
    ids_sum = int(corpus.ids[:: 4096].astype('int64').sum())  # touch the ids
    print(json.dumps({"seconds": time.perf_counter() - t, "peak_rss_mb": HWM,
                      "vocab": len(corpus.vocab), "chars": corpus.info.chars, "dtype": str(corpus.ids.dtype)}))
""")

TRAIN_RSS = textwrap.dedent("""
    import json, sys, time
    import torch
    torch.set_num_threads(2)
    from charrnn.loop import Trainer
    t = time.perf_counter()
    flags = {"steps": 20, "eval_every": 10**6, "val_frac": 0.001, "batch_size": 16}
    trainer = Trainer.from_flags(sys.argv[1], {"hidden": 256, "layers": 2}, flags, sys.argv[2])
    ready = time.perf_counter() - t
    trainer.fit()
    print(json.dumps({"start_seconds": ready, "peak_rss_mb": HWM}))
""")


EVAL_RSS = textwrap.dedent("""
    import json, sys, time
    import torch
    torch.set_num_threads(2)
    from charrnn.evaluate import evaluate_checkpoint
    t = time.perf_counter()
    report = evaluate_checkpoint(sys.argv[2], sys.argv[1], "cpu")
    print(json.dumps({"seconds": time.perf_counter() - t, "chars": report["chars"], "peak_rss_mb": HWM}))
""")


def eval_memory(tmp: Path, mb: int) -> dict:
    """`charrnn eval FILE` on a large file with a tiny model: the ids go to disk and are read a window at a
    time, so peak memory should not grow with the file."""
    path = tmp / f"eval{mb}.txt"
    write_corpus(path, mb * 1_000_000, seed=1)
    torch.manual_seed(0)
    with open(path, encoding="utf-8") as f:
        vocab = Vocab.from_text(f.read(1_000_000))
    model = CharRNN(ModelConfig(vocab_size=len(vocab), layers=1, hidden=16, embed=8))
    ckpt = tmp / "tiny16.pt"
    checkpoint.save({"model": model.state_dict(), "model_config": to_dict(model.cfg), "vocab": vocab.chars}, ckpt)
    r = run_json(EVAL_RSS, str(path), str(ckpt), env=dict(os.environ))
    print(
        f"  eval of a {mb} MB file ({r['chars']:,} chars scored) in {r['seconds']:.0f} s: peak RSS "
        f"{r['peak_rss_mb']:.0f} MB",
        flush=True,
    )
    path.unlink()
    return {"mb": mb, "seconds": round(r["seconds"], 1), "peak_rss_mb": round(r["peak_rss_mb"])}


def run_json(code: str, *args: str, env: dict) -> dict:
    code = code.replace("HWM", HWM)
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def corpus_prep(tmp: Path, mb: int) -> dict:
    path = tmp / "big.txt"
    t = time.perf_counter()
    write_corpus(path, mb * 1_000_000)
    print(f"  wrote a {mb} MB corpus in {time.perf_counter() - t:.1f} s", flush=True)
    env = {**os.environ, "CHARRNN_CACHE": str(tmp / "cache")}
    cold = run_json(PREP, str(path), env=env)
    warm = [run_json(PREP, str(path), env=env) for _ in range(3)]
    training = run_json(TRAIN_RSS, str(path), str(tmp / "bigrun"), env=env)
    result = {
        "mb": mb,
        "prepare_seconds": round(cold["seconds"], 2),
        "prepare_peak_rss_mb": round(cold["peak_rss_mb"]),
        "cache_hit_seconds": round(statistics.median(w["seconds"] for w in warm), 3),
        "train_start_seconds_cache_hit": round(training["start_seconds"], 3),
        "train_peak_rss_mb": round(training["peak_rss_mb"]),
        "vocab": cold["vocab"],
        "dtype": cold["dtype"],
    }
    print(
        f"  prepare {result['prepare_seconds']} s (peak RSS {result['prepare_peak_rss_mb']} MB); cache hit "
        f"{result['cache_hit_seconds']} s; Trainer ready {result['train_start_seconds_cache_hit']} s after "
        f"its call on a cache hit (torch already imported); training peak RSS {result['train_peak_rss_mb']} MB",
        flush=True,
    )
    return result


def sampling(result: dict, repeats: int, tmp: Path, quick: bool) -> None:
    print("3. sampling throughput", flush=True)
    result["sample"] = {}
    compiled = kernel.load()  # built here if need be, so that no timing below includes the compile
    result["sample"]["kernel_lanes"] = compiled.lanes if compiled else None
    what = f"{compiled.lanes}-lane tanhf" if compiled else "none (no compiler, or CHARRNN_KERNEL=0)"
    print(f"  compiled gate kernel: {what}", flush=True)
    for hidden in (512, 256):
        torch.manual_seed(0)
        model = CharRNN(ModelConfig(vocab_size=len(VOCAB), hidden=hidden, layers=2, embed=128)).eval()
        rates = share_of_bound(model, repeats)
        bound, one, plain = rates["bound"], rates["kernel"], rates["numpy"]
        result["sample"][f"lstm2x{hidden}/matvec_bound"] = round(bound)
        result["sample"][f"lstm2x{hidden}/num1"] = round(one)
        print(f"  lstm 2x{hidden} --num  1: {one:>9,.0f} chars/s", flush=True)
        rate = sample_rate(model, 32, 500, repeats)
        result["sample"][f"lstm2x{hidden}/num32"] = round(rate)
        print(f"  lstm 2x{hidden} --num 32: {rate:>9,.0f} chars/s", flush=True)
        result["sample"][f"lstm2x{hidden}/num1_numpy"] = round(plain)
        result["sample"][f"lstm2x{hidden}/num1_numpy_of_bound"] = round(rates["numpy_of_bound"], 3)
        if hidden == 512:
            small = smaller_weights(model, repeats)
            result["sample"]["lstm2x512/matvec_steps_per_s_by_dtype"] = small
            print(f"  lstm 2x512 matrix-vector steps/s by weight type (numpy): {small}", flush=True)
        result["sample"][f"lstm2x{hidden}/num1_of_bound"] = round(rates["kernel_of_bound"], 3)
        print(
            f"  lstm 2x{hidden} bound at batch 1 (its matrix-vector products alone): {bound:,.0f} chars/s; "
            f"the sampler makes {rates['kernel_of_bound']:.0%} of it ({one:,.0f} chars/s; numpy gates without "
            f"the kernel {plain:,.0f} chars/s = {rates['numpy_of_bound']:.0%}; the three timed in turn)",
            flush=True,
        )
        if hidden == 512:
            naive = sample_rate(model, 1, 200, 3, naive=True)
            result["sample"]["lstm2x512/naive_nn_lstm_loop"] = round(naive)
            print(
                f"  lstm 2x512 naive nn.LSTM step loop: {naive:,.0f} chars/s "
                f"(charrnn is {result['sample']['lstm2x512/num1'] / naive:.1f}x faster)",
                flush=True,
            )
            ckpt = tmp / "lstm512.pt"  # saved with its torch-free weights file, as the trainer saves
            checkpoint.save(
                {"model": model.state_dict(), "model_config": to_dict(model.cfg), "vocab": VOCAB.chars}, ckpt
            )
    n = 3 if quick else 5
    start = {  # the kernel already built in $CHARRNN_CACHE, as on every launch but a machine's first
        "import_torch": import_torch_seconds(n),
        "bundled": first_char_seconds("bundled", n),
        "lstm2x512": first_char_seconds(str(tmp / "lstm512.pt"), n),
        # the first launch on a machine, which compiles the kernel (once: later launches load the build)
        "bundled_compiling_kernel": first_char_seconds(
            "bundled", 1, env={**os.environ, "CHARRNN_CACHE": str(tmp / "fresh-cache")}
        ),
    }
    result["start_seconds"] = {k: round(v, 3) for k, v in start.items()}
    print(
        f"  first character of `charrnn sample` after launch (median of {n}): bundled model "
        f"{start['bundled']:.3f} s, 2x512 LSTM {start['lstm2x512']:.3f} s; `python -c 'import torch'` alone "
        f"{start['import_torch']:.3f} s; the very first launch, which compiles the kernel: "
        f"{start['bundled_compiling_kernel']:.3f} s",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats and a 10 MB corpus (a smoke test)")
    ap.add_argument("--eval-mb", type=int, default=None, help="size of the file for the eval memory line (100)")
    ap.add_argument("--only-eval-memory", action="store_true", help="measure only the eval memory line")
    ap.add_argument("--only-sample", action="store_true", help="measure only sampling (section 3)")
    ap.add_argument("--only-gru-train", action="store_true", help="measure only the GRU training step (2b)")
    ap.add_argument(
        "--only-freed-memory", action="store_true", help="measure only freed memory kept and dropout (2c, 2d)"
    )
    args = ap.parse_args()
    repeats = 3 if args.quick else 7
    tmp = Path(tempfile.mkdtemp(prefix="charrnn-speed-"))
    os.environ.setdefault("CHARRNN_CACHE", str(tmp / "cache"))
    result: dict = {
        "torch": torch.__version__,
        "cpu": describe_cpu(),
        "threads": torch.get_num_threads(),
        "default_dtype_cpu": str(pick_dtype("auto", torch.device("cpu"))).removeprefix("torch."),
    }
    print(
        f"charrnn speed benchmark: {result['cpu']}; default CPU precision {result['default_dtype_cpu']}",
        flush=True,
    )

    eval_mb = args.eval_mb or (10 if args.quick else 100)
    if args.only_eval_memory:
        print("5. eval memory", flush=True)
        result["eval_memory"] = eval_memory(tmp, eval_mb)
        print("RESULT " + json.dumps(result))
        return
    if args.only_sample:
        sampling(result, repeats, tmp, args.quick)
        print("RESULT " + json.dumps(result))
        return
    if args.only_gru_train:
        gru_training(result, repeats, tmp)
        print("RESULT " + json.dumps(result))
        return
    if args.only_freed_memory:
        freed_memory(result, repeats, tmp)
        dropout_speed(result, repeats, tmp)
        print("RESULT " + json.dumps(result))
        return
    print("1. matmul roofline", flush=True)
    result["roofline_gflops"] = roofline(repeats)
    # The roofline: the best matmul rate torch reaches here in each precision, whatever the shape.
    peak = {p: max(r[p] for r in result["roofline_gflops"].values()) for p in ("fp32", "bf16")}
    result["roofline_peak_gflops"] = peak

    print("2. training throughput (window 128, batch 64)", flush=True)
    small = tmp / "train.txt"
    write_corpus(small, 2_000_000)
    result["train"] = {}
    for cell, hidden in (("lstm", 256), ("lstm", 512), ("gru", 512)):
        for precision in ("fp32", "auto"):
            r = train_throughput(small, cell, hidden, precision, repeats, tmp)
            r["fraction_of_fp32_roofline"] = round(r["tflops"] * 1000 / peak["fp32"], 3)
            r["fraction_of_own_dtype_roofline"] = round(
                r["tflops"] * 1000 / peak["fp32" if r["dtype"] == "float32" else "bf16"], 3
            )
            result["train"][f"{cell}2x{hidden}/{precision}"] = r
            print(
                f"  {cell} 2x{hidden} {precision:4s} ({r['dtype']:8s}) {r['chars_per_s']:>9,} chars/s  "
                f"{r['tflops'] * 1000:7.1f} GFLOP/s = {r['fraction_of_fp32_roofline']:.0%} of the fp32 matmul rate",
                flush=True,
            )
        fp32, auto = (result["train"][f"{cell}2x{hidden}/{p}"]["chars_per_s"] for p in ("fp32", "auto"))
        result["train"][f"{cell}2x{hidden}/speedup"] = round(auto / fp32, 2)
        print(f"  {cell} 2x{hidden} default precision / fp32 = {auto / fp32:.2f}x", flush=True)
    gru_training(result, repeats, tmp)
    freed_memory(result, repeats, tmp)
    dropout_speed(result, repeats, tmp)

    sampling(result, repeats, tmp, args.quick)
    print("4. corpus preparation", flush=True)
    result["corpus"] = corpus_prep(tmp, 10 if args.quick else 100)
    print("5. eval memory", flush=True)
    result["eval_memory"] = eval_memory(tmp, eval_mb)
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
