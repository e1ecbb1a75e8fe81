"""The training loop: it learns, it resumes exactly, it survives non-finite losses, budgets stop it."""

import json
import math
import signal

import numpy as np
import pytest
import torch

from charrnn import checkpoint, train as train_mod
from charrnn.errors import CharRNNError
from charrnn.sample import generate
from charrnn.config import SampleConfig

MODEL = dict(hidden=32, embed=16, layers=2, dropout=0.1)
TRAIN = dict(batch_size=8, seq_len=24, eval_every=10, lr=2e-2, warmup_steps=5, device="cpu",
             precision="fp32", seed=3)


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARRNN_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    words = ["the", "king", "queen", "sword", "night", "love", "death", "crown", "and", "of", "my", "lord"]
    lines = []
    for _ in range(400):
        lines.append("KING:" if rng.random() < 0.5 else "QUEEN:")
        lines.append(" ".join(rng.choice(words, size=rng.integers(3, 9))) + ".\n")
    p = tmp_path / "tiny.txt"
    p.write_text("\n".join(lines), encoding="utf-8")
    return p


def weights(run):
    return checkpoint.load(run / "last.pt")["model"]


def test_loss_falls_well_below_log_vocab(corpus, tmp_path):
    result = train_mod.train(corpus, MODEL, {**TRAIN, "steps": 60}, out=tmp_path / "run")
    vocab_size = len(checkpoint.load(tmp_path / "run" / "best.pt")["vocab"])
    assert result.best_val < 0.6 * math.log(vocab_size)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [10, 20, 30, 40, 50, 60]
    assert rows[-1]["val_loss"] < rows[0]["val_loss"]
    assert set(rows[0]) == {"step", "elapsed", "train_loss", "val_loss", "val_bpc", "lr", "chars_per_s"}


@pytest.mark.parametrize("cell,dropout", [("lstm", 0.1), ("gru", 0.1), ("lstm", None)])
def test_interrupted_and_resumed_equals_uninterrupted(corpus, tmp_path, cell, dropout):
    flags = {**TRAIN, "steps": 37}
    model = {**MODEL, "model": cell, "dropout": dropout}
    if dropout is None:  # automatic: chosen from the planned passes, then kept by the checkpoint
        del model["dropout"]
    train_mod.train(corpus, model, flags, out=tmp_path / "whole")

    def interrupt_at_step_23(event):
        if event.kind == "step" and event.step == 23:
            signal.raise_signal(signal.SIGINT)  # the real handler: stop after the current step

    stopped = train_mod.train(corpus, model, flags, out=tmp_path / "split", report=interrupt_at_step_23)
    assert stopped.signal == signal.SIGINT and stopped.step == 23
    resumed = train_mod.train(None, {}, {}, out=tmp_path / "split", resume=True)
    assert resumed.step == 37 and resumed.resumed

    a, b = weights(tmp_path / "whole"), weights(tmp_path / "split")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key  # bitwise, not approximately

    def metrics(run):
        rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["train_loss"], r["val_loss"], r["lr"]) for r in rows]

    assert metrics(tmp_path / "whole") == metrics(tmp_path / "split")

    def text(run):
        m, vocab = checkpoint.build_model(checkpoint.load(run / "last.pt"))
        return "".join(c[0] for c in generate(m.eval(), vocab, SampleConfig(length=80, seed=5)))

    assert text(tmp_path / "whole") == text(tmp_path / "split")


def test_resume_rejects_contradicting_architecture(corpus, tmp_path):
    train_mod.train(corpus, MODEL, {**TRAIN, "steps": 5}, out=tmp_path / "run")
    with pytest.raises(CharRNNError, match="--hidden 64 contradicts"):
        train_mod.train(corpus, {"hidden": 64}, {"steps": 10}, out=tmp_path / "run", resume=True)
    with pytest.raises(CharRNNError, match="already used its whole budget"):
        train_mod.train(corpus, {}, {}, out=tmp_path / "run", resume=True)
    assert train_mod.train(corpus, {}, {"steps": 8}, out=tmp_path / "run", resume=True).step == 8


def test_non_finite_loss_skips_then_restores_with_lower_lr(corpus, tmp_path, monkeypatch):
    real = train_mod.loss_fn
    calls = {"n": 0}

    def flaky(logits, targets):
        calls["n"] += 1
        loss = real(logits, targets)
        return loss * float("nan") if 12 <= calls["n"] <= 15 else loss

    monkeypatch.setattr(train_mod, "loss_fn", flaky)
    notices = []
    result = train_mod.train(corpus, MODEL, {**TRAIN, "steps": 30}, out=tmp_path / "run",
                             report=lambda e: e.kind == "notice" and notices.append(e.message))
    assert result.step == 30 and math.isfinite(result.best_val)
    assert any("update skipped" in n for n in notices)
    assert any("restored the last good weights" in n for n in notices)
    ckpt = checkpoint.load(tmp_path / "run" / "last.pt")
    assert ckpt["resume"]["lr_scale"] == 0.5
    assert all(torch.isfinite(t).all() for t in ckpt["model"].values())


