"""--init: a new run from a trained model. Its vocabulary grows by the new text's characters without
changing what it predicts for the old ones at step 0; it trains; info shows where it started; its shape
cannot be changed by flags; it resumes like any run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import make_text

from charrnn import checkpoint, finetune
from charrnn import loop as train_mod
from charrnn.config import FINETUNE_WEIGHT_DECAY, ModelConfig, TrainConfig
from charrnn.errors import CharRNNError
from charrnn.model import CharRNN
from charrnn.vocab import Vocab

MODEL = dict(model="lstm", hidden=32, embed=16, layers=2, dropout=0.1)
TRAIN = dict(batch_size=8, seq_len=24, eval_every=10, lr=2e-2, warmup_steps=5, device="cpu", precision="fp32", seed=3)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_extending_the_vocabulary_keeps_the_old_predictions_at_step_0(cell):
    torch.manual_seed(0)
    old = Vocab.from_text("abc de\n")
    model = CharRNN(ModelConfig(model=cell, vocab_size=len(old), layers=2, hidden=16, embed=8)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)  # a "trained" model, not the initial one
    new = finetune.merged_vocab(old, "ABé\u4e00ab")  # new characters before, between and after the old ones
    grown = finetune.extend(model, old, new).eval()
    ids = torch.randint(0, len(old), (3, 20))
    at = torch.as_tensor(new.encode(old.chars))  # where each old character sits now
    with torch.no_grad():
        p_old = torch.softmax(model(ids)[0], -1)  # (3, 20, V_old)
        p_new = torch.softmax(grown(at[ids])[0], -1)  # (3, 20, V_new)
    torch.testing.assert_close(p_new[..., at], p_old, atol=1e-6, rtol=0)
    fresh = [i for i in range(len(new)) if new.chars[i] not in old.chars]
    assert len(fresh) == 4 and p_new[..., fresh].max() < 1e-6


@pytest.fixture
def corpora(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARRNN_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text(make_text(20_000, seed=1), encoding="utf-8")
    rng = np.random.default_rng(2)
    lines = [
        f"Item {int(n)}: {w} costs {int(n) * 3}%"
        for n, w in zip(rng.integers(0, 99, 600), rng.choice(["bread", "salt", "wine", "cloth"], 600))
    ]
    b.write_text("\n".join(lines) + "\n", encoding="utf-8")  # digits and % the first model never saw
    return a, b


def test_init_trains_a_new_run_from_a_model_with_its_vocabulary_grown(corpora, tmp_path, run_cli):
    a, b = corpora
    train_mod.train(a, MODEL, {**TRAIN, "steps": 40}, out=tmp_path / "base")
    base = checkpoint.load(tmp_path / "base" / "best.pt")
    result = train_mod.train(b, {}, {**TRAIN, "steps": 40}, out=tmp_path / "tuned", init=tmp_path / "base")
    tuned = checkpoint.load(tmp_path / "tuned" / "best.pt")
    assert set(base["vocab"]) < set(tuned["vocab"]) and "7" in tuned["vocab"] and "%" in tuned["vocab"]
    assert tuned["model_config"]["hidden"] == 32 and tuned["train_config"]["warmup_steps"] == 5
    assert tuned["init"]["step"] == 40 and tuned["init"]["corpus"] == "a.txt"
    rows = [json.loads(r) for r in (tmp_path / "tuned" / "metrics.jsonl").read_text().splitlines()]
    assert result.best_val < rows[0]["val_loss"] and result.best_val < math.log(len(tuned["vocab"]))
    code, out, _ = run_cli("info", "-c", tmp_path / "tuned")
    assert code == 0 and "started from" in out and "a.txt" in out
    resumed = train_mod.train(None, {}, {"steps": 50}, out=tmp_path / "tuned", resume=True)
    assert resumed.step == 50
    decays = [c["train_config"]["weight_decay"] for c in (base, tuned, checkpoint.load(tmp_path / "tuned" / "last.pt"))]
    assert decays == [TrainConfig.weight_decay, FINETUNE_WEIGHT_DECAY, FINETUNE_WEIGHT_DECAY]
    assert FINETUNE_WEIGHT_DECAY < TrainConfig.weight_decay  # decay pulls the start model towards zero
    mine = train_mod.train(
        b, {}, {**TRAIN, "steps": 2, "weight_decay": 0.2}, out=tmp_path / "mine", init=tmp_path / "base"
    )
    assert mine.step == 2 and checkpoint.load(tmp_path / "mine" / "last.pt")["train_config"]["weight_decay"] == 0.2


def test_init_refuses_a_shape_flag_that_contradicts_the_model_and_resume(corpora, tmp_path):
    a, b = corpora
    train_mod.train(a, MODEL, {**TRAIN, "steps": 5}, out=tmp_path / "base")
    with pytest.raises(CharRNNError, match="--hidden 64 contradicts the model given to --init"):
        train_mod.train(b, {"hidden": 64}, {**TRAIN, "steps": 5}, out=tmp_path / "x", init=tmp_path / "base")
    with pytest.raises(CharRNNError, match="--init starts a new run and --resume continues one"):
        train_mod.train(b, {}, {"steps": 9}, out=tmp_path / "base", resume=True, init=tmp_path / "base")


def test_init_from_the_bundled_model_on_the_command_line(corpora, run_cli, tmp_path):
    _, b = corpora
    c = tmp_path / "c.txt"  # the bundled model knows all of ASCII: the euro sign is new to it
    c.write_text(b.read_text(encoding="utf-8").replace("%", " \u20ac"), encoding="utf-8")
    code, _, err = run_cli(
        "train",
        c,
        "--init",
        "bundled",
        "--steps",
        "3",
        "--eval-every",
        "3",
        "--batch-size",
        "4",
        "--seq-len",
        "32",
        "--device",
        "cpu",
        "--precision",
        "fp32",
    )
    assert code == 0, err
    tuned = checkpoint.load(checkpoint.resolve(None))
    bundled = checkpoint.load(checkpoint.BUNDLED)["vocab"]
    assert set(tuned["vocab"]) == set(bundled) | {"\u20ac"}
    assert tuned["init"]["corpus"] == "shakespeare.txt, fortunes.txt"


def _resave(ckpt: dict, path, monkeypatch=None) -> None:
    """torch.save `ckpt` as it is, optionally with every tensor tagged as living on cuda:0 (what a GPU run
    writes: loading it without map_location on a machine without CUDA fails)."""
    if monkeypatch is None:
        torch.save(ckpt, path)
        return
    with monkeypatch.context() as m:
        m.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save(ckpt, path)


def test_init_from_a_gpu_saved_and_from_an_older_format_checkpoint(corpora, tmp_path, monkeypatch):
    a, b = corpora
    train_mod.train(a, MODEL, {**TRAIN, "steps": 5}, out=tmp_path / "base")
    ckpt = torch.load(tmp_path / "base" / "best.pt", weights_only=True)
    _resave(ckpt, tmp_path / "gpu.pt", monkeypatch)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(tmp_path / "gpu.pt", weights_only=True)  # really a GPU-saved file
    # an older charrnn wrote none of: several files, sizing line, lineage, precision, newer config keys
    old = {k: v for k, v in ckpt.items() if k not in ("files", "separator", "sizing", "init", "precision")}
    old["train_config"] = {k: v for k, v in ckpt["train_config"].items() if k not in ("separator", "val_chars")}
    old["model_config"] = {k: v for k, v in ckpt["model_config"].items() if k not in ("cutoffs", "weight_drop")}
    _resave(old, tmp_path / "old.pt")
    for name in ("gpu.pt", "old.pt"):
        result = train_mod.train(b, {}, {**TRAIN, "steps": 10}, out=tmp_path / f"from-{name}", init=tmp_path / name)
        tuned = checkpoint.load(tmp_path / f"from-{name}" / "best.pt")
        assert result.step == 10 and tuned["init"]["checkpoint"].endswith(name) and "%" in tuned["vocab"]
