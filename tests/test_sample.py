"""Tests for charrnn.sample: the fast stepper against the torch model, generate against references, and
the sampler's promises about filtered characters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from charrnn.config import ModelConfig, SampleConfig
from charrnn.errors import CharRNNError
from charrnn.fastrnn import FastRNN, Sampler, _onednn_ok
from charrnn.model import CharRNN
from charrnn.sample import fast_rnn, generate, naive_generate
from charrnn.vocab import Vocab

torch.set_num_threads(1)

VOCAB = Vocab("\n abcdefghi")  # 11 characters, newline included
KINDS = ("lstm", "gru", "rnn")


def make_model(kind: str = "lstm", tie: bool = False, layers: int = 2, seed: int = 0) -> CharRNN:
    torch.manual_seed(seed)
    embed, hidden = (16, 16) if tie else (8, 16)
    cfg = ModelConfig(
        model=kind, vocab_size=len(VOCAB), embed=embed, hidden=hidden, layers=layers, dropout=0.3, tie_weights=tie
    )
    model = CharRNN(cfg)
    with torch.no_grad():  # default init gives near-uniform outputs; sharpen them so sampling has structure
        for p in model.parameters():
            p.mul_(3.0)
    return model.eval()


def controlled_model(probs: np.ndarray) -> CharRNN:
    """Whatever the state, the next character has distribution ``probs``: the head's weights are zero."""
    model = make_model()
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.as_tensor(np.log(probs)))
    return model


def text(model: CharRNN, cfg: SampleConfig, vocab: Vocab = VOCAB, fn=generate) -> list[str]:
    """The ``cfg.num`` samples as strings."""
    steps = list(fn(model, vocab, cfg))
    return ["".join(step[i] for step in steps) for i in range(cfg.num)]


# --- the stepper ------------------------------------------------------------------------------------------


BACKENDS = ["numpy", pytest.param("onednn", marks=pytest.mark.skipif(not _onednn_ok(), reason="no oneDNN"))]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch, tie, layers", [(1, False, 2), (3, False, 3), (2, True, 2), (1, False, 1)])
def test_stepper_matches_torch(kind: str, backend: str, batch: int, tie: bool, layers: int) -> None:
    model = make_model(kind, tie=tie, layers=layers)
    ids = torch.randint(0, len(VOCAB), (batch, 9))  # (B, T)
    state = tuple(torch.randn_like(s) for s in model.init_state(batch))  # a carried, non-zero state
    with torch.no_grad():
        want, want_state = model(ids, state)  # (B, T, V)
    rnn = fast_rnn(model, backend=backend)
    kept = tuple(s.clone() for s in state)
    rnn.reset(tuple(s.numpy() for s in state))
    assert rnn.active == backend
    for t in range(ids.shape[1]):
        got = rnn.step(ids[:, t].numpy())  # (B, V)
        np.testing.assert_allclose(got, want[:, t].numpy(), atol=2e-5, rtol=1e-5)
    for got_s, want_s in zip(rnn.state(), want_state, strict=True):
        np.testing.assert_allclose(got_s, want_s.numpy(), atol=2e-5, rtol=1e-5)
    assert all(torch.equal(s, k) for s, k in zip(state, kept))  # stepping copied the state, never wrote it


def test_stepper_reset_resizes_batch_and_picks_backend() -> None:
    model = make_model("gru")
    rnn = fast_rnn(model)
    for batch in (4, 1, 4):
        rnn.reset_zero(batch)
        assert rnn.step(np.zeros(batch, dtype=np.int64)).shape == (batch, len(VOCAB))
        assert rnn.state()[0].shape == (2, batch, 16)
        assert rnn.active == ("numpy" if batch < FastRNN.ONEDNN_MIN_BATCH or not _onednn_ok() else "onednn")


