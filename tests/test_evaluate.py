"""Evaluation: every character after the first scored once, matching a whole-sequence reference."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from charrnn.config import ModelConfig
from charrnn.evaluate import evaluate
from charrnn.model import CharRNN


@pytest.fixture
def model():
    torch.manual_seed(0)
    return CharRNN(ModelConfig(model="lstm", vocab_size=9, embed=8, hidden=16, layers=2)).eval()


@torch.no_grad()
def reference_nats(model, ids):
    x = torch.from_numpy(ids[None, :-1])
    logits, _ = model(x)
    return float(F.cross_entropy(logits[0], torch.from_numpy(ids[1:]), reduction="sum"))


def test_single_stream_in_windows_equals_one_whole_pass(model):
    ids = np.random.default_rng(0).integers(0, 9, 1001)
    result = evaluate(model, ids, streams=1, window=64)
    assert result.chars == 1000
    assert result.nats == pytest.approx(reference_nats(model, ids), rel=1e-5)


def test_streams_score_every_character_and_only_rows_start_cold(model):
    ids = np.random.default_rng(1).integers(0, 9, 1003)
    result = evaluate(model, ids, streams=4, window=50)
    assert result.chars == 1002
    length = 1002 // 4  # 250 per row, tail of 2 continues the last row
    expected = sum(reference_nats(model, ids[r * length : (r + 1) * length + 1]) for r in range(3))
    expected += reference_nats(model, ids[3 * length :])
    assert result.nats == pytest.approx(expected, rel=1e-5)


def test_perplexity_is_exp_nats_and_bits_are_nats_over_ln2(model):
    result = evaluate(model, np.arange(200) % 9)
    assert result.perplexity == pytest.approx(math.exp(result.nats_per_char))
    assert result.bits_per_char == pytest.approx(result.nats_per_char / math.log(2))
    assert model.training is False


def test_restores_training_mode(model):
    model.train()
    evaluate(model, np.arange(50) % 9)
    assert model.training


def test_eval_of_the_bundled_model_finds_its_shipped_corpus(run_cli, tmp_path):
    """The bundled model records its corpus by name only; eval without FILE still finds the shipped copy."""
    import json

    from charrnn import checkpoint

    code, out, err = run_cli("eval", "-c", checkpoint.BUNDLED, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["text"] == "validation split of 2 files (last 10% of each)"
    # best_val was measured in the training run's precision and eval scores in fp32: equal for the current
    # model (made in fp32 on an AVX2 CPU), 4e-4 apart for one made under bf16 autocast; another split of the
    # text would differ by far more.
    assert report["nats_per_char"] == pytest.approx(checkpoint.load(checkpoint.BUNDLED)["best_val"], abs=2e-3)


def test_eval_on_a_cpu_is_fp32_even_where_the_cpu_has_native_bf16(tiny_run, tmp_path, monkeypatch):
    """A reported figure must not depend on the CPU's bf16: `charrnn eval` scores in fp32 on every CPU, so it
    equals an fp32 pass (bf16 autocast moved it by ~5e-5 on an AVX-512 BF16 CPU)."""
    from charrnn import checkpoint, devices
    from charrnn.evaluate import evaluate_checkpoint

    monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda: True)
    text = "".join(np.random.default_rng(3).choice(list("abcde \n"), 4_000))
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    report = evaluate_checkpoint(tiny_run.run_dir / "best.pt", tmp_path / "t.txt", "cpu")
    model, vocab = checkpoint.build_model(checkpoint.load(tiny_run.run_dir / "best.pt"))
    want = evaluate(model, vocab.encode(text), "cpu", torch.float32)
    assert report["nats_per_char"] == pytest.approx(want.nats_per_char, abs=1e-9)
