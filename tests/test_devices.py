"""Device and precision choice, and checkpoint portability: the CUDA path's logic, tested on a CPU."""

import platform
import subprocess
import sys

import pytest
import torch

from charrnn import checkpoint, devices
from charrnn.errors import CharRNNError


@pytest.mark.parametrize("cuda,mps,expected", [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")])
def test_auto_picks_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert devices.pick_device("auto").type == expected


def test_explicit_device_that_is_missing_is_an_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(CharRNNError, match="--device cuda"):
        devices.pick_device("cuda")
    with pytest.raises(CharRNNError, match="--device mps"):
        devices.pick_device("mps")
    assert devices.pick_device("cpu").type == "cpu"


@pytest.mark.parametrize("bf16,expected", [(True, torch.bfloat16), (False, torch.float16)])
def test_auto_precision_on_cuda_is_bf16_else_fp16(monkeypatch, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert devices.pick_dtype("auto", torch.device("cuda")) == expected


@pytest.mark.parametrize("fast,expected", [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_precision_on_cpu_follows_native_bf16(monkeypatch, fast, expected):
    monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda: fast)
    assert devices.pick_dtype("auto", torch.device("cpu")) == expected


@pytest.mark.parametrize(
    "isa,capability,fast",
    [
        (None, "AVX512", True),
        ("AVX2", "AVX512", False),
        ("avx512_core", "AVX512", False),
        ("AVX512_CORE_BF16", "AVX512", True),
        (None, "AVX2", False),
    ],
)
def test_a_cpu_kept_off_its_bf16_instructions_has_no_fast_bf16(monkeypatch, isa, capability, fast):
    """How a benchmark stands in for an AVX2 CPU on an AVX-512 BF16 one: auto precision and describe_cpu then
    say what such a CPU would, fp32 and no native bf16."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)  # the flags of a chip that has it
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    if isa is None:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    else:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)
    assert devices.cpu_has_fast_bf16() is fast
    assert devices.pick_dtype("auto", torch.device("cpu")) == (torch.bfloat16 if fast else torch.float32)
    assert ("no native bf16" in devices.describe_cpu()) is not fast


def test_explicit_precisions(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda: True)
    assert devices.pick_dtype("fp32", cpu) == torch.float32
    assert devices.pick_dtype("bf16", cpu) == torch.bfloat16
    assert devices.pick_dtype("fp16", torch.device("cuda")) == torch.float16
    with pytest.raises(CharRNNError, match="fp16 is for GPUs"):
        devices.pick_dtype("fp16", cpu)


def test_bf16_on_a_cpu_without_it_is_refused_with_the_fix(monkeypatch):
    """On an AVX2 CPU oneDNN has no bf16 LSTM (the LSTM's first step raised a RuntimeError) and emulated bf16 is
    slower than fp32: one line that names fp32 instead."""
    monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda: False)
    with pytest.raises(CharRNNError, match="native bf16.*use --precision fp32"):
        devices.pick_dtype("bf16", torch.device("cpu"))
    assert devices.pick_dtype("auto", torch.device("cpu")) == torch.float32


def test_autocast_is_off_for_fp32_and_on_otherwise():
    cpu = torch.device("cpu")
    with devices.autocast(cpu, torch.float32):
        assert not torch.is_autocast_enabled("cpu")
    with devices.autocast(cpu, torch.bfloat16):
        assert torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_checkpoints_load_onto_the_cpu_weights_only(monkeypatch, tmp_path):
    """A GPU-trained file must load on a CPU-only machine: every load maps to the CPU, weights only."""
    path = tmp_path / "x.pt"
    checkpoint.save({"model": {"w": torch.ones(2)}, "model_config": {}, "vocab": "ab"}, path)
    seen = {}
    real = torch.load

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    ckpt = checkpoint.load(path)
    assert seen["map_location"] == "cpu" and seen["weights_only"] is True
    assert ckpt["model"]["w"].device.type == "cpu"


FREE_AND_ALLOCATE = """
import ctypes, resource, sys, torch
from charrnn import devices
torch.set_num_threads(2)
libc = ctypes.CDLL(None)
libc.mallopt(-3, 128 << 10)  # M_MMAP_THRESHOLD and M_TRIM_THRESHOLD at glibc's initial 128 KiB, held fixed:
libc.mallopt(-1, 128 << 10)  # what its own heuristics do with these blocks varies from process to process
if sys.argv[1] == "keep":
    devices.keep_freed_memory()
def step():
    blocks = [torch.ones(4 << 20) for _ in range(4)]  # 4 x 16 MB, touched, then freed: a training step's pattern
    del blocks
for _ in range(3):  # the heap grows to the steps' peak
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_freed_training_memory_is_reused_without_fresh_page_faults():
    def faults(mode: str) -> float:
        done = subprocess.run([sys.executable, "-c", FREE_AND_ALLOCATE, mode], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return float(done.stdout)

    given_back, kept = faults("give-back"), faults("keep")
    assert given_back > 8_000  # of 16,384 pages a step, most come back fresh from the kernel
    assert kept < 1_000


def test_a_cpu_run_keeps_freed_memory_before_its_probe(tmp_path, monkeypatch, tiny_corpus):
    from charrnn import loop, recipe

    calls = []
    monkeypatch.setattr(recipe, "keep_freed_memory", lambda: calls.append("keep"))
    real_plan = recipe._plan
    monkeypatch.setattr(recipe, "_plan", lambda *a, **k: (calls.append("plan"), real_plan(*a, **k))[1])
    loop.Trainer.from_flags(tiny_corpus, {"hidden": 16}, {"steps": 2, "device": "cpu"}, tmp_path / "run")
    assert calls[:2] == ["keep", "plan"]