def test_persistent_non_finite_loss_stops_with_clear_error(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(train_mod, "loss_fn", lambda logits, targets: logits.float().sum() * float("nan"))
    with pytest.raises(CharRNNError, match="diverged"):
        train_mod.train(corpus, MODEL, {**TRAIN, "steps": 100}, out=tmp_path / "run")


def test_time_budget_stops_the_run(corpus, tmp_path):
    result = train_mod.train(corpus, MODEL, {**TRAIN, "minutes": 0.02}, out=tmp_path / "run")
    assert 1.2 <= result.elapsed < 10 and result.step > 0
    assert (tmp_path / "run" / "best.pt").exists()


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    cfg = train_mod.TrainConfig(lr=1.0, warmup_steps=10, min_lr_frac=0.1, steps=100)
    assert train_mod.lr_at(cfg, 0, 0.0) == pytest.approx(0.1)
    assert train_mod.lr_at(cfg, 9, 0.09) == pytest.approx(1.0)
    assert train_mod.lr_at(cfg, 50, 0.5) == pytest.approx(0.55)
    assert train_mod.lr_at(cfg, 100, 1.0) == pytest.approx(0.1)


def test_resume_rejects_a_different_data_layout(corpus, tmp_path):
    train_mod.train(corpus, MODEL, {**TRAIN, "steps": 5}, out=tmp_path / "run")
    with pytest.raises(CharRNNError, match="--batch-size 16 contradicts"):
        train_mod.train(corpus, {}, {"steps": 10, "batch_size": 16}, out=tmp_path / "run", resume=True)


def test_auto_dropout_follows_the_passes_over_the_training_text():
    from charrnn.config import DROPOUT_PASSES, DROPOUT_RANGE, auto_dropout

    lo, hi = DROPOUT_RANGE
    assert auto_dropout(0.0) == auto_dropout(DROPOUT_PASSES[0]) == lo
    assert auto_dropout(DROPOUT_PASSES[1]) == auto_dropout(1000.0) == hi
    assert auto_dropout(sum(DROPOUT_PASSES) / 2) == pytest.approx((lo + hi) / 2, abs=1e-3)
    assert lo < hi


def _rates(trainer):
    return trainer.model.drop.p, trainer.model.rnn.dropout


def test_a_step_budget_sets_dropout_from_its_passes_before_the_first_step(corpus, tmp_path):
    from charrnn.config import DROPOUT_RANGE, auto_dropout

    auto = {k: v for k, v in MODEL.items() if k != "dropout"}
    few = train_mod.Trainer(corpus, auto, {**TRAIN, "steps": 5}, tmp_path / "few", False, None)
    assert few.model_cfg.dropout == DROPOUT_RANGE[0] and _rates(few) == (DROPOUT_RANGE[0],) * 2
    windows = few.streams.windows
    steps = 9 * windows  # nine passes: halfway up the ramp
    mid = train_mod.Trainer(corpus, auto, {**TRAIN, "steps": steps}, tmp_path / "mid", False, None)
    assert DROPOUT_RANGE[0] < mid.model_cfg.dropout == auto_dropout(9.0) < DROPOUT_RANGE[1]
    assert _rates(mid) == (mid.model_cfg.dropout,) * 2
    mine = train_mod.Trainer(corpus, MODEL, {**TRAIN, "steps": steps}, tmp_path / "mine", False, None)
    assert mine.model_cfg.dropout == MODEL["dropout"] and _rates(mine) == (MODEL["dropout"],) * 2


def test_a_time_budget_settles_dropout_once_it_knows_the_speed(corpus, tmp_path):
    from charrnn.config import DROPOUT_PASSES, DROPOUT_RANGE

    auto = {k: v for k, v in MODEL.items() if k != "dropout"}
    infos = []
    flags = {**TRAIN, "minutes": 0.04, "batch_size": 64, "eval_every": 50}  # about 10 windows a pass
    trainer = train_mod.Trainer(corpus, auto, flags, tmp_path / "run", False,
                                lambda e: e.kind == "info" and infos.append((e.step, e.message)))
    assert trainer.model_cfg.dropout is None and _rates(trainer) == (DROPOUT_RANGE[0],) * 2
    result = trainer.run()
    # a tiny model reads this small corpus dozens of times in 2.4 s: the top of the range
    assert result.step / trainer.streams.windows > DROPOUT_PASSES[1]
    assert _rates(trainer) == (DROPOUT_RANGE[1],) * 2
    assert infos == [(train_mod.DROPOUT_AT_STEP, infos[0][1])] and "passes" in infos[0][1]
    for name in ("best.pt", "last.pt"):
        assert checkpoint.load(tmp_path / "run" / name)["model_config"]["dropout"] == DROPOUT_RANGE[1]
