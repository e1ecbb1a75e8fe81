"""The training loop: it learns, it resumes exactly, it survives non-finite losses, budgets stop it."""

import json
import math
import signal
import types

import numpy as np
import pytest
import torch

from charrnn import checkpoint
from charrnn import loop as train_mod
from charrnn import state as state_mod
from charrnn.config import SampleConfig
from charrnn.errors import CharRNNError
from charrnn.sample import generate

MODEL = dict(hidden=32, embed=16, layers=2, dropout=0.1)
TRAIN = dict(batch_size=8, seq_len=24, eval_every=10, lr=2e-2, warmup_steps=5, device="cpu", precision="fp32", seed=3)


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
    real = state_mod.loss_fn
    calls = {"n": 0}

    def flaky(logits, targets):
        calls["n"] += 1
        loss = real(logits, targets)
        return loss * float("nan") if 12 <= calls["n"] <= 15 else loss

    monkeypatch.setattr(state_mod, "loss_fn", flaky)
    notices = []
    result = train_mod.train(
        corpus,
        MODEL,
        {**TRAIN, "steps": 30},
        out=tmp_path / "run",
        report=lambda e: e.kind == "notice" and notices.append(e.message),
    )
    assert result.step == 30 and math.isfinite(result.best_val)
    assert any("update skipped" in n for n in notices)
    assert any("restored the last good weights" in n for n in notices)
    ckpt = checkpoint.load(tmp_path / "run" / "last.pt")
    assert ckpt["resume"]["lr_scale"] == 0.5
    assert all(torch.isfinite(t).all() for t in ckpt["model"].values())


