"""The torch-free weights file: written beside every checkpoint, tied to it by hash, rewritten on first use for
a checkpoint without one, read without torch; `charrnn sample` on a CPU runs without importing torch and
prints the same text as the torch path for the same seed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from charrnn import checkpoint, data, weights
from charrnn.config import SampleConfig
from charrnn.errors import CharRNNError
from charrnn.sample import generate

NO_TORCH = "import sys; sys.modules['torch'] = None; from charrnn.cli import main; main(sys.argv[1:])"


def cli_without_torch(*args: object, cwd) -> subprocess.CompletedProcess:
    """`charrnn ARGS` in a fresh process where any `import torch` fails."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-c", NO_TORCH, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env
    )


def test_training_writes_weights_beside_each_checkpoint_and_they_match(tiny_run):
    for name in ("best", "last"):
        pt = tiny_run.run_dir / f"{name}.pt"
        found = weights.for_checkpoint(pt)
        assert found is not None and found.checkpoint_sha256 == data.file_digest(pt)
        ckpt = checkpoint.load(pt)
        assert found.vocab.chars == ckpt["vocab"] and found.cfg.hidden == ckpt["model_config"]["hidden"] == 32
        for key, tensor in ckpt["model"].items():
            np.testing.assert_array_equal(found.tensors[key], tensor.numpy())
        assert found.info["steps"] == ckpt["step"] and found.info["corpus"] == "tiny.txt"


def test_sample_runs_without_torch_and_prints_what_the_torch_path_prints(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run.run_dir, run)
    args = ("sample", "-c", run, "--seed", 11, "--length", 300, "--prime", "KING", "--temp", 0.9)
    done = cli_without_torch(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    model, vocab = checkpoint.build_model(checkpoint.load(run / "best.pt"))
    cfg = SampleConfig(seed=11, length=300, prime="KING", temp=0.9)
    want = "".join(step[0] for step in generate(model, vocab, cfg))  # the torch model, stepped on the CPU
    assert done.stdout == "KING" + want + "\n"
    many = cli_without_torch(
        "sample", "-c", run, "--seed", 2, "--num", 3, "--length", 50, "--format", "jsonl", cwd=tmp_path
    )
    assert many.returncode == 0 and len(many.stdout.splitlines()) == 3, many.stderr


def test_a_checkpoint_without_weights_gets_them_on_first_use_and_a_changed_one_is_never_served_stale(
    tiny_run, tmp_path, run_cli
):
    run = tmp_path / "run"
    shutil.copytree(tiny_run.run_dir, run)
    (run / "best.safetensors").unlink()
    assert cli_without_torch("sample", "-c", run, cwd=tmp_path).returncode != 0  # no weights file: needs torch
    code, first, _ = run_cli("sample", "-c", run, "--seed", 4, "--length", 80)
    assert code == 0 and weights.for_checkpoint(run / "best.pt") is not None  # written on first use
    assert not list(run.glob(".*.tmp-*"))
    again = cli_without_torch("sample", "-c", run, "--seed", 4, "--length", 80, cwd=tmp_path)
    assert again.returncode == 0 and again.stdout == first
    ckpt = checkpoint.load(run / "best.pt")  # the checkpoint changes behind the weights file's back
    ckpt["model"] = {k: v + 0.5 if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    checkpoint.save({k: v for k, v in ckpt.items() if k not in ("format", "version")}, run / "best.pt", False)
    assert weights.for_checkpoint(run / "best.pt") is None  # stale: ignored
    code, changed, _ = run_cli("sample", "-c", run, "--seed", 4, "--length", 80)
    assert code == 0 and changed != first and weights.for_checkpoint(run / "best.pt") is not None


def test_the_bundled_model_ships_its_weights_file():
    found = weights.for_checkpoint(checkpoint.BUNDLED)
    assert found is not None and found.info["corpus"] == "shakespeare.txt, fortunes.txt"


def test_a_safetensors_file_that_is_not_charrnn_weights_is_refused_clearly(tmp_path, run_cli):
    from safetensors.numpy import save_file

    save_file({"w": np.zeros((2, 2), np.float32)}, tmp_path / "other.safetensors")
    with pytest.raises(CharRNNError, match="not charrnn weights"):
        weights.read(tmp_path / "other.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    code, out, err = run_cli("sample", "-c", tmp_path / "junk.safetensors")
    assert code == 1 and out == "" and "not a readable charrnn weights file" in err and "Traceback" not in err


def test_a_weights_file_samples_on_its_own(tiny_run, tmp_path, run_cli):
    shutil.copy(tiny_run.run_dir / "best.safetensors", tmp_path / "model.safetensors")
    code, out, _ = run_cli("sample", "-c", tmp_path / "model.safetensors", "--seed", 4, "--length", 60)
    code2, out2, _ = run_cli("sample", "-c", tiny_run.run_dir, "--seed", 4, "--length", 60)
    assert code == code2 == 0 and out == out2
