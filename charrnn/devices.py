"""Device and precision choice: which hardware runs the model and in which autocast dtype; CPU threads.

torch is imported inside the functions that need it: `set_threads` runs before a torch-free sampler.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import TYPE_CHECKING

from charrnn.errors import CharRNNError

if TYPE_CHECKING:
    import torch


def pick_device(name: str = "auto") -> torch.device:
    """auto: cuda, then mps, then cpu. An explicit device that is not there is an error, not a fallback."""
    import torch

    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise CharRNNError(
            "--device cuda was asked for but this torch sees no CUDA GPU "
            "(use --device cpu, or install a CUDA build of torch)"
        )
    if name == "mps" and not has_mps:
        raise CharRNNError("--device mps was asked for but MPS is not available (use --device cpu)")
    return torch.device(name)


def set_threads(n: int | None) -> None:
    """Use n CPU threads for torch and for the sampler's BLAS (None: all cores, the libraries' default).

    People share machines; and fewer threads let a benchmark stand in for a slower CPU."""
    if n is None:
        return
    if n < 1:
        raise CharRNNError(f"--threads must be a whole number >= 1, got {n}")
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    else:  # torch reads it when (if ever) it is imported
        os.environ["OMP_NUM_THREADS"] = str(n)
    from threadpoolctl import threadpool_limits

    threadpool_limits(n)  # numpy's OpenBLAS (or MKL), which the CPU sampler's matrix products run on


def keep_freed_memory() -> None:
    """Have glibc's malloc keep what a training step frees for the next step instead of handing it back to
    the kernel.

    Each step allocates and frees the same tens of MB of activations and gradients. By default glibc serves
    such blocks with mmap or gives them back when they are freed, so every step gets fresh pages and the
    kernel zeroes each on first touch: 6,000-36,000 page faults a batch-16 step, and 1.04-1.44x on the
    step's time on a 2-core Zen 4 (benchmarks/README.md). Blocks up to glibc's largest mmap
    threshold (32 MiB) now come from the heap, and up to 1 GiB freed at its top stays there: the process
    holds on to its peak training memory, which it needs again a step later. A no-op without glibc."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc, or no such symbol
        return
    mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    mallopt(_M_TRIM_THRESHOLD, 1 << 30)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h


def cpu_has_fast_bf16() -> bool:
    """Native bf16 matmul (AVX-512 BF16 or AMX) that torch and oneDNN may use: without it bf16 on a CPU is
    emulated and slower. The CPU's flags are not enough: ONEDNN_MAX_CPU_ISA below AVX512_CORE_BF16, or
    ATEN_CPU_CAPABILITY below AVX-512, keeps the libraries off those instructions (how a benchmark stands in
    for an AVX2 CPU), and then this CPU has no fast bf16 as far as a run can tell."""
    import torch

    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in _ISAS_WITHOUT_BF16:
        return False
    if torch.backends.cpu.get_cpu_capability() in ("DEFAULT", "NO AVX", "AVX2"):
        return False
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, c, lambda: False)() for c in checks)


# oneDNN's ISA levels below AVX512_CORE_BF16 (its docs, "CPU dispatcher control"); AVX2_VNNI_2 converts to bf16 but
# has no bf16 dot product.
_ISAS_WITHOUT_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}


def describe_cpu() -> str:
    """One line naming the CPU a figure came from: its model, the SIMD level torch dispatches to (which
    ATEN_CPU_CAPABILITY can lower, to stand in for an older CPU), native bf16 or not, and torch's threads.
    Training speed differs about 3.5x between an AVX2 and an AVX-512 BF16 CPU, so no figure means much
    without it."""
    import platform

    import torch

    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):  # Linux: the name, and the family and model that tell generations apart
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            info = dict(line.split(":", 1) for line in f.read().split("\n\n")[0].splitlines() if ":" in line)
        info = {k.strip(): v.strip() for k, v in info.items()}
        family, number = info.get("cpu family", "?"), info.get("model", "?")
        model = f"{info.get('model name', model)} (family {family}, model {number})"
    bf16 = "native bf16" if cpu_has_fast_bf16() else "no native bf16"
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA")
    limit = f", oneDNN limited to {isa}" if isa else ""
    capability = torch.backends.cpu.get_cpu_capability()
    return f"{model}, torch {torch.__version__} {capability}{limit}, {bf16}, {torch.get_num_threads()} threads"


def pick_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The autocast compute dtype: bf16 where the hardware runs it natively, fp16 on older GPUs."""
    import torch

    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        if device.type == "cpu" and not cpu_has_fast_bf16():
            # Emulated bf16 is slower than fp32, and oneDNN builds no bf16 LSTM below AVX-512 (a traceback on AVX2).
            raise CharRNNError(
                f"--precision bf16 needs a CPU with native bf16 (AVX-512 BF16 or AMX), and this one has none "
                f"({torch.backends.cpu.get_cpu_capability()}): use --precision fp32, which auto picks here"
            )
        return torch.bfloat16
    if precision == "fp16":
        if device.type == "cpu":
            raise CharRNNError("--precision fp16 is for GPUs; on a CPU use bf16 or fp32")
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    return torch.float32


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Mixed precision: matmuls in `dtype`, weights and the loss stay fp32 (master weights)."""
    import torch

    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def full_precision(device: torch.device) -> contextlib.AbstractContextManager:
    """Leave the autocast a caller entered, for code that must run in fp32 inside it: torch's adaptive
    softmax (AdaptiveLogSoftmaxWithLoss) copies its clusters' bf16 results into an fp32 output under
    autocast, and index_copy_ refuses the mix, so training on a large vocabulary crashed on every CPU with
    native bf16 (and on a GPU in bf16 or fp16)."""
    import torch

    if torch.is_autocast_enabled(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()
