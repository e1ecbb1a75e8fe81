"""Large vocabularies: the adaptive softmax head gives exact full-vocabulary probabilities (for eval and
sampling), its training loss is the cross-entropy of those probabilities, and it is chosen automatically
above ADAPTIVE_MIN_VOCAB characters, trained, saved, evaluated and sampled like any other model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from charrnn import checkpoint
from charrnn import loop as train_mod
from charrnn.config import ADAPTIVE_MIN_VOCAB, ModelConfig, SampleConfig, auto_cutoffs
from charrnn.evaluate import evaluate
from charrnn.model import CharRNN
from charrnn.sample import generate, naive_generate


def adaptive_model(vocab: int = 1200, cell: str = "lstm") -> CharRNN:
    torch.manual_seed(0)
    cutoffs = auto_cutoffs(vocab)
    cfg = ModelConfig(model=cell, vocab_size=vocab, layers=2, hidden=24, embed=8, dropout=0.0, cutoffs=cutoffs)
    model = CharRNN(cfg).eval()
    counts = torch.from_numpy(np.random.default_rng(0).zipf(1.5, vocab).astype(np.int64))
    model.set_frequency_order(counts)
    return model


def test_auto_cutoffs_only_above_the_threshold():
    assert auto_cutoffs(ADAPTIVE_MIN_VOCAB - 1) == () and auto_cutoffs(65) == ()
    assert auto_cutoffs(1200) == (500,) and auto_cutoffs(6000) == (500, 2000)


def test_frequency_order_puts_the_most_frequent_character_in_class_0():
    model = adaptive_model(1200)
    counts = torch.ones(1200, dtype=torch.long)
    counts[777], counts[5] = 100, 50
    model.set_frequency_order(counts)
    assert model.rank[777] == 0 and model.rank[5] == 1 and sorted(model.rank.tolist()) == list(range(1200))


def test_logits_are_exact_log_probabilities_and_the_loss_is_their_cross_entropy():
    model = adaptive_model()
    ids = torch.randint(0, 1200, (3, 17))
    targets = torch.randint(0, 1200, (3, 17))
    with torch.no_grad():
        log_p, _ = model(ids)  # (3, 17, V)
        loss, _ = model(ids, None, targets)
    torch.testing.assert_close(log_p.exp().sum(-1), torch.ones(3, 17), atol=1e-5, rtol=0)
    want = F.cross_entropy(log_p.flatten(0, 1), targets.flatten())
    torch.testing.assert_close(loss, want, atol=1e-5, rtol=1e-5)
    # and the probabilities are the head's own, column for column: class rank[c] is character c
    flat = model.rnn(model.embed(ids))[0].reshape(-1, 24)
    torch.testing.assert_close(log_p.flatten(0, 1)[:, 9], model.head.log_prob(flat)[:, model.rank[9]])


def test_chunked_with_state_equals_whole_sequence():
    model = adaptive_model()
    ids = torch.randint(0, 1200, (2, 40))
    with torch.no_grad():
        whole, _ = model(ids)
        a, state = model(ids[:, :15])
        b, _ = model(ids[:, 15:], state)
    torch.testing.assert_close(torch.cat([a, b], dim=1), whole, atol=1e-5, rtol=1e-5)


@pytest.fixture
def cjk_corpus(tmp_path, monkeypatch):
    """1,200 distinct CJK characters with Zipf-like frequencies, in short 'lines' of repeated phrases."""
    monkeypatch.setenv("CHARRNN_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(1)
    chars = np.array([chr(0x4E00 + i) for i in range(1200)])
    phrases = ["".join(chars[rng.zipf(1.3, 7) % 1200]) for _ in range(60)]
    text = "".join(chars)  # every character at least once
    while len(text) < 40_000:
        text += "".join(rng.choice(phrases, 4)) + "\n"
    p = tmp_path / "cjk.txt"
    p.write_text(text, encoding="utf-8")
    return p


def test_a_large_vocabulary_trains_saves_scores_and_samples_with_an_adaptive_head(cjk_corpus, tmp_path):
    flags = dict(batch_size=8, seq_len=32, eval_every=40, lr=1e-2, warmup_steps=5, device="cpu", precision="fp32")
    result = train_mod.train(
        cjk_corpus,
        dict(model="lstm", hidden=32, embed=16, layers=1, dropout=0.0),
        {**flags, "steps": 80},
        out=tmp_path / "run",
    )
    ckpt = checkpoint.load(tmp_path / "run" / "best.pt")
    assert ckpt["model_config"]["cutoffs"] == [500] or tuple(ckpt["model_config"]["cutoffs"]) == (500,)
    assert result.best_val < 0.75 * math.log(1200)
    model, vocab = checkpoint.build_model(ckpt)
    model.eval()
    # the checkpoint's model scores its validation split exactly as training did
    from charrnn import data

    _, val = data.split(data.read_corpus(cjk_corpus).ids, 0.1)
    assert evaluate(model, val).nats_per_char == pytest.approx(result.best_val, abs=1e-5)
    cfg = SampleConfig(length=30, seed=4)
    text = "".join(c[0] for c in generate(model, vocab, cfg))
    assert len(text) == 30 and text == "".join(c[0] for c in naive_generate(model, vocab, cfg))


def test_the_adaptive_head_trains_and_scores_under_bf16_autocast():
    """What a CPU with native bf16 (and a GPU) runs: torch's adaptive softmax mixed bf16 cluster outputs into
    an fp32 tensor under autocast and index_copy_ refused it (a traceback on the first probe step of a CJK
    corpus on the AVX-512 BF16 machine). The head now runs in fp32 inside the autocast. A GRU body: oneDNN has
    no bf16 LSTM on an AVX2 CPU, and the head is what is tested."""
    model = adaptive_model(2500, "gru").train()
    ids = torch.randint(0, 2500, (3, 17))  # (B, T) reaching the head and both tail clusters
    targets = torch.randint(0, 2500, (3, 17))  # (B, T)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = model(ids, None, targets)
        log_p, _ = model.eval()(ids)  # (B, T, V)
    loss.backward()
    assert loss.dtype == torch.float32 and math.isfinite(loss.item())
    assert model.embed.weight.grad is not None
    assert log_p.dtype == torch.float32
    np.testing.assert_allclose(log_p.detach().exp().sum(-1).numpy(), 1.0, atol=1e-4)
