"""Generation from a torch model: warm the state on the prime text, then sample one character at a time
and feed it back.

The per-character loop is the hot path. Calling ``nn.LSTM`` once per character pays torch's per-op dispatch
for every gate (about 4 ms a step for a 2x512 LSTM on a 2-core CPU), so on a CPU the loop runs on
``fastrnn.FastRNN``: the weights rearranged once, and each step a few matrix products (OpenBLAS through numpy
for one sample, torch's oneDNN linear for a batch) plus in-place numpy ufuncs for the gates. It is the same
numpy loop that samples from a .safetensors file without torch, so both give the same text for a seed.
``naive_generate`` keeps the plain ``model(ids, state)`` loop as the reference that tests and benchmarks
compare against, and it is also the loop for a model on a GPU or with an adaptive softmax.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from charrnn import fastrnn
from charrnn.config import SampleConfig
from charrnn.errors import CharRNNError
from charrnn.fastrnn import FastRNN, Sampler, prime_ids
from charrnn.model import CharRNN, State
from charrnn.vocab import Vocab

__all__ = ["FastRNN", "Sampler", "eval_forward", "fast_rnn", "generate", "naive_generate", "prime_ids", "warm"]


def generate(model: CharRNN, vocab: Vocab, cfg: SampleConfig) -> Iterator[list[str]]:
    """Warm the state on cfg.prime (characters not in vocab are skipped), then yield, once per generated
    step, a list of cfg.num characters (one per independent sample), cfg.length times.

    A mismatched vocabulary raises here, at the call, rather than at the first ``next``.
    """
    _check_vocab(model, vocab)
    on_cpu = _device(model).type == "cpu"  # numpy cannot reach GPU memory: there, step the model where it lives
    if on_cpu and not model.adaptive:  # FastRNN has no adaptive softmax: torch computes its exact log-probs
        return fastrnn.generate(fast_rnn(model), vocab, cfg)
    return fastrnn.generate(_TorchStepper(model), vocab, cfg)


def numpy_weights(model: CharRNN) -> dict[str, np.ndarray]:
    """The model's state_dict as float32 numpy arrays on the CPU: what a .safetensors weights file holds."""
    return {k: v.detach().to("cpu", torch.float32).numpy() for k, v in model.state_dict().items()}


def fast_rnn(model: CharRNN, backend: str = "auto") -> FastRNN:
    return FastRNN(model.cfg, numpy_weights(model), backend)


def naive_generate(model: CharRNN, vocab: Vocab, cfg: SampleConfig) -> Iterator[list[str]]:
    """The reference loop: one ``model(ids, state)`` call per character, with the same prime and sampler.

    Kept as the yardstick for ``generate``: same seed, same text (up to float rounding), a fraction of the
    speed on CPU.
    """
    _check_vocab(model, vocab)
    return fastrnn.generate(_TorchStepper(model), vocab, cfg)


class _TorchStepper:
    """One ``model(ids, state)`` call per character, on the model's own device: the reference loop. It
    warms on the prime with the model's own forward in one call; the loop around it is fastrnn's."""

    def __init__(self, model: CharRNN) -> None:
        self.model, self.device = model, _device(model)
        self.state: State | None = None

    def warm(self, ids: np.ndarray, num: int) -> np.ndarray:
        logits, self.state = warm(self.model, ids, num)  # (num, V), (L, num, H) each
        return logits

    def step(self, ids: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(ids, device=self.device).view(-1, 1)  # (N, 1)
        out, self.state = eval_forward(self.model, x, self.state)  # (N, 1, V)
        return out[:, -1].float().cpu().numpy()  # (N, V)


def warm(model: CharRNN, ids: np.ndarray, num: int) -> tuple[np.ndarray, State]:
    """Run the prime through the model's own forward in one call and copy the result into ``num`` rows:
    every sample starts from the same state and diverges only through its own draws."""
    x = torch.as_tensor(ids, dtype=torch.long, device=_device(model)).view(1, -1)  # (1, T)
    out, state = eval_forward(model, x, None)  # (1, T, V)
    last = out[0, -1].float().cpu().numpy()  # (V,)
    logits = np.repeat(last[None, :], num, axis=0)  # (N, V)
    return logits, tuple(s.expand(-1, num, -1).contiguous() for s in state)  # (L, N, H) each


def eval_forward(model: CharRNN, x: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
    """One forward with dropout off and no graph, restoring the caller's mode at once.

    Neither ``no_grad`` nor ``eval`` may stay in force across a ``yield``: grad mode is thread-local, so it
    would leak into whatever the caller runs between characters.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(x, state)
    finally:
        model.train(was_training)


def _device(model: CharRNN) -> torch.device:
    return next(model.parameters()).device


def _check_vocab(model: CharRNN, vocab: Vocab) -> None:
    if model.cfg.vocab_size != len(vocab):
        raise CharRNNError(
            f"the model knows {model.cfg.vocab_size} characters but the vocabulary has {len(vocab)}: "
            "sample with the vocabulary stored in the model's own checkpoint"
        )
