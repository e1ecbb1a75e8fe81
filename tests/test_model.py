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
