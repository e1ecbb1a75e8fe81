"""Cell views: a unit planted by hand to track quotes is ranked first for "inside quotes" by `charrnn cells`,
and `eval --cell` colours the text by it, in the terminal and in a standalone page."""

from __future__ import annotations

import numpy as np
import torch

from charrnn import checkpoint, insight
from charrnn.config import ModelConfig, to_dict
from charrnn.model import CharRNN
from charrnn.vocab import Vocab

TEXT = 'He said "to be or not" and then "so it goes" and left.\nShe: "no more" then "yes" again. ' * 6
QUOTE_UNIT = 5


def planted(tmp_path):
    """A 1x8 LSTM whose unit 5 is a latch flipped by every '"': its cell state is +1 inside quotes and -1
    outside (the input gate opens and the forget gate closes on a quote; the candidate is minus its own
    output). The other units get small random weights, so they move too, without tracking anything."""
    vocab = Vocab.from_text(TEXT)
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(model="lstm", vocab_size=len(vocab), layers=1, hidden=8, embed=4, dropout=0.0))
    H, u, K, q = 8, QUOTE_UNIT, 20.0, vocab.chars.index('"')
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
        model.embed.weight[:, 0] = 0.0
        model.embed.weight[q] = torch.tensor([1.0, 0.0, 0.0, 0.0])  # dimension 0 says "a quote"
        w_ih, w_hh = model.rnn.weight_ih_l0, model.rnn.weight_hh_l0
        b_ih, b_hh = model.rnn.bias_ih_l0, model.rnn.bias_hh_l0
        for gate in range(4):  # torch's order i, f, g, o
            w_ih[gate * H + u] = 0.0
            w_hh[gate * H + u] = 0.0
            b_hh[gate * H + u] = 0.0
        w_ih[0 * H + u, 0], b_ih[0 * H + u] = 2 * K, -K  # input gate: open on a quote only
        w_ih[1 * H + u, 0], b_ih[1 * H + u] = -2 * K, K  # forget gate: closed on a quote only
        w_hh[2 * H + u, u], b_ih[2 * H + u] = -K, 1.0  # candidate: the opposite of where it is
        b_ih[3 * H + u] = K  # output gate open
    path = tmp_path / "planted.pt"
    checkpoint.save({"model": model.state_dict(), "model_config": to_dict(model.cfg), "vocab": vocab.chars}, path)
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    return model, vocab, path


def test_a_planted_quote_unit_is_ranked_first(tmp_path, run_cli):
    model, vocab, path = planted(tmp_path)
    states = insight.unit_states(model, vocab.encode(TEXT))
    inside = insight.PROPERTIES["inside quotes"](TEXT)
    c = states["c"][:, 0, QUOTE_UNIT]
    assert np.all(c[inside == 1] > 0.5) and np.all(c[(inside == 0) & (np.arange(len(TEXT)) > 10)] < -0.5)
    best = insight.rank_cells(states, TEXT)["inside quotes"][0]
    assert (best.layer, best.unit) == (1, QUOTE_UNIT) and best.corr > 0.95  # its c, or h = tanh(c): the same unit
    code, out, err = run_cli("cells", tmp_path / "t.txt", "-c", path, "--show-chars", len(TEXT))
    assert code == 0, err
    row = next(line for line in out.splitlines() if "inside quotes" in line)
    assert f"1:{QUOTE_UNIT} (" in row


def test_eval_cell_colours_the_text_by_one_unit(tmp_path, run_cli):
    _, _, path = planted(tmp_path)
    code, out, err = run_cli("eval", tmp_path / "t.txt", "-c", path, "--cell", f"1:{QUOTE_UNIT}")
    assert code == 0 and "unit 1:5 (c)" in out and "unit value" in out, err
    code, _, err = run_cli("eval", tmp_path / "t.txt", "-c", path, "--cell", "1:5", "--html", tmp_path / "c.html")
    page = (tmp_path / "c.html").read_text(encoding="utf-8")
    assert code == 0 and page.count('<span class="v') == min(len(TEXT), 2000) and "<script" not in page
    for bad, says in [("2:0", "outside the model"), ("1:99", "outside the model"), ("x", "LAYER:UNIT")]:
        code, _, err = run_cli("eval", tmp_path / "t.txt", "-c", path, "--cell", bad)
        assert code == 1 and says in err and "Traceback" not in err
