"""Tests for charrnn.dropout: the kernel's dropout drops each element with probability p independently, scales
the rest as F.dropout does, drops the gradient with the very mask of the forward pass (regenerated, not stored),
follows torch's seed, and is F.dropout wherever the kernel is not."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from charrnn import kernel
from charrnn.dropout import dropout

needs_kernel = pytest.mark.skipif(
    kernel.compiler() is None or kernel.unsupported() is not None,
    reason=f"no C compiler, or {kernel.unsupported()}",
)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("p", [0.1, 0.227, 0.5])
def test_drops_a_fraction_p_independently_and_scales_the_rest(dtype, p) -> None:
    torch.manual_seed(0)
    x = (torch.rand(64, 128, 65) + 0.5).to(dtype)  # (B, T, H), no zeros of its own; an odd count of elements
    y = dropout(x, p)
    dropped = y == 0
    assert abs(dropped.float().mean().item() - p) < 0.003  # 532k elements: the standard error is < 0.0007
    pairs = dropped.flatten()[: x.numel() // 2 * 2].view(-1, 2)  # (N/2, 2): one 64-bit draw makes each pair
    assert abs(pairs.all(dim=1).float().mean().item() - p * p) < 0.003
    rows = dropped.flatten(0, 1)  # (B*T, H)
    assert abs((rows[1:] & rows[:-1]).float().mean().item() - p * p) < 0.003
    scale = torch.tensor(1 / (1 - p), dtype=torch.float32)
    want = (x.float() * scale).to(dtype)  # in float32, rounded once (F.dropout's bf16 rounds the scale first)
    assert torch.equal(y[~dropped], want[~dropped])


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_gradient_is_dropped_by_the_forward_passes_mask(dtype) -> None:
    torch.manual_seed(1)
    base = (torch.rand(40, 6, 33) + 0.5).to(dtype)
    x = base.transpose(0, 1).requires_grad_(True)  # (6, 40, 33), not contiguous: the mask follows elements
    y = dropout(x, 0.3)
    g = torch.rand_like(y) + 0.5
    y.backward(g)
    scale = torch.tensor(1 / 0.7, dtype=torch.float32)
    want = torch.where(y == 0, 0.0, g.float() * scale).to(dtype)
    assert torch.equal(x.grad, want)


@needs_kernel
def test_masks_follow_torchs_seed() -> None:
    x = torch.ones(1000)
    torch.manual_seed(5)
    first, second = dropout(x, 0.4), dropout(x, 0.4)
    torch.manual_seed(5)
    assert torch.equal(dropout(x, 0.4), first)
    assert not torch.equal(first, second)


def test_off_in_evaluation_and_at_zero() -> None:
    x = torch.randn(4, 5)
    assert dropout(x, 0.5, training=False) is x
    assert dropout(x, 0.0) is x


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_without_the_kernel_or_for_other_dtypes_it_is_f_dropout(monkeypatch, dtype) -> None:
    x = torch.randn(300, 7).to(dtype)
    for env in ("0", "1"):  # CHARRNN_KERNEL=0: float32 too; with the kernel, dtypes it does not write
        monkeypatch.setenv("CHARRNN_KERNEL", env)
        for d in (dtype, torch.float32) if env == "0" else (dtype,):
            torch.manual_seed(2)
            got = dropout(x.to(d), 0.3)
            torch.manual_seed(2)
            assert torch.equal(got, F.dropout(x.to(d), 0.3))


@needs_kernel
def test_the_kernels_load_time_check_catches_a_mask_that_ignores_the_seed() -> None:
    k = kernel.load()
    assert kernel._dropout_test(k)

    class Broken:
        @staticmethod
        def dropout_apply(x, y, n, seed, *rest):
            k.dropout_apply(x, y, n, 0, *rest)

    assert not kernel._dropout_test(Broken())
