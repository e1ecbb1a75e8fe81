"""CharRNN: Embedding -> stacked nn.LSTM / nn.GRU / nn.RNN(tanh) -> Linear. Pure: no I/O, no characters.

All three cells share one interface: ``forward(ids, state) -> (logits, state)`` where ``state`` is always
a tuple of (layers, B, H) tensors — ``(h, c)`` for LSTM, ``(h,)`` for GRU and RNN — so training,
sampling and checkpointing never branch on the cell type.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from charrnn import grutrain
from charrnn.config import ModelConfig
from charrnn.devices import full_precision
from charrnn.dropout import dropout

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
        self.drop = nn.Dropout(0.0)
        self.rnn = CELLS[cfg.model](cfg.embed, cfg.hidden, num_layers=cfg.layers, batch_first=True)
        self.set_dropout(cfg.dropout or 0.0)  # None (not chosen yet, see config.auto_dropout): none
        if cfg.cutoffs:  # classes are frequency ranks: `rank` maps a character id to its class, `by_rank` back
            self.head = nn.AdaptiveLogSoftmaxWithLoss(cfg.hidden, cfg.vocab_size, list(cfg.cutoffs), div_value=4.0)
            self.register_buffer("rank", torch.arange(cfg.vocab_size))
        else:
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

    def set_dropout(self, p: float) -> None:
        """Change the dropout rate in place: it is a training setting, not a weight, so the trainer may
        settle it once it knows how long the run will be."""
        self.drop.p = p
        self.rnn.dropout = p if self.cfg.layers > 1 else 0.0  # between layers only; read at every forward

    @property
    def adaptive(self) -> bool:
        return bool(self.cfg.cutoffs)

    @torch.no_grad()
    def set_frequency_order(self, counts: torch.Tensor) -> None:
        """Rank the characters by how often the training text uses them (most frequent first), so the
        adaptive softmax keeps the frequent ones in its cheap head. Set once, before training."""
        order = torch.argsort(torch.as_tensor(counts), descending=True, stable=True)  # (V,) ids by frequency
        self.rank[order] = torch.arange(len(order), device=self.rank.device)

    def init_state(self, batch: int, device: torch.device | str = "cpu") -> State:
        zeros = torch.zeros(self.cfg.layers, batch, self.cfg.hidden, device=device)  # (L, B, H)
        return (zeros, zeros.clone()) if self.cfg.model == "lstm" else (zeros,)

    def forward(
        self, ids: torch.Tensor, state: State | None = None, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State]:
        """(logits, state); with `targets`, (mean loss over the window, state) instead.

        An adaptive head returns exact log-probabilities of the whole vocabulary as its logits (softmax
        and cross-entropy read them as they read logits), but trains through its loss alone, which never
        builds the full (B, T, V) output: that is where its speed comes from."""
        x = self._drop(self.embed(ids))  # (B, T, E)
        if state is not None:
            state = state if self.cfg.model == "lstm" else state[0]
        dropped = self._dropped_weights() if self.training and self.cfg.weight_drop > 0 else None
        kernel = grutrain.kernel_for(x.device) if self.training and self.cfg.model == "gru" else None
        if kernel is not None:
            out, new_state = grutrain.gru_forward(self.rnn, x, state, dropped, kernel)  # (B, T, H): nn.GRU's, faster
        elif dropped:
            out, new_state = functional_call(self.rnn, dropped, (x, state))  # (B, T, H)
        else:
            out, new_state = self.rnn(x, state)  # (B, T, H)
        out = self._drop(out)  # (B, T, H)
        new_state = tuple(new_state) if isinstance(new_state, tuple) else (new_state,)
        if not self.adaptive:
            logits = self.head(out)  # (B, T, V)
            if targets is None:
                return logits, new_state
            return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten()), new_state
        flat = out.reshape(-1, out.shape[-1]).float()  # (B*T, H)
        with full_precision(flat.device):
            if targets is not None:
                return self.head(flat, self.rank[targets.flatten()]).loss, new_state
            log_p = self.head.log_prob(flat)[:, self.rank]  # (B*T, V) in character-id order
        return log_p.view(*out.shape[:2], -1), new_state  # (B, T, V)

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        """Dropout on the embeddings and the top layer's output. Locked (variational, Gal & Ghahramani
        2016): one mask per stream for the whole window, so a unit is silenced for a stretch of text
        rather than flickering from character to character."""
        p = self.drop.p
        if not (self.training and self.cfg.locked_dropout and p > 0):
            return dropout(x, p, self.training)  # F.dropout's, faster on a CPU
        mask = x.new_empty(x.shape[0], 1, x.shape[2]).bernoulli_(1 - p) / (1 - p)  # (B, 1, D)
        return x * mask  # (B, T, D)

    def _dropped_weights(self) -> dict[str, torch.Tensor]:
        """DropConnect on the hidden-to-hidden matrices (Merity et al. 2017, AWD-LSTM): one mask per
        window, shared by every time step, so the recurrence is regularised without leaving the fused
        cuDNN/oneDNN kernel; the raw weights stay the parameters and get the gradients."""
        return {
            name: F.dropout(w, self.cfg.weight_drop) if name.startswith("weight_hh") else w
            for name, w in self.rnn.named_parameters()
        }


def detach_state(state: State) -> State:
    """Cut the graph at the window boundary: truncated BPTT keeps the values, not the history."""
    return tuple(s.detach() for s in state)


def count_parameters(model: nn.Module, non_embedding: bool = False) -> int:
    seen = {id(p): p for p in model.parameters()}  # tied weights count once
    total = sum(p.numel() for p in seen.values())
    if non_embedding and isinstance(model, CharRNN) and not model.cfg.tie_weights:
        total -= model.embed.weight.numel()
    return total
