"""Never lose a run, at the edges: a stop before the first step or right after a skipped step still leaves a
resumable last.pt; a changed corpus is refused; a torn metrics.jsonl is mended; fp16's loss scaler is saved
and its routine overflows are not counted as divergence; a stop request ends a long validation early."""

from __future__ import annotations

import json
import signal

import pytest
import torch
from conftest import make_text

from charrnn import checkpoint
from charrnn import evaluate as evaluate_mod
from charrnn import loop as train_mod
from charrnn import state as state_mod
from charrnn.errors import CharRNNError

MODEL = dict(hidden=32, embed=16, layers=2, dropout=0.1)
TRAIN = dict(batch_size=8, seq_len=24, eval_every=10, lr=2e-2, warmup_steps=5, device="cpu", precision="fp32", seed=3)


@pytest.fixture
def corpus(tmp_path):
    p = tmp_path / "play.txt"
    p.write_text(make_text(20_000), encoding="utf-8")
    return p


def same_weights(a, b) -> bool:
    wa, wb = (checkpoint.load(r / "last.pt")["model"] for r in (a, b))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def stop_before_anything(monkeypatch):
    """As if Ctrl-C came before the first step: the signal flag is already up when the loop starts."""
    real_enter = train_mod.StopSignals.__enter__

    def enter(self):
        real_enter(self)
        self.received = signal.SIGINT
        return self

    monkeypatch.setattr(train_mod.StopSignals, "__enter__", enter)


def test_a_stop_before_the_first_step_leaves_a_resumable_last_pt(corpus, tmp_path, monkeypatch):
    flags = {**TRAIN, "steps": 12}
    train_mod.train(corpus, MODEL, flags, out=tmp_path / "whole")
    with monkeypatch.context() as m:
        stop_before_anything(m)
        stopped = train_mod.train(corpus, MODEL, flags, out=tmp_path / "split")
    assert stopped.step == 0 and stopped.signal == signal.SIGINT
    assert "resume" in checkpoint.load(tmp_path / "split" / "last.pt")
    assert train_mod.train(None, {}, {}, out=tmp_path / "split", resume=True).step == 12
    assert same_weights(tmp_path / "whole", tmp_path / "split")


def test_a_stop_right_after_a_skipped_step_leaves_a_resumable_last_pt(corpus, tmp_path, monkeypatch):
    real = state_mod.loss_fn
    calls = {"n": 0}

    def one_bad(logits, targets):
        calls["n"] += 1
        loss = real(logits, targets)
        return loss * float("nan") if calls["n"] == 7 else loss

    monkeypatch.setattr(state_mod, "loss_fn", one_bad)

    def stop_on_the_skip(event):
        if event.kind == "notice" and "update skipped" in event.message:
            signal.raise_signal(signal.SIGINT)

    stopped = train_mod.train(corpus, MODEL, {**TRAIN, "steps": 20}, out=tmp_path / "run", report=stop_on_the_skip)
    assert stopped.step == 7 and stopped.signal == signal.SIGINT
    ckpt = checkpoint.load(tmp_path / "run" / "last.pt")
    assert ckpt["resume"]["carried_state"] is None  # the skipped step dropped the poisoned state
    assert train_mod.train(None, {}, {}, out=tmp_path / "run", resume=True).step == 20


@pytest.mark.parametrize("change", ["append", "edit"])
def test_resume_refuses_a_changed_corpus(corpus, tmp_path, change):
    train_mod.train(corpus, MODEL, {**TRAIN, "steps": 5}, out=tmp_path / "run")
    text = corpus.read_text(encoding="utf-8")
    if change == "append":  # same characters, more of them
        corpus.write_text(text + text[:500], encoding="utf-8")
        what = "bytes then"
    else:  # same size, same characters, two swapped
        i = text.index("the")
        corpus.write_text(text[:i] + "hte" + text[i + 3 :], encoding="utf-8")
        what = "same size, different content"
    with pytest.raises(
        CharRNNError, match=f"play.txt has changed since the run .*{what}.*--init .*run --out NEW_FOLDER"
    ):
        train_mod.train(corpus, {}, {"steps": 10}, out=tmp_path / "run", resume=True)