def test_persistent_non_finite_loss_stops_with_clear_error(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(state_mod, "loss_fn", lambda logits, targets: logits.float().sum() * float("nan"))
    with pytest.raises(CharRNNError, match="diverged"):
        train_mod.train(corpus, MODEL, {**TRAIN, "steps": 100}, out=tmp_path / "run")


def test_time_budget_stops_the_run(corpus, tmp_path, monkeypatch):
    clock = iter(range(10**9))  # a clock that moves 1 s each time it is read: no dependence on this CPU
    monkeypatch.setattr(state_mod, "time", types.SimpleNamespace(perf_counter=lambda: float(next(clock))))
    result = train_mod.train(corpus, MODEL, {**TRAIN, "minutes": 0.5}, out=tmp_path / "run")
    assert 30 <= result.elapsed < 40 and 0 < result.step < 30  # stops at the first step past its 30 s
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
    from charrnn.config import DROPOUT_PASSES, DROPOUT_TOP, auto_dropout

    lo, hi = DROPOUT_PASSES
    assert auto_dropout(0.0) == auto_dropout(1.0) == auto_dropout(lo) == 0.0  # nothing to overfit yet
    assert 0.0 < auto_dropout(lo + 0.5) < auto_dropout(sum(DROPOUT_PASSES) / 2) < DROPOUT_TOP
    assert auto_dropout(sum(DROPOUT_PASSES) / 2) == pytest.approx(DROPOUT_TOP / 2, abs=1e-3)
    assert auto_dropout(hi) == auto_dropout(1000.0) == DROPOUT_TOP
    rates = [auto_dropout(p / 4) for p in range(80)]
    assert rates == sorted(rates)  # never less for more passes, and no jump on the way up
    assert max(b - a for a, b in zip(rates, rates[1:])) <= DROPOUT_TOP / (hi - lo) / 4 + 1e-3


def test_the_gru_gets_less_dropout_at_many_passes_and_the_same_at_few():
    from charrnn.config import DROPOUT_PASSES, GRU_DROPOUT_TOP, auto_dropout

    assert auto_dropout(0.0, "gru") == auto_dropout(DROPOUT_PASSES[0], "gru") == auto_dropout(0.0) == 0.0
    assert auto_dropout(DROPOUT_PASSES[1], "gru") == auto_dropout(1000.0, "gru") == GRU_DROPOUT_TOP
    rates = [auto_dropout(p, "gru") for p in range(40)]
    assert rates == sorted(rates)  # never less for more passes
    assert all(auto_dropout(p, "gru") <= auto_dropout(p, "lstm") == auto_dropout(p, "rnn") for p in range(40))
    assert auto_dropout(11.3, "gru") < auto_dropout(11.3, "lstm")


def _rates(trainer):
    return trainer.model.drop.p, trainer.model.rnn.dropout


def test_a_step_budget_sets_dropout_from_its_passes_before_the_first_step(corpus, tmp_path):
    from charrnn.config import DROPOUT_PASSES, DROPOUT_TOP, auto_dropout

    auto = {k: v for k, v in MODEL.items() if k != "dropout"}
    few = train_mod.Trainer.from_flags(corpus, auto, {**TRAIN, "steps": 5}, tmp_path / "few", False, None)
    assert few.run.model_cfg.dropout == 0.0 and _rates(few) == (0.0, 0.0)  # a fraction of a pass: none
    windows = few.streams.windows
    passes = sum(DROPOUT_PASSES) / 2  # halfway up the ramp
    steps = round(passes * windows)
    mid = train_mod.Trainer.from_flags(corpus, auto, {**TRAIN, "steps": steps}, tmp_path / "mid", False, None)
    assert 0.0 < mid.run.model_cfg.dropout == auto_dropout(steps / windows, mid.run.model_cfg.model) < DROPOUT_TOP
    assert _rates(mid) == (mid.run.model_cfg.dropout,) * 2
    mine = train_mod.Trainer.from_flags(corpus, MODEL, {**TRAIN, "steps": steps}, tmp_path / "mine", False, None)
    assert mine.run.model_cfg.dropout == MODEL["dropout"] and _rates(mine) == (MODEL["dropout"],) * 2


def _fake_rates(monkeypatch, speed: float) -> None:
    """The probe without a clock: made-up chars/s, inversely proportional to the recurrent weights."""
    from charrnn import sizing

    monkeypatch.setattr(sizing.Probe, "rate", lambda self, shape: speed * 2 * 128 * 128 / sizing.size(shape))


def _shape(trainer):
    return (
        trainer.run.model_cfg.layers,
        trainer.run.model_cfg.hidden,
        trainer.cfg.batch_size,
        trainer.run.model_cfg.dropout,
    )


def test_a_time_budget_takes_shape_and_dropout_from_the_probe_and_a_slow_start_changes_neither(
    corpus, tmp_path, monkeypatch
):
    import time

    from charrnn.config import DROPOUT_TOP, auto_dropout

    _fake_rates(monkeypatch, 5e4)
    flags = {k: v for k, v in TRAIN.items() if k != "batch_size"} | {"minutes": 0.02, "eval_every": 1000}
    real_step = train_mod.Trainer.train_step
    seen = []
    for slow in (False, True):

        def step(self, lr, slow=slow):
            if slow and self.state.step < 3:
                time.sleep(0.3)  # the first steps of a run are often slow: they must not decide anything
            return real_step(self, lr)

        monkeypatch.setattr(train_mod.Trainer, "train_step", step)
        infos = []
        trainer = train_mod.Trainer.from_flags(
            corpus,
            {"embed": 16},
            flags,
            tmp_path / f"run{slow}",
            False,
            lambda e, infos=infos: e.kind == "info" and infos.append(e.message),
        )
        assert trainer.run.model_cfg.dropout is not None  # settled before the first step
        before = _shape(trainer)
        trainer.fit()
        assert _shape(trainer) == before
        passes = trainer.run.sizing and float(infos[1].split("about ")[1].split(" passes")[0])
        assert (
            trainer.run.model_cfg.dropout == auto_dropout(passes, trainer.run.model_cfg.model)
            and 0.0 <= trainer.run.model_cfg.dropout <= DROPOUT_TOP
        )
        assert infos[0] == trainer.run.sizing and "chars/s" in trainer.run.sizing
        saved = checkpoint.load(tmp_path / f"run{slow}" / "last.pt")
        assert (
            saved["sizing"] == trainer.run.sizing and saved["model_config"]["dropout"] == trainer.run.model_cfg.dropout
        )
        seen.append((before, trainer.run.sizing))
    assert seen[0] == seen[1]


def test_the_plan_counts_the_runs_own_validations(corpus, tmp_path, monkeypatch):
    """The shape is planned on the steps the run will make: net of its validation text at the schedule the
    run will have, and of the extra validations (a benchmark's milestones) the trainer was given."""
    from charrnn import sizing

    _fake_rates(monkeypatch, 5e4)
    seen, real_plan = [], sizing.plan
    monkeypatch.setattr(sizing, "plan", lambda *a, **k: seen.append(k["overhead"]) or real_plan(*a, **k))
    flags = {k: v for k, v in TRAIN.items() if k != "batch_size"} | {"minutes": 0.5}
    train_mod.Trainer.from_flags(corpus, {"embed": 16}, flags, tmp_path / "a", False, None)
    timed = train_mod.Trainer.from_flags(
        corpus, {"embed": 16}, flags, tmp_path / "b", False, None, eval_at_seconds=[5.0, 10.0, 60.0]
    )
    shape = sizing.Shape(timed.run.model_cfg.layers, timed.run.model_cfg.hidden, timed.cfg.batch_size)
    assert seen[0].at_seconds == () and seen[1].at_seconds == (5.0, 10.0, 60.0)
    assert seen[1].val_chars == len(timed.run.val_ids) > 0 and seen[1].eval_every(shape) == timed.cfg.eval_every
    rate = 5e4 * 2 * 128 * 128 / sizing.size(shape)
    with_milestones = sizing.planned_steps(rate, shape, timed.cfg.seq_len, 30.0, None, seen[1])
    assert with_milestones < sizing.planned_steps(rate, shape, timed.cfg.seq_len, 30.0, None, seen[0])


def test_resume_keeps_the_chosen_shape_whatever_the_probe_would_say_now(corpus, tmp_path, monkeypatch):
    _fake_rates(monkeypatch, 2e3)  # a slow machine: the smallest shape
    flags = {k: v for k, v in TRAIN.items() if k != "batch_size"} | {"minutes": 30.0, "steps": 4}
    first = train_mod.Trainer.from_flags(corpus, {"embed": 16}, flags, tmp_path / "run", False, None)
    first.fit()
    _fake_rates(monkeypatch, 1e9)  # now everything would qualify
    fresh = train_mod.Trainer.from_flags(
        corpus, {"embed": 16}, {**flags, "steps": 6000}, tmp_path / "other", False, None
    )
    assert _shape(fresh)[:2] != _shape(first)[:2]  # the probe really would choose differently now
    again = train_mod.Trainer.from_flags(corpus, {}, {"steps": 8}, tmp_path / "run", True, None)
    assert _shape(again) == _shape(first) and again.run.sizing == first.run.sizing
    again.fit()
    assert checkpoint.load(tmp_path / "run" / "last.pt")["sizing"] == first.run.sizing


def test_steps_alone_choose_a_shape_without_a_probe(corpus, tmp_path, monkeypatch):
    from charrnn import sizing

    def no_clock(self, shape):
        raise AssertionError("--steps alone must not time anything")

    monkeypatch.setattr(sizing.Probe, "rate", no_clock)
    flags = {k: v for k, v in TRAIN.items() if k != "batch_size"} | {"steps": 3}
    trainer = train_mod.Trainer.from_flags(corpus, {"embed": 16}, flags, tmp_path / "run", False, None)
    assert "3 steps" in trainer.run.sizing and trainer.run.model_cfg.dropout is not None
    explicit = train_mod.Trainer.from_flags(corpus, {"embed": 16, "hidden": 48}, flags, tmp_path / "run2", False, None)
    assert explicit.run.model_cfg.hidden == 48 and explicit.cfg.batch_size == 16
    assert trainer.fit().step == 3


def test_same_flags_with_steps_give_the_same_run_bit_for_bit(corpus, tmp_path):
    """What the README promises for --seed: under --steps (no clock anywhere: shape, dropout and schedule all
    follow the steps) two runs with the same flags end with the same weights; another seed does not."""
    flags = {k: v for k, v in TRAIN.items() if k != "batch_size"} | {"steps": 12}
    model = {"embed": 16}  # shape, dropout and learning rate all automatic
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        train_mod.train(corpus, model, {**flags, "seed": seed}, out=tmp_path / name)
    a, b, c = (weights(tmp_path / n) for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_val_chars_caps_the_validation_to_the_start_of_the_split(corpus, tmp_path):
    full = train_mod.train(corpus, MODEL, {**TRAIN, "steps": 5}, out=tmp_path / "full")
    capped = train_mod.train(corpus, MODEL, {**TRAIN, "steps": 5, "val_chars": 300}, out=tmp_path / "capped")
    assert capped.last_val.chars == 299 < full.last_val.chars  # every character after the first is scored
    with pytest.raises(CharRNNError, match="--val-chars must be"):
        train_mod.train(corpus, MODEL, {**TRAIN, "steps": 5, "val_chars": 1}, out=tmp_path / "bad")


def test_samples_while_training_are_kept_and_leave_the_weights_bit_for_bit_unchanged(corpus, tmp_path):
    flags = {**TRAIN, "steps": 30, "eval_every": 10}
    samples = []
    train_mod.train(
        corpus,
        MODEL,
        {**flags, "sample_every": 1, "sample_length": 60},
        out=tmp_path / "with",
        report=lambda e: e.kind == "sample" and samples.append((e.step, e.message)),
    )
    train_mod.train(corpus, MODEL, {**flags, "sample_every": 0}, out=tmp_path / "without")
    a, b = weights(tmp_path / "with"), weights(tmp_path / "without")
    assert all(torch.equal(a[k], b[k]) for k in a)  # sampling touched no training random stream
    assert [s for s, _ in samples] == [10, 20, 30] and all(len(text) == 60 for _, text in samples)
    kept = (tmp_path / "with" / "samples.txt").read_text(encoding="utf-8")
    rows = [json.loads(r) for r in (tmp_path / "with" / "metrics.jsonl").read_text().splitlines()]
    for (step, text), row in zip(samples, rows):
        assert f"=== step {step}  val {row['val_loss']:.4f} nats/char ===\n{text}\n" in kept
    assert not (tmp_path / "without" / "samples.txt").exists()
    every_other = []
    train_mod.train(
        corpus,
        MODEL,
        {**flags, "sample_every": 2},
        out=tmp_path / "sparse",
        report=lambda e: e.kind == "sample" and every_other.append(e.step),
    )
    assert every_other == [20]
