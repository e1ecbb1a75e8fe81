"""CharRNN: state carry across chunks equals one whole pass, for every cell; init and tying."""

import pytest
import torch

from charrnn.config import ModelConfig
from charrnn.model import CharRNN, count_parameters, detach_state


def tiny(model="lstm", **kw):
    torch.manual_seed(0)
    cfg = dict(model=model, vocab_size=13, embed=8, hidden=16, layers=2, dropout=0.0)
    cfg.update(kw)
    return CharRNN(ModelConfig(**cfg)).eval()


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_chunks_with_carried_state_equal_whole_sequence(cell):
    m = tiny(cell)
    ids = torch.randint(0, 13, (3, 40))
    whole, whole_state = m(ids)
    state, parts = None, []
    for chunk in ids.split([7, 1, 13, 19], dim=1):
        logits, state = m(chunk, state)
        state = detach_state(state)
        parts.append(logits)
    torch.testing.assert_close(torch.cat(parts, dim=1), whole, rtol=1e-5, atol=1e-5)
    for a, b in zip(state, whole_state):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cell,n_state", [("lstm", 2), ("gru", 1), ("rnn", 1)])
def test_one_state_interface(cell, n_state):
    m = tiny(cell)
    logits, state = m(torch.zeros(2, 5, dtype=torch.long))
    assert logits.shape == (2, 5, 13)
    assert len(state) == n_state and all(s.shape == (2, 2, 16) for s in state)
    zero = m.init_state(2)
    assert len(zero) == n_state and all(not s.any() for s in zero)
    torch.testing.assert_close(m(torch.zeros(2, 5, dtype=torch.long), zero)[0], logits)


def test_lstm_forget_gate_starts_open():
    m = tiny("lstm")
    total = m.rnn.bias_ih_l0 + m.rnn.bias_hh_l0
    assert torch.all(total[16:32] == 1.0)


def test_tied_weights_share_storage():
    m = tiny("lstm", embed=16, tie_weights=True)
    assert m.head.weight is m.embed.weight
    untied = tiny("lstm", embed=16)
    assert count_parameters(m) == count_parameters(untied) - 13 * 16


def test_set_dropout_changes_training_forwards_only():
    m = tiny("lstm", dropout=None)  # not chosen yet: no dropout at all
    ids = torch.randint(0, 13, (2, 9))
    ref = m(ids)[0]
    m.train()
    torch.testing.assert_close(m(ids)[0], ref)
    m.set_dropout(0.5)
    assert m.drop.p == 0.5 and m.rnn.dropout == 0.5
    assert not torch.allclose(m(ids)[0], ref)
    m.eval()
    torch.testing.assert_close(m(ids)[0], ref)
    assert tiny("lstm", layers=1, dropout=0.3).rnn.dropout == 0.0  # torch drops only between layers


def test_weight_drop_regularises_training_forwards_and_trains_the_raw_weights():
    m = tiny("lstm", weight_drop=0.5)
    ids = torch.randint(0, 13, (2, 9))
    ref = m(ids)[0]
    m.train()
    dropped = m(ids)[0]
    assert not torch.allclose(dropped, ref)
    dropped.sum().backward()
    assert all(m.rnn.get_parameter(f"weight_hh_l{k}").grad.abs().sum() > 0 for k in range(2))
    m.eval()
    torch.testing.assert_close(m(ids)[0], ref)  # evaluation uses the whole weights
    assert [n for n, _ in m.named_parameters()] == [n for n, _ in tiny("lstm").named_parameters()]


def test_locked_dropout_keeps_one_mask_for_the_whole_window():
    m = tiny("lstm", dropout=0.5, locked_dropout=True, layers=1).train()
    x = torch.ones(3, 7, 16)
    dropped = m._drop(x)  # (B, T, D)
    assert (dropped == dropped[:, :1]).all()  # the same units silenced at every step
    assert set(dropped.unique().tolist()) == {0.0, 2.0}
    m.eval()
    assert torch.equal(m._drop(x), x)
    per_step = tiny("lstm", dropout=0.5, layers=1).train()._drop(x)
    assert not (per_step == per_step[:, :1]).all()
