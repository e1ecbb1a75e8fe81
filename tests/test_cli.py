"""The command line end to end in a temporary folder: train -> sample -> eval -> info, what each prints
where, run folders that never overwrite each other, and vocabularies beyond one byte."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY, make_text

from charrnn.config import auto_dropout

METRIC_KEYS = {"step", "elapsed", "train_loss", "val_loss", "val_bpc", "lr", "chars_per_s"}


def hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file in a run folder except the lock (which records the pid of the last trainer)."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != ".lock"
    }


def vocab_of(checkpoint: Path) -> str:
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["vocab"]


def lstm_parameters(vocab: int, embed: int, hidden: int, layers: int) -> int:
    """Parameter count of Embedding -> LSTM stack -> Linear, computed by hand."""
    total = vocab * embed + hidden * vocab + vocab
    for layer in range(layers):
        inp = embed if layer == 0 else hidden
        total += 4 * hidden * (inp + hidden) + 2 * 4 * hidden
    return total


def table_row(text: str, label: str) -> str:
    """The line of a rich table whose first cell is `label`."""
    rows = [line for line in text.splitlines() if re.search(rf"^\W*{re.escape(label)}\s*\W", line)]
    assert rows, f"no row {label!r} in:\n{text}"
    return rows[0]


# ---- train -> sample -> eval -> info ----------------------------------------------------------------


def test_train_sample_eval_info_end_to_end(run_cli, tiny_corpus, tmp_path):
    code, out, err = run_cli("train", tiny_corpus, *TINY)
    assert code == 0, err
    assert out == ""  # progress and summary go to stderr
    run = tmp_path / "checkpoints" / "tiny"
    assert (run / "best.pt").is_file() and (run / "last.pt").is_file() and (run / "metrics.jsonl").is_file()
    assert str(run / "best.pt").replace(str(tmp_path) + os.sep, "") in err  # the summary names the checkpoints

    # With no --checkpoint, sample/eval/info find the newest run under ./checkpoints.
    code, out, err = run_cli("sample", "--length", "40", "--seed", "3")
    assert code == 0, err
    assert set(out) <= set(vocab_of(run / "best.pt")) | {"\n"}
    assert len(out) >= 40

    code, out, err = run_cli("eval", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["chars"] > 0 and math.isfinite(report["nats_per_char"])
    assert Path(report["checkpoint"]).resolve() == (run / "best.pt").resolve()

    code, out, err = run_cli("info")
    assert code == 0, err
    assert "lstm" in table_row(out, "model") and "40" in table_row(out, "steps")


def test_train_writes_checkpoints_and_one_metrics_line_per_evaluation(tiny_run):
    run = tiny_run.run_dir
    for name in ("best.pt", "last.pt"):
        ckpt = torch.load(run / name, map_location="cpu", weights_only=True)  # self-contained plain data
        assert ckpt["vocab"] == "".join(sorted(set(tiny_run.corpus.read_text(encoding="utf-8"))))
    assert torch.load(run / "last.pt", map_location="cpu", weights_only=True)["step"] == 40
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["step"] for r in rows] == [20, 40]  # --eval-every 20 --steps 40
    for row in rows:
        assert set(row) == METRIC_KEYS
        assert math.isfinite(row["val_loss"]) and row["val_loss"] > 0
        assert row["val_bpc"] == pytest.approx(row["val_loss"] / math.log(2))
        assert math.isfinite(row["train_loss"]) and row["lr"] > 0 and row["chars_per_s"] > 0
    assert 0 <= rows[0]["elapsed"] <= rows[1]["elapsed"]


def test_train_reports_its_evaluations_on_stderr(tiny_run):
    assert tiny_run.out == ""
    assert re.search(r"step\s+20\b.*val", tiny_run.err) and re.search(r"step\s+40\b.*val", tiny_run.err)


# ---- sample -------------------------------------------------------------------------------------------


def test_sample_prints_only_generated_text_on_stdout(run_cli, tiny_run):
    vocab = vocab_of(tiny_run.run_dir / "best.pt")
    code, out, err = run_cli("sample", "-c", tiny_run.run_dir, "--length", "50", "--seed", "1")
    assert code == 0, err
    assert 50 <= len(out) <= 51 and out.endswith("\n")  # 50 characters and a final newline
    assert set(out) <= set(vocab) | {"\n"}  # no banner, no markup, no path: the text alone
    assert "best.pt" not in out


def test_sample_same_seed_same_text_other_seed_other_text(run_cli, tiny_run):
    args = ("sample", "-c", tiny_run.run_dir, "--length", "80")
    first = run_cli(*args, "--seed", "1")
    again = run_cli(*args, "--seed", "1")
    other = run_cli(*args, "--seed", "2")
    assert first[0] == again[0] == other[0] == 0
    assert first[1] == again[1]
    assert first[1] != other[1]


def test_sample_num_prints_separated_samples(run_cli, tiny_run):
    code, out, err = run_cli("sample", "-c", tiny_run.run_dir, "--length", "40", "--seed", "1", "--num", "3")
    assert code == 0, err
    parts = re.split(r"^=+ ?sample (\d+)/3 ?=+\n", out, flags=re.M)
    assert parts[0] == ""
    assert parts[1::2] == ["1", "2", "3"]
    bodies = [b.rstrip("\n") for b in parts[2::2]]
    assert all(len(b) == 40 for b in bodies), bodies
    assert len(set(bodies)) == 3  # independent draws, not one sample printed three times


def test_sample_prime_with_unknown_characters_warns_once(run_cli, tiny_run):
    vocab = vocab_of(tiny_run.run_dir / "best.pt")
    assert "Ж" not in vocab and "☃" not in vocab
    code, out, err = run_cli("sample", "-c", tiny_run.run_dir, "--prime", "ROMEO:Ж☃Ж", "--length", "20", "--seed", "1")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "Ж" in line]
    assert len(warnings) == 1 and "☃" in warnings[0]  # once, naming both characters
    assert err.count("Ж") == 1
    assert "Traceback" not in err
    assert out.startswith("ROMEO:") and len(out) >= len("ROMEO:") + 20
    assert "Ж" not in out and "☃" not in out


def test_sample_length_zero_prints_just_the_prime(run_cli, tiny_run):
    code, out, err = run_cli("sample", "-c", tiny_run.run_dir, "--prime", "ROMEO:", "--length", "0")
    assert code == 0, err
    assert out.rstrip("\n") == "ROMEO:"


# ---- eval ---------------------------------------------------------------------------------------------


def test_eval_table_shows_every_number(run_cli, tiny_run):
    code, out, err = run_cli("eval", "-c", tiny_run.run_dir)
    assert code == 0, err
    code_j, out_j, _ = run_cli("eval", "-c", tiny_run.run_dir, "--json")
    report = json.loads(out_j)
    assert f"{report['chars']:,}" in table_row(out, "chars")
    for label, key in (("nats", "nats_per_char"), ("bits", "bits_per_char"), ("perplexity", "perplexity")):
        row = table_row(out, label)
        shown = float(re.findall(r"\d+\.\d+", row)[-1])
        assert shown == pytest.approx(report[key], abs=1e-4), row
    assert re.search(r"\b0\b", table_row(out, "skipped"))


def test_eval_json_is_one_consistent_object(run_cli, tiny_run):
    code, out, err = run_cli("eval", "-c", tiny_run.run_dir, "--json")
    assert code == 0, err
    report = json.loads(out)  # the whole of stdout is one JSON object
    assert isinstance(report, dict)
    assert report["perplexity"] == pytest.approx(math.exp(report["nats_per_char"]), rel=1e-9)
    assert report["bits_per_char"] == pytest.approx(report["nats_per_char"] / math.log(2), rel=1e-9)
    n = len(tiny_run.corpus.read_text(encoding="utf-8"))
    assert report["chars"] == int(n * 0.1) - 1  # the validation split (last 10%), first char unscored
    assert report["skipped_unknown"] == 0
    # The same number the training loop logged for its best checkpoint (bf16 autocast may differ a little).
    rows = [json.loads(line) for line in (tiny_run.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert report["nats_per_char"] == pytest.approx(min(r["val_loss"] for r in rows), abs=2e-2)


def test_eval_file_counts_skipped_unknown_characters(run_cli, tiny_run, tmp_path):
    text = tmp_path / "other.txt"
    text.write_text("ROMEO:\nThe king ЖЖ is dead☃.\n", encoding="utf-8")
    code, out, err = run_cli("eval", text, "-c", tiny_run.run_dir, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["skipped_unknown"] == 3
    assert report["chars"] == len("ROMEO:\nThe king  is dead.\n") - 1


def test_eval_file_whose_path_looks_like_markup(run_cli, tiny_run, tmp_path):
    folder = tmp_path / "notes["  # with the slash below, the path reads `.../notes[/]x.txt`
    folder.mkdir()
    text = folder / "]x.txt"
    text.write_text(make_text(2_000), encoding="utf-8")
    code, out, err = run_cli("eval", text, "-c", tiny_run.run_dir)
    assert code == 0, err
    assert "[/]x.txt" in out


# ---- info ---------------------------------------------------------------------------------------------


def test_info_describes_the_model(run_cli, tiny_run):
    code, out, err = run_cli("info", "-c", tiny_run.run_dir)
    assert code == 0, err
    vocab = len(set(tiny_run.corpus.read_text(encoding="utf-8")))
    assert "lstm" in table_row(out, "model") and "2x32" in table_row(out, "model")
    assert f"{lstm_parameters(vocab, embed=16, hidden=32, layers=2):,}" in table_row(out, "parameters")
    assert re.search(rf"\b{vocab} characters", table_row(out, "vocabulary"))
    assert re.search(r"\b40\b", table_row(out, "steps"))


def test_info_of_last_pt_and_of_the_run_folder(run_cli, tiny_run):
    code, out, err = run_cli("info", "-c", tiny_run.run_dir / "last.pt")
    assert code == 0, err
    assert "last.pt" in out
    code, out, err = run_cli("info", "-c", tiny_run.run_dir)
    assert code == 0, err
    assert "best.pt" in out  # a run folder means its best.pt


# ---- help, run folders --------------------------------------------------------------------------------


def test_python_dash_m_help():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "charrnn", "--help"], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0, proc.stderr
    for command in ("train", "sample", "eval", "info"):
        assert re.search(rf"\b{command}\b", proc.stdout), proc.stdout
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("command", ["train", "sample", "eval", "info", "cache", None])
def test_help_lists_every_option_and_no_flag_asks_for_a_value(run_cli, monkeypatch, command):
    """Every option the command accepts is in its help; a value option names its type; a flag (which takes
    no value) shows none: typer >= 0.2x printed `--resume <bool>` and even `--help <bool>`."""
    import typer

    from charrnn.cli import app

    monkeypatch.setenv("COLUMNS", "250")  # one line per option
    code, out, _ = run_cli(*([command] if command else []), "--help")
    assert code == 0
    group = typer.main.get_command(app)
    params = group.commands[command].params if command else group.params
    lines = out.splitlines()
    for param in [p for p in params if p.param_type_name == "option"] + [None]:
        flag = "--help" if param is None else param.opts[0]
        line = next(x for x in lines if re.match(rf"\W*{re.escape(flag)}\b", x))  # the option's own row
        if param is None or param.is_flag:
            assert not re.search(r"<\w+>", line), line
        else:
            assert re.search(r"<(int|float|str|path|list\[str\])>", line), line
    assert "<bool>" not in out


def test_second_default_train_goes_to_a_new_run_folder(run_cli, tiny_corpus, tmp_path):
    assert run_cli("train", tiny_corpus, *TINY)[0] == 0
    first = tmp_path / "checkpoints" / "tiny"
    before = hashes(first)
    code, out, err = run_cli("train", tiny_corpus, *TINY, "--seed", "7")
    assert code == 0, err
    second = tmp_path / "checkpoints" / "tiny-2"
    assert (second / "best.pt").is_file() and (second / "last.pt").is_file()
    assert hashes(first) == before  # the first run is untouched
    assert hashes(second)["last.pt"] != before["last.pt"]
    assert "tiny-2" in err


def test_out_of_an_existing_run_without_resume_refuses(run_cli, tiny_corpus, tmp_path):
    run = tmp_path / "myrun"
    assert run_cli("train", tiny_corpus, *TINY, "--out", run)[0] == 0
    before = hashes(run)
    code, out, err = run_cli("train", tiny_corpus, *TINY, "--out", run)
    assert code == 1
    assert "--resume" in err and "Traceback" not in err
    assert hashes(run) == before


def test_resume_continues_to_more_steps(run_cli, tiny_corpus, tmp_path):
    run = tmp_path / "run"
    assert run_cli("train", tiny_corpus, *TINY, "--out", run)[0] == 0
    code, out, err = run_cli("train", "--resume", "--out", run, "--steps", "60")
    assert code == 0, err
    assert torch.load(run / "last.pt", map_location="cpu", weights_only=True)["step"] == 60
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [20, 40, 60]


# ---- vocabularies beyond one byte ---------------------------------------------------------------------


def test_more_than_255_distinct_characters_end_to_end(run_cli, tmp_path):
    rng = random.Random(0)
    cjk = [chr(0x4E00 + i) for i in range(400)]
    text = "".join(c + ("\n" if rng.random() < 0.05 else "") for c in (rng.choice(cjk) for _ in range(12_000)))
    corpus = tmp_path / "cjk.txt"
    corpus.write_text(text, encoding="utf-8")
    vocab = set(text)
    assert len(vocab) > 255

    code, out, err = run_cli("train", corpus, *TINY)
    assert code == 0, err
    run = tmp_path / "checkpoints" / "cjk"
    assert vocab_of(run / "best.pt") == "".join(sorted(vocab))

    code, out, err = run_cli("sample", "-c", run, "--length", "60", "--seed", "1", "--prime", "\u4e00")
    assert code == 0, err
    assert out.startswith("\u4e00") and set(out) <= vocab | {"\n"}
    assert len(out.rstrip("\n")) >= 60
    assert any(0x4E00 <= ord(c) < 0x4E00 + 400 for c in out[1:])

    code, out, err = run_cli("eval", "-c", run, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["chars"] == int(len(text) * 0.1) - 1 and report["skipped_unknown"] == 0
    assert math.isfinite(report["nats_per_char"])

    code, out, err = run_cli("info", "-c", run)
    assert code == 0, err
    assert f"{len(vocab)} characters" in table_row(out, "vocabulary")


def test_regularisation_flags_reach_the_model_and_info(run_cli, tiny_corpus, tmp_path):
    run = tmp_path / "reg"
    flags = [*TINY, "--embed", "32", "--locked-dropout", "--weight-drop", "0.2", "--tie-weights"]
    code, out, err = run_cli("train", tiny_corpus, *flags, "--out", run)
    assert code == 0, err
    said = re.search(r"dropout ([\d.]+): --steps allows about ([\d.]+) passes", err)  # the automatic choice
    assert said and float(said[1]) == auto_dropout(float(said[2]))
    info = run_cli("info", "-c", run)[1]
    assert all(word in table_row(info, "model") for word in (f"dropout {said[1]},", "locked,", "weight drop 0.2"))
    assert "tied" in info  # the table wraps the long model line


def test_cache_lists_and_clears_cached_corpora_and_nothing_else(run_cli, tiny_corpus, tmp_path):
    from charrnn import data

    data.read_corpus(tiny_corpus)
    root = data.cache_root()
    (root / "notes.txt").write_text("not charrnn's", encoding="utf-8")
    code, out, _ = run_cli("cache")
    assert code == 0 and "tiny.txt" in out and "30," in out  # name and character count of the corpus
    [entry] = data.cached_corpora()
    assert entry.source == "tiny.txt" and entry.bytes > entry.chars
    code, _, err = run_cli("cache", "--clear")
    assert code == 0 and "removed 1 cached corpora" in err
    assert data.cached_corpora() == [] and (root / "notes.txt").exists()
    assert data.read_corpus(tiny_corpus).info.chars == entry.chars  # rebuilt on use
