"""CharRNN: Embedding -> stacked nn.LSTM / nn.GRU / nn.RNN(tanh) -> Linear. Pure: no I/O, no characters.

All three cells share one interface: ``forward(ids, state) -> (logits, state)`` where ``state`` is always
a tuple of (layers, B, H) tensors — ``(h, c)`` for LSTM, ``(h,)`` for GRU and RNN — so training,
sampling and checkpointing never branch on the cell type.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from charrnn.config import ModelConfig

State = tuple[torch.Tensor, ...]

CELLS = {
    "lstm": nn.LSTM,
    "gru": nn.GRU,
    "rnn": partial(nn.RNN, nonlinearity="tanh"),
}


class CharRNN(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed)
        self.drop = nn.Dropout(cfg.dropout)
        self.rnn = CELLS[cfg.model](
            cfg.embed,
            cfg.hidden,
            num_layers=cfg.layers,
            dropout=cfg.dropout if cfg.layers > 1 else 0.0,
            batch_first=True,
        )
        self.head = nn.Linear(cfg.hidden, cfg.vocab_size)
        if cfg.tie_weights:
            self.head.weight = self.embed.weight
        if cfg.model == "lstm":
            self._forget_bias_one()

    @torch.no_grad()
    def _forget_bias_one(self) -> None:
        """Start LSTM forget gates open (bias 1) so gradients reach far back early in training."""
        h = self.cfg.hidden
        for layer in range(self.cfg.layers):
            getattr(self.rnn, f"bias_ih_l{layer}")[h : 2 * h].fill_(1.0)  # gate order i, f, g, o
            getattr(self.rnn, f"bias_hh_l{layer}")[h : 2 * h].fill_(0.0)

    def init_state(self, batch: int, device: torch.device | str = "cpu") -> State:
        zeros = torch.zeros(self.cfg.layers, batch, self.cfg.hidden, device=device)  # (L, B, H)
        return (zeros, zeros.clone()) if self.cfg.model == "lstm" else (zeros,)

    def forward(self, ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        x = self.drop(self.embed(ids))  # (B, T, E)
        if state is not None:
            state = state if self.cfg.model == "lstm" else state[0]
        out, new_state = self.rnn(x, state)  # (B, T, H)
        logits = self.head(self.drop(out))  # (B, T, V)
        return logits, (tuple(new_state) if isinstance(new_state, tuple) else (new_state,))


def detach_state(state: State) -> State:
    """Cut the graph at the window boundary: truncated BPTT keeps the values, not the history."""
    return tuple(s.detach() for s in state)


def count_parameters(model: nn.Module, non_embedding: bool = False) -> int:
    seen = {id(p): p for p in model.parameters()}  # tied weights count once
    total = sum(p.numel() for p in seen.values())
    if non_embedding and isinstance(model, CharRNN) and not model.cfg.tie_weights:
        total -= model.embed.weight.numel()
    return total