def test_resume_mends_a_torn_metrics_file(corpus, tmp_path):
    train_mod.train(corpus, MODEL, {**TRAIN, "steps": 20}, out=tmp_path / "run")
    metrics = tmp_path / "run" / "metrics.jsonl"
    with open(metrics, "a", encoding="utf-8") as f:
        f.write('{"step": 30, "elapsed": 1.2, "train_lo')  # killed mid-write
    notices = []
    result = train_mod.train(
        None,
        {},
        {"steps": 30},
        out=tmp_path / "run",
        resume=True,
        report=lambda e: e.kind == "notice" and notices.append(e.message),
    )
    assert result.step == 30
    assert len(notices) == 1 and "dropped 1 torn line" in notices[0]
    assert [json.loads(line)["step"] for line in metrics.read_text().splitlines()] == [10, 20, 30]


class InfGrad(torch.autograd.Function):
    """Identity forward, infinite gradient backward: an overflow of the gradients with a finite loss."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


@pytest.mark.parametrize("scaler", [True, False])
def test_fp16_overflows_are_not_divergence_and_the_scaler_is_saved(corpus, tmp_path, monkeypatch, scaler):
    """The fp16 logic, driven by hand on the CPU: three steps whose gradients overflow while the loss stays
    finite, as fp16's scaled gradients do in its first steps on a GPU. With a scaler they only lower its
    scale (no notice, learning rate untouched) and the scaler's state goes into last.pt and comes back on
    resume; without one (fp32, bf16) the same steps are real divergence and are counted."""
    real_scaler, real_loss = torch.amp.GradScaler, state_mod.loss_fn
    monkeypatch.setattr(torch.amp, "GradScaler", lambda device, enabled: real_scaler(device, enabled=scaler))
    calls = {"n": 0}

    def overflowing(logits, targets):
        calls["n"] += 1
        return real_loss(InfGrad.apply(logits) if 3 <= calls["n"] <= 5 else logits, targets)

    monkeypatch.setattr(state_mod, "loss_fn", overflowing)
    notices = []
    first = train_mod.Trainer.from_flags(
        corpus,
        MODEL,
        {**TRAIN, "steps": 20},
        tmp_path / "run",
        False,
        lambda e: e.kind == "notice" and notices.append(e.message),
    )
    first.fit()
    if not scaler:
        assert len(notices) == 3 and first.state.lr_scale == 0.5  # two skips, then a restore at half the rate
        return
    assert notices == [] and first.state.lr_scale == 1.0
    scale = first.state.scaler.get_scale()
    assert scale == 2.0**16 / 8  # three overflows, each halving torch's initial scale
    saved = checkpoint.load(tmp_path / "run" / "last.pt")["resume"]["scaler"]
    assert saved["scale"] == scale
    again = train_mod.Trainer.from_flags(None, {}, {"steps": 25}, tmp_path / "run", True, None)
    assert again.state.scaler.get_scale() == scale


def test_a_stop_request_ends_a_long_validation_early(tmp_path, monkeypatch):
    corpus = tmp_path / "long.txt"
    corpus.write_text(make_text(150_000), encoding="utf-8")  # validation: 3 windows of each of 16 rows
    real_score = evaluate_mod._score
    calls = {"n": 0}

    def score(*args):
        calls["n"] += 1
        if calls["n"] == 1:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C during the first window of the validation
        return real_score(*args)

    monkeypatch.setattr(evaluate_mod, "_score", score)
    evals = []
    result = train_mod.train(
        corpus,
        MODEL,
        {**TRAIN, "steps": 10, "val_frac": 0.2},
        out=tmp_path / "run",
        report=lambda e: e.kind == "eval" and evals.append(e),
    )
    assert calls["n"] == 1  # the other windows were never scored
    assert result.signal == signal.SIGINT and result.step == 10 and evals == [] and result.last_val is None
    ckpt = checkpoint.load(tmp_path / "run" / "last.pt")
    assert ckpt["step"] == 10 and "resume" in ckpt and ckpt["last_val"] is None
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