# --- generate ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("num", [1, 3])  # the numpy and the oneDNN backend
def test_generate_matches_naive_reference(kind: str, num: int) -> None:
    model = make_model(kind)
    cfg = SampleConfig(temp=1.0, length=40, prime="abc", seed=3, num=num)
    assert text(model, cfg) == text(model, cfg, fn=naive_generate)


def test_seed_repeats_and_differs() -> None:
    model = make_model()
    cfg = SampleConfig(temp=1.0, length=60, seed=7, num=2)
    first = text(model, cfg)
    assert text(model, cfg) == first
    assert text(model, SampleConfig(temp=1.0, length=60, seed=8, num=2)) != first
    assert first[0] != first[1]  # the samples of one batch are independent


@pytest.mark.parametrize("kind", KINDS)
def test_temp_zero_is_greedy(kind: str) -> None:
    model = make_model(kind)
    prime = "hi "
    ids = list(VOCAB.encode(prime))
    with torch.no_grad():
        for _ in range(30):  # re-run the whole history each step: no state carry in the reference
            logits, _ = model(torch.tensor([ids]))
            ids.append(int(logits[0, -1].argmax()))
    want = VOCAB.decode(ids[len(prime) :])
    cfg = SampleConfig(temp=0.0, length=30, prime=prime, top_k=2, top_p=0.1, num=2)  # filters are ignored
    assert text(model, cfg) == [want, want]
    tiny = SampleConfig(temp=5e-324, length=30, prime=prime, seed=0)  # 1 / temp overflows to inf
    assert text(model, tiny) == [want]


PROBS = np.array([0.08, 0.01, 0.30, 0.005, 0.15, 0.25, 0.02, 0.10, 0.005, 0.05, 0.03])  # sums to 1


@pytest.mark.parametrize(
    "top_k, top_p, allowed",
    [
        (3, None, {2, 5, 4}),
        (None, 0.6, {2, 5, 4}),  # 0.30 + 0.25 = 0.55 is short of 0.6, so 0.15 joins
        (None, 0.5, {2, 5}),
        (3, 0.6, {2, 5}),  # top-p applies to what top-k left: 0.30 / 0.70 + 0.25 / 0.70 > 0.6
        (1, None, {2}),
        (None, 0.01, {2}),  # the most likely always stays
    ],
)
def test_filters_never_emit_excluded(top_k: int | None, top_p: float | None, allowed: set[int]) -> None:
    model = controlled_model(PROBS)
    cfg = SampleConfig(temp=1.0, length=50, top_k=top_k, top_p=top_p, seed=0, num=40)
    seen = {VOCAB.chars.index(c) for sample in text(model, cfg) for c in sample}
    assert seen == allowed  # nothing outside, and everything inside turns up in 2000 draws


def test_frequencies_follow_temperature() -> None:
    model = controlled_model(PROBS)
    cfg = SampleConfig(temp=0.5, length=100, seed=1, num=100)
    counts = np.bincount([VOCAB.chars.index(c) for s in text(model, cfg) for c in s], minlength=len(VOCAB))
    want = PROBS**2 / (PROBS**2).sum()  # temperature 0.5 squares the probabilities
    np.testing.assert_allclose(counts / counts.sum(), want, atol=0.02)


@pytest.mark.parametrize("kind", KINDS)
def test_filters_against_reference_distribution(kind: str) -> None:
    """At every step of a real model, the emitted character is in the set the torch logits allow."""
    model, temp, top_k, top_p, slack = make_model(kind), 1.5, 4, 0.7, 1e-4
    prime = "ab"
    cfg = SampleConfig(temp=temp, length=25, prime=prime, top_k=top_k, top_p=top_p, seed=5, num=4)
    for sample in text(model, cfg):
        ids = list(VOCAB.encode(prime))
        for char in sample:
            with torch.no_grad():
                logits = model(torch.tensor([ids]))[0][0, -1].double().numpy() / temp  # (V,)
            kth = np.sort(logits)[-top_k]
            p = np.where(logits >= kth - slack, np.exp(logits - logits.max()), 0.0)
            p /= p.sum()
            ahead = np.array([p[p > q].sum() for q in p])  # mass of the more likely characters
            allowed = (p > 0) & (ahead < top_p + slack)
            assert allowed[VOCAB.chars.index(char)]
            ids.append(VOCAB.chars.index(char))


