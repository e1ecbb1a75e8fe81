"""A real `charrnn train` process killed or signalled at random moments never leaves an unreadable
best.pt or last.pt, and stops cleanly on SIGINT/SIGTERM with the resume command."""

import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_text

from charrnn import checkpoint

# A model big enough that each checkpoint write takes a while (a wide target for kills), saved every step.
FLAGS = [
    "--hidden",
    "256",
    "--embed",
    "32",
    "--layers",
    "2",
    "--batch-size",
    "4",
    "--seq-len",
    "16",
    "--eval-every",
    "1",
    "--steps",
    "100000",
    "--device",
    "cpu",
    "--precision",
    "fp32",
    "--val-frac",
    "0.02",
]


def start(corpus: Path, run: Path, resume: bool) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    args = [sys.executable, "-m", "charrnn", "train", str(corpus), *FLAGS, "--out", str(run)]
    return subprocess.Popen(
        args + (["--resume"] if resume else []),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def start_forked(corpus: Path, run: Path, resume: bool):
    """The same command, forked from a server that has already imported torch and charrnn: a kill cycle
    then costs a fork, not a fresh interpreter start (which is what makes 10+ kills affordable)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["charrnn.cli", "charrnn.loop"])
    from charrnn.cli import main

    argv = ["train", str(corpus), *FLAGS, "--out", str(run)] + (["--resume"] if resume else [])
    proc = ctx.Process(target=main, args=(argv,))
    proc.start()
    return proc


def _alive(proc) -> bool:
    return proc.poll() is None if isinstance(proc, subprocess.Popen) else proc.is_alive()


def wait_for(path: Path, proc, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        if not _alive(proc):
            raise AssertionError("training exited before writing a checkpoint")
        assert time.monotonic() < end, "no checkpoint appeared"
        time.sleep(0.02)


def kill_cycles(tmp_path: Path, kills: int) -> tuple[int, int]:
    """Kill -9 a run `kills` times, resuming after each: every other kill at a random moment, the rest aimed
    at a checkpoint write; return (kills, kills that landed mid-write, as the temporary file left shows)."""
    corpus = tmp_path / "c.txt"
    corpus.write_text(make_text(20_000), encoding="utf-8")
    run = tmp_path / "run"
    rng = random.Random(1234)
    mid_write = 0
    last_step = -1
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the fork server
    for i in range(kills):
        proc = start_forked(corpus, run, resume=i > 0)
        wait_for(run / "last.pt", proc)
        if i > 0:  # the resumed run must have moved on past what the previous one saved
            while checkpoint.load(run / "last.pt")["step"] <= last_step:
                time.sleep(0.01)
        if i % 2:  # aimed: kill the moment a checkpoint's temporary file appears, i.e. during a write
            end = time.monotonic() + 30
            while not any(run.glob(".*.tmp-*")) and time.monotonic() < end:
                time.sleep(0.0005)
        else:  # anywhere at all
            time.sleep(rng.uniform(0.0, 0.4))
        proc.kill()
        proc.join()
        mid_write += any(run.glob(".*.tmp-*"))  # a half-written temporary file: killed while saving
        for name in ("best.pt", "last.pt"):
            ckpt = checkpoint.load(run / name)  # raises CharRNNError if unreadable
            checkpoint.build_model(ckpt, run / name)
        last_step = checkpoint.load(run / "last.pt")["step"]
    return kills, mid_write


def test_sigkill_at_random_moments_never_corrupts_checkpoints(tmp_path):
    kills, mid_write = kill_cycles(tmp_path, 10)
    assert mid_write >= kills // 4  # the aimed kills really did land during writes
    print(f"{kills} SIGKILLs, {mid_write} of them during a checkpoint write; all checkpoints readable")


@pytest.mark.slow
def test_sigkill_fifty_times(tmp_path):
    kills, mid_write = kill_cycles(tmp_path, 50)
    assert mid_write >= kills // 4
    print(f"{kills} SIGKILLs, {mid_write} of them during a checkpoint write; all checkpoints readable")


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_after_the_step_saves_and_prints_resume(tmp_path, sig, code):
    corpus = tmp_path / "c.txt"
    corpus.write_text(make_text(20_000), encoding="utf-8")
    run = tmp_path / "run"
    proc = start(corpus, run, resume=False)
    wait_for(run / "last.pt", proc)
    proc.send_signal(sig)
    if sig == signal.SIGINT:
        time.sleep(0.01)
        proc.send_signal(sig)  # a second Ctrl-C while it stops and saves changes nothing
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert f"charrnn train --resume --out {run}" in err
    step = checkpoint.load(run / "last.pt")["step"]
    assert step >= 1 and not list(run.glob(".*.tmp-*"))
