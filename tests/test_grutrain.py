"""Tests for charrnn.grutrain: the kernel's GRU training path gives nn.GRU's outputs, state and gradients, carries
state across windows as nn.GRU does, applies dropout between layers only, and is what CharRNN trains through
exactly where the kernel loads."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from charrnn import grutrain, kernel
from charrnn.config import ModelConfig
from charrnn.model import CharRNN

needs_kernel = pytest.mark.skipif(
    kernel.compiler() is None or kernel.unsupported() is not None,
    reason=f"no C compiler, or {kernel.unsupported()}",
)
CPU = torch.device("cpu")


def _outputs_and_grads(gru: nn.GRU, forward, x: torch.Tensor, h0: torch.Tensor | None, lp=None) -> list:
    """out, h_n and every gradient of a loss that reads both (so both backward paths are exercised)."""
    gru.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=lp == torch.bfloat16):
        out, h = forward(gru, x, h0)
    (out.float().sin().sum() + h.float().cos().sum()).backward()
    return [out.float(), h.float(), x.grad, *(p.grad for p in gru.parameters())]


@needs_kernel
@pytest.mark.parametrize("layers, hidden, batch", [(1, 16, 1), (2, 24, 3), (3, 20, 5)])
def test_the_kernel_path_gives_nn_grus_outputs_state_and_gradients(layers, hidden, batch) -> None:
    torch.manual_seed(0)
    gru = nn.GRU(12, hidden, num_layers=layers, batch_first=True)
    x, h0 = torch.randn(batch, 9, 12), torch.randn(layers, batch, hidden)
    want = _outputs_and_grads(gru, lambda g, x, h: g(x, h), x, h0)
    got = _outputs_and_grads(gru, grutrain.gru_forward, x, h0)
    for w, g in zip(want, got, strict=True):
        assert w.shape == g.shape
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


@needs_kernel
def test_in_bf16_the_kernel_path_stays_near_fp32_as_nn_gru_does() -> None:
    """Under bf16 autocast both paths round their matmuls; the kernel's gradients must stay as near the fp32
    ones as nn.GRU's own bf16 gradients are (a wrong gate in the kernel would be far off)."""
    torch.manual_seed(1)
    gru = nn.GRU(16, 32, num_layers=2, batch_first=True)
    x, h0 = torch.randn(4, 20, 16), torch.randn(2, 4, 32)
    exact = _outputs_and_grads(gru, lambda g, x, h: g(x, h), x, h0)
    ref = _outputs_and_grads(gru, lambda g, x, h: g(x, h), x, h0, lp=torch.bfloat16)
    got = _outputs_and_grads(gru, grutrain.gru_forward, x, h0, lp=torch.bfloat16)
    for e, r, g in zip(exact, ref, got, strict=True):
        scale = e.abs().max().item() + 1e-6
        assert (g - e).abs().max().item() <= max(3 * (r - e).abs().max().item(), 0.02 * scale)


@needs_kernel
def test_state_carried_across_windows_equals_one_whole_sequence() -> None:
    torch.manual_seed(2)
    gru = nn.GRU(8, 16, num_layers=2, batch_first=True)
    x = torch.randn(3, 30, 8)
    whole, h_whole = grutrain.gru_forward(gru, x, None)
    first, h = grutrain.gru_forward(gru, x[:, :13], None)
    second, h = grutrain.gru_forward(gru, x[:, 13:], h)
    torch.testing.assert_close(torch.cat([first, second], 1), whole, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(h, h_whole, rtol=1e-5, atol=1e-6)


@needs_kernel
def test_dropout_falls_between_layers_only_and_only_in_training() -> None:
    torch.manual_seed(3)
    gru = nn.GRU(8, 16, num_layers=2, batch_first=True, dropout=0.5)
    x = torch.randn(2, 10, 8)
    one_layer = nn.GRU(8, 16, num_layers=1, batch_first=True)
    one_layer.load_state_dict({k: v for k, v in gru.state_dict().items() if k.endswith("l0")})
    gru.train()
    dropped, _ = grutrain.gru_forward(gru, x, None)
    gru.eval()
    plain, _ = grutrain.gru_forward(gru, x, None)
    torch.testing.assert_close(plain, gru(x)[0], rtol=1e-5, atol=1e-6)  # eval: no dropout at all
    assert (dropped - plain).abs().max() > 1e-3  # training: the second layer saw a dropped input
    first, _ = grutrain.gru_forward(one_layer.train(), x, None)  # the first layer's input is never dropped
    torch.testing.assert_close(first, one_layer(x)[0], rtol=1e-5, atol=1e-6)


@needs_kernel
def test_charrnn_trains_a_gru_through_the_kernel_and_evaluates_through_nn_gru(monkeypatch) -> None:
    calls = []
    real = grutrain.gru_forward
    monkeypatch.setattr(grutrain, "gru_forward", lambda *a: calls.append(1) or real(*a))
    torch.manual_seed(4)
    model = CharRNN(ModelConfig(model="gru", vocab_size=11, layers=2, hidden=16, embed=8))
    ids = torch.randint(0, 11, (3, 12))
    model.train()
    train_logits, _ = model(ids)
    assert calls == [1]
    model.eval()
    eval_logits, _ = model(ids)
    assert calls == [1]
    torch.testing.assert_close(train_logits, eval_logits, rtol=1e-4, atol=1e-5)  # dropout 0: the same model
    monkeypatch.setenv("CHARRNN_KERNEL", "0")  # no kernel: training goes through nn.GRU
    model.train()
    model(ids)
    assert calls == [1] and not grutrain.available(CPU)


@pytest.mark.parametrize("reorder_fails", [False, True])
def test_the_per_step_product_is_x_times_w_transposed_plus_b_with_or_without_onednn(reorder_fails, monkeypatch):
    asked = []
    if reorder_fails:  # a torch without oneDNN's reordered linear: plain F.linear, same result

        def missing(*args):
            asked.append(args)
            raise RuntimeError("no such op")

        monkeypatch.setattr(torch.ops.mkldnn, "_reorder_linear_weight", missing)
    torch.manual_seed(5)
    w, b, x = torch.randn(12, 5), torch.randn(12), torch.randn(3, 5)
    for bias in (b, None):
        got = grutrain._repeated(w, bias, 3)(x)
        assert got.is_contiguous()
        torch.testing.assert_close(got, torch.nn.functional.linear(x, w, bias), rtol=1e-5, atol=1e-5)
    assert len(asked) == (2 if reorder_fails else 0)


@needs_kernel
def test_the_kernels_load_time_check_passes_the_training_cells_and_catches_a_wrong_one() -> None:
    """kernel._open refuses a build whose GRU training cells compute wrong (a miscompile): the check must
    pass the real ones and fail ones that drop the later step's gradient."""
    k = kernel.load()
    assert kernel._gru_train_test(k)

    class Broken:
        gru_train_fwd = k.gru_train_fwd

        @staticmethod
        def gru_train_bwd(carry, dout, m, *rest):
            k.gru_train_bwd(carry, dout, None, *rest)

    assert not kernel._gru_train_test(Broken())