class FixedDraws:
    """Stands in for the numpy Generator to pin the uniform draw at the ends of [0, 1)."""

    def __init__(self, u: float) -> None:
        self.u = u

    def random(self, n: int) -> np.ndarray:
        return np.full(n, self.u)


@pytest.mark.parametrize("u", [0.0, np.nextafter(1.0, 0.0)])
@pytest.mark.parametrize(
    "top_k, top_p, allowed",
    [(None, None, {1, 2, 3, 4}), (2, None, {1, 2}), (None, 0.5, {1}), (3, 0.9, {1, 2})],
)
def test_sampler_extreme_draws_stay_inside_the_filter(
    u: float, top_k: int | None, top_p: float | None, allowed: set[int]
) -> None:
    # Probabilities 0 (exp underflows), .72, .26, .013, .0007: id 0 can never be drawn, filters or not.
    logits = np.array([[-1000.0, 5.0, 4.0, 1.0, -2.0]] * 2, dtype=np.float32)
    sampler = Sampler(SampleConfig(temp=1.0, top_k=top_k, top_p=top_p), vocab_size=5)
    sampler.rng = FixedDraws(u)
    assert set(sampler(logits).tolist()) <= allowed


def test_unknown_prime_characters_are_skipped() -> None:
    model = make_model()
    greedy = lambda prime: text(model, SampleConfig(temp=0.0, length=20, prime=prime))  # noqa: E731
    assert greedy("xa\u2603b!z") == greedy("ab")
    assert greedy("xyz") == greedy("\n") == greedy("")  # nothing known left: warm on a newline


def test_empty_prime_without_newline_warms_on_id_zero() -> None:
    vocab = Vocab("abcdefghijk")
    model = make_model()
    unknown_only = SampleConfig(temp=0.0, length=20, prime="\n?")  # neither character is in this vocabulary
    first_id = SampleConfig(temp=0.0, length=20, prime="a")
    assert text(model, unknown_only, vocab=vocab) == text(model, first_id, vocab=vocab)


def test_length_zero_yields_nothing() -> None:
    assert list(generate(make_model(), VOCAB, SampleConfig(length=0))) == []


def test_num_three_yields_lists_of_three() -> None:
    steps = list(generate(make_model(), VOCAB, SampleConfig(length=5, num=3, seed=0)))
    assert len(steps) == 5
    assert all(len(step) == 3 and all(c in VOCAB for c in step) for step in steps)


def test_mismatched_vocab_fails_at_the_call() -> None:
    with pytest.raises(CharRNNError, match="11 characters"):
        generate(make_model(), Vocab("abc"), SampleConfig())


def test_generation_leaks_no_mode() -> None:
    """Between characters the caller's world is untouched: training mode kept, gradients still on."""
    model = make_model().train()
    for _ in generate(model, VOCAB, SampleConfig(length=3, seed=0)):
        assert torch.is_grad_enabled()
        assert model.training
    for _ in naive_generate(model, VOCAB, SampleConfig(length=3, seed=0)):
        assert torch.is_grad_enabled()
        assert model.training


def test_the_one_row_draw_is_the_general_draw() -> None:
    """The fast path for one row without filters gives, draw for draw, what the general path gives."""
    rng = np.random.default_rng(0)
    for temp in (0.5, 1.0, 1.7):
        fast, general = (Sampler(SampleConfig(temp=temp, seed=9), vocab_size=70) for _ in range(2))
        for _ in range(2000):
            logits = (rng.standard_normal((1, 70)) * 4).astype(np.float32)  # (1, V)
            assert fast(logits).tolist() == general._rows_at_once(logits).tolist()
