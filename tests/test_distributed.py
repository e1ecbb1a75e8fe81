"""Several processes: a real 2-process gloo run under torchrun trains the same model as one process,
writes one set of checkpoints, and resumes exactly; plus the pure pieces of Dist (sharding, state rows)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from charrnn.distributed import Dist

fcntl = pytest.importorskip("fcntl")  # POSIX: torchrun's workers and the run lock
pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed with gloo (torchrun)"
)

# dropout 0: with it, each rank draws its own masks and the two runs differ by design.
# --lr 0.05: the warmup steps still move the weights by ~1e-2, far above the 1e-5 tolerance.
FLAGS = [
    "--hidden",
    "32",
    "--embed",
    "16",
    "--layers",
    "2",
    "--batch-size",
    "8",
    "--seq-len",
    "16",
    "--eval-every",
    "3",
    "--dropout",
    "0",
    "--lr",
    "0.05",
    "--device",
    "cpu",
    "--precision",
    "fp32",
]
TIMEOUT = 120  # seconds: a hung collective fails the test instead of blocking the suite


def _corpus(path: Path, n_chars: int = 20_000) -> Path:
    rng = random.Random(7)
    words = "the and of to my that in you is not with it for be his your this but he have thou so him".split()
    lines, size = [], 0
    while size < n_chars:
        line = " ".join(rng.choice(words) for _ in range(rng.randint(3, 9))).capitalize() + rng.choice(".,;!?") + "\n"
        lines.append(line)
        size += len(line)
    path.write_text("".join(lines), encoding="utf-8")
    return path


def _start(cmd: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CHARRNN_CACHE": str(cwd / "cache"), "PYTHONUNBUFFERED": "1"}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)  # the single-process run must not think it is one rank of many
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen, ok: bool = True) -> subprocess.CompletedProcess:
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"hung for {TIMEOUT} s: {' '.join(proc.args)}\n--- stderr\n{err[-6000:]}")
    if ok:
        assert proc.returncode == 0, f"{' '.join(proc.args)}\n--- stdout\n{out[-3000:]}\n--- stderr\n{err[-6000:]}"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def torchrun(cwd: Path, *args: str) -> subprocess.Popen:
    """`torchrun --standalone --nproc-per-node 2 -m charrnn train ARGS` (a free port is picked for us)."""
    return _start(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "--monitor-interval",
            "0.1",
            "-m",
            "charrnn",
            "train",
            *args,
        ],
        cwd,
    )


def single(cwd: Path, *args: str) -> subprocess.Popen:
    return _start([sys.executable, "-m", "charrnn", "train", *args], cwd)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """Four runs, shared by the tests below: 2 processes x 6 steps, 1 process x 6 steps (alongside, to
    overlap start-up), and 2 processes stopped at step 3 then resumed to step 6. About 20 s on 2 cores,
    nearly all of it interpreter and torch start-up."""
    root = tmp_path_factory.mktemp("dist")
    corpus = str(_corpus(root / "tiny.txt"))
    out = {"root": root}
    whole, one = (
        torchrun(root, corpus, *FLAGS, "--steps", "6", "--out", "dist"),
        single(root, corpus, *FLAGS, "--steps", "6", "--out", "single"),
    )
    out["dist"], out["single"] = _finish(whole), _finish(one)
    out["part"] = _finish(torchrun(root, corpus, *FLAGS, "--steps", "3", "--out", "split"))
    out["part_ckpt"] = torch.load(root / "split" / "last.pt", weights_only=True)
    out["resumed"] = _finish(torchrun(root, "--resume", "--steps", "6", "--out", "split"))  # corpus from the checkpoint
    return out


def _ckpt(run: Path, name: str = "last.pt") -> dict:
    return torch.load(run / name, weights_only=True)


def _metrics(run: Path) -> list[dict]:
    return [json.loads(r) for r in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


def _assert_same_weights(a: dict, b: dict, atol: float = 1e-5) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=0, msg=key)


def test_two_processes_train_the_same_model_as_one(runs):
    d, s = _ckpt(runs["root"] / "dist"), _ckpt(runs["root"] / "single")
    assert d["step"] == s["step"] == 6
    _assert_same_weights(d["model"], s["model"])
    assert d["resume"]["world"] == 2 and s["resume"]["world"] == 1
    # the carried state is the global one, rows in single-process order
    for a, b in zip(d["resume"]["carried_state"], s["resume"]["carried_state"]):
        assert a.shape == b.shape == (2, 8, 32)  # (layers, B, H)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    # the same optimizer moments on rank 0 as in one process
    for (_, va), (_, vb) in zip(d["resume"]["optimizer"]["state"].items(), s["resume"]["optimizer"]["state"].items()):
        torch.testing.assert_close(va["exp_avg"], vb["exp_avg"], atol=1e-6, rtol=1e-4)


def test_metrics_are_global_and_written_once(runs):
    dm, sm = _metrics(runs["root"] / "dist"), _metrics(runs["root"] / "single")
    assert [r["step"] for r in dm] == [r["step"] for r in sm] == [3, 6]  # one row per evaluation, not one per rank
    for a, b in zip(dm, sm):
        assert a["lr"] == b["lr"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5)  # averaged over ranks, not rank 0's half
        # validation is split across ranks: the same characters, only one more cold start per shard
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=2e-3)
    d, s = _ckpt(runs["root"] / "dist"), _ckpt(runs["root"] / "single")
    assert d["last_val"]["chars"] == s["last_val"]["chars"]  # every validation character scored exactly once
    assert d["best_val"] == pytest.approx(s["best_val"], abs=2e-3)


def test_only_rank_0_writes_and_reports(runs):
    for name in ("dist", "split"):
        files = sorted(p.name for p in (runs["root"] / name).iterdir())
        want = [".lock", "best.pt", "best.safetensors", "last.pt", "last.safetensors", "metrics.jsonl", "samples.txt"]
        assert files == want, files  # none per rank
    log = runs["dist"].stderr
    assert log.count("step      3  train") == 1 and log.count("step      6  train") == 1, log[-3000:]
    kept = (runs["root"] / "dist" / "samples.txt").read_text(encoding="utf-8")
    assert kept.count("=== step 3 ") == 1 and kept.count("=== step 6 ") == 1  # rank 0 samples, once


def test_distributed_resume_equals_uninterrupted(runs):
    part = runs["part_ckpt"]
    assert part["step"] == 3 and part["resume"]["carried_state"][0].shape == (2, 8, 32)
    whole, resumed = _ckpt(runs["root"] / "dist"), _ckpt(runs["root"] / "split")
    assert resumed["step"] == 6
    # the resume is real: weights moved well beyond the tolerance after step 3
    assert max((resumed["model"][k] - part["model"][k]).abs().max().item() for k in part["model"]) > 1e-3
    _assert_same_weights(resumed["model"], whole["model"])
    for a, b in zip(resumed["resume"]["carried_state"], whole["resume"]["carried_state"]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    rm, wm = _metrics(runs["root"] / "split"), _metrics(runs["root"] / "dist")
    assert [r["step"] for r in rm] == [3, 6]
    for a, b in zip(rm, wm):
        assert a["lr"] == b["lr"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5)
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-5)


def test_an_error_on_rank_0_stops_rank_1_without_a_hang(tmp_path):
    """Rank 0 alone takes the run lock; when it cannot, rank 1 (waiting at the start barrier) must not wait
    forever: gloo sees rank 0's socket close and torchrun stops. Only rank 0 prints: one error, one line."""
    corpus = str(_corpus(tmp_path / "tiny.txt", 5_000))
    (tmp_path / "run").mkdir()
    with open(tmp_path / "run" / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as another live trainer would
        result = _finish(torchrun(tmp_path, corpus, *FLAGS, "--steps", "3", "--out", "run"), ok=False)
    assert result.returncode != 0
    assert "another charrnn train is using" in result.stderr
    assert result.stderr.count("error:") == 1 and "rank 1:" not in result.stderr
    assert "[rank1]: Traceback" not in result.stderr
    assert not (tmp_path / "run" / "last.pt").exists()


# ---- the pure pieces: no process group needed -------------------------------------------------------


@pytest.mark.parametrize("world", [2, 3, 4])
@pytest.mark.parametrize("n", [2, 3, 5, 100, 1001])
def test_validation_shards_score_every_prediction_once(world, n):
    ids = np.arange(n)
    shards = [Dist(rank=r, world=world).shard(ids) for r in range(world)]
    pairs = [(int(a), int(b)) for s in shards for a, b in zip(s[:-1], s[1:])]  # (input, target) scored
    assert sorted(pairs) == [(i, i + 1) for i in range(n - 1)]


@pytest.mark.parametrize("world", [1, 2, 4])
def test_state_rows_scatter_back_to_the_global_state(world):
    saved = [torch.randn(2, 8, 5), torch.randn(2, 8, 5)]  # (layers, B, H)
    parts = [Dist(rank=r, world=world).scatter_state(saved, torch.device("cpu")) for r in range(world)]
    for i, s in enumerate(saved):
        assert torch.equal(torch.cat([p[i] for p in parts], dim=1), s)


def test_one_process_is_a_no_op():
    d = Dist()
    assert d.is_main and d.wrap(model := torch.nn.Linear(2, 2)) is model
    loss = torch.tensor(1.5)
    assert d.mean(loss) is loss
    assert d.agree(None, 3.0) == (None, 3.0)
    state = torch.get_rng_state()
    d.seed_step(1, 2)
    assert torch.equal(torch.get_rng_state(), state)  # one process keeps its own generator


def test_sigterm_to_the_workers_stops_cleanly_without_a_torchrun_traceback(tmp_path):
    """A scheduler's SIGTERM to the worker processes: every rank stops at the same step and saves, and
    torchrun, seeing clean exits, prints no ChildFailedError traceback; rank 0 prints the resume command."""
    corpus = str(_corpus(tmp_path / "tiny.txt", 20_000))
    proc = torchrun(tmp_path, corpus, *FLAGS, "--steps", "100000", "--eval-every", "2", "--out", "run")
    end = time.monotonic() + TIMEOUT
    while not (tmp_path / "run" / "last.pt").exists():
        assert proc.poll() is None and time.monotonic() < end, "no checkpoint appeared"
        time.sleep(0.05)
    workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert len(workers) == 2
    for pid in workers:
        os.kill(int(pid), signal.SIGTERM)
    result = _finish(proc, ok=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ChildFailedError" not in result.stderr and "Traceback" not in result.stderr
    assert "torchrun --nproc-per-node 2 -m charrnn train --resume --out run" in result.stderr
    assert checkpoint_step(tmp_path / "run") >= 2


def checkpoint_step(run: Path) -> int:
    return int(torch.load(run / "last.pt", weights_only=True)["step"])


def test_device_cpu_is_honoured_under_torchrun_on_a_machine_with_gpus(monkeypatch):
    """Without a GPU here, pretend CUDA is there: --device cpu must still give gloo on the CPU."""
    joined = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29999")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend: joined.append(backend))
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    d = Dist.from_env("cpu")
    assert joined == ["gloo"] and d.device == torch.device("cpu") and (d.rank, d.world) == (1, 2)


def test_a_failure_while_building_the_trainer_still_leaves_the_process_group(monkeypatch, tmp_path):
    from charrnn import loop as train_mod
    from charrnn.errors import CharRNNError

    closed = []
    monkeypatch.setattr(Dist, "from_env", classmethod(lambda cls, device="auto": cls()))
    monkeypatch.setattr(Dist, "close", lambda self: closed.append(True))
    with pytest.raises(CharRNNError, match="corpus not found"):
        train_mod.train(tmp_path / "missing.txt", {}, {"steps": 1}, out=tmp_path / "run")
    assert closed == [True]
