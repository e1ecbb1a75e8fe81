"""The Python API: `charrnn.load` samples exactly what `charrnn sample` prints for the same seed, streams
the same text, scores as `charrnn eval` does; `charrnn.train` trains with the command line's options."""

from __future__ import annotations

import json

import pytest
from conftest import make_text

import charrnn
from charrnn.errors import CharRNNError


def test_sample_and_stream_give_the_text_the_cli_prints_for_the_same_seed(tiny_run, run_cli):
    model = charrnn.load(tiny_run.run_dir)
    code, out, _ = run_cli("sample", "--checkpoint", tiny_run.run_dir, "--seed", 7, "--length", 120, "--prime", "RO")
    assert code == 0
    text = model.sample(120, prime="RO", seed=7)
    assert out == "RO" + text + "\n" and len(text) == 120
    assert "".join(model.stream(120, prime="RO", seed=7)) == text
    code, out, _ = run_cli("sample", "--checkpoint", tiny_run.run_dir, "--seed", 3, "--num", 3, "--format", "jsonl")
    assert [json.loads(line)["text"] for line in out.splitlines()] == model.sample(1000, num=3, seed=3)
    assert model.sample(40, seed=1) != model.sample(40, seed=2)


def test_stop_strings_end_each_sample(tiny_run):
    model = charrnn.load(tiny_run.run_dir)
    names = model.sample(200, num=5, seed=4, stop=["\n"])
    assert len(names) == 5 and all("\n" not in n and len(n) < 200 for n in names)


def test_score_equals_eval_on_a_file_holding_the_text(tiny_run, run_cli, tmp_path):
    model = charrnn.load(tiny_run.run_dir)
    text = make_text(3_000, seed=9)
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    code, out, _ = run_cli("eval", tmp_path / "t.txt", "--checkpoint", tiny_run.run_dir, "--json")
    assert code == 0
    score = model.score(text)
    assert score.nats_per_char == pytest.approx(json.loads(out)["nats_per_char"], abs=1e-9)
    assert score.bits_per_char == pytest.approx(score.nats_per_char / 0.6931471805599453)
    with pytest.raises(CharRNNError, match="at least 2 characters"):
        model.score("a")


def test_info_says_what_the_model_is(tiny_run):
    model = charrnn.load(tiny_run.run_dir / "best.pt")
    info = model.info
    assert (info["model"], info["layers"], info["hidden"]) == ("lstm", 2, 32)
    assert info["shape"] == "lstm 2x32" and info["corpus"] == "tiny.txt" and info["steps"] == 40
    assert info["best_val"] is not None and set(info["vocab"]) == set(make_text())
    assert "lstm 2x32" in repr(model)
    from charrnn import checkpoint

    assert checkpoint.resolve("bundled") == checkpoint.BUNDLED  # --checkpoint bundled, for every command
    bundled = charrnn.load("bundled")
    assert bundled.info["corpus"] == "shakespeare.txt, fortunes.txt" and len(bundled.sample(20, seed=0)) == 20


def test_train_takes_the_command_lines_options_as_keywords(tiny_corpus, tmp_path):
    result = charrnn.train(
        tiny_corpus,
        out=tmp_path / "run",
        model="gru",
        hidden=24,
        embed=8,
        layers=1,
        batch_size=4,
        seq_len=16,
        steps=6,
        eval_every=3,
        device="cpu",
        precision="fp32",
        dropout=None,  # None means "not given", as on the command line
    )
    assert result.step == 6 and result.run_dir == tmp_path / "run" and result.best_val is not None
    model = charrnn.load(result.run_dir)
    assert model.info["shape"] == "gru 1x24"
    with pytest.raises(CharRNNError, match="unknown training option 'hiden'"):
        charrnn.train(tiny_corpus, hiden=24)


def test_no_corpus_outside_the_clone_means_the_shipped_shakespeare(tmp_path, monkeypatch):
    """`charrnn train` with no corpus, run away from the clone's ./corpora: under an editable install (the
    README's test setup) the package has no copy inside it, and the one beside it in the source tree is used."""
    from charrnn.recipe import corpus_specs

    monkeypatch.chdir(tmp_path)
    (spec,) = corpus_specs(None)
    assert spec.is_file() and spec.name == "shakespeare.txt"
    assert corpus_specs([]) == [spec]
