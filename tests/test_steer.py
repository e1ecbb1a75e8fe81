"""Steering: stop strings end each sample at the right place, beam search of width 1 is greedy, jsonl lines
parse and their nats/char match `charrnn eval` on the same text, primes come from a file or stdin."""

from __future__ import annotations

import io
import json

import pytest

from charrnn import checkpoint
from charrnn.config import SampleConfig
from charrnn.errors import CharRNNError
from charrnn.sample import generate
from charrnn.steer import StopWatch, beam_search, steered, unescape


def test_unescape_reads_what_a_shell_user_types():
    assert unescape(r"\n") == "\n" and unescape(r"END\t") == "END\t" and unescape("é") == "é"
    assert unescape(r"\\n") == "\\n"
    with pytest.raises(CharRNNError, match="broken escape"):
        unescape("\\x4")


def test_stop_watch_holds_back_a_half_written_stop_and_ends_at_the_first():
    watch = StopWatch(1, ["END", "\n\n"])
    shown = "".join(watch.feed(0, c) for c in "abcEN")
    assert shown == "abc"  # "EN" might become "END": held back
    assert watch.feed(0, "D") == "" and watch.done[0]  # the stop itself is not shown
    assert watch.feed(0, "more") == "" and watch.flush(0) == ""
    keep = StopWatch(1, ["END"], keep=True)
    assert "".join(keep.feed(0, c) for c in "xyENDzz") == "xyEND"
    plain = StopWatch(1, ["END"])
    assert "".join(plain.feed(0, c) for c in "xyEN") + plain.flush(0) == "xyEN"  # no stop: nothing lost


def test_each_of_n_samples_ends_where_it_first_writes_a_stop(tiny_run):
    model, vocab = checkpoint.build_model(checkpoint.load(tiny_run.run_dir / "best.pt"))
    model.eval()
    cfg = SampleConfig(length=300, seed=11, num=6)
    columns = list(zip(*generate(model, vocab, cfg)))  # (num, length) characters
    free = ["".join(col) for col in columns]
    stops = ["\n", "the"]
    texts = [""] * cfg.num
    for i, piece in steered(model, vocab, cfg, stops):
        texts[i] += piece
    for full, got in zip(free, texts):
        ends = [full.find(s) for s in stops if s in full]
        assert got == (full[: min(ends)] if ends else full)
    assert any(("\n" in full or "the" in full) for full in free)  # the test did exercise a stop


def test_beam_of_one_is_greedy_and_wider_beams_are_at_least_as_likely(tiny_run):
    model, vocab = checkpoint.build_model(checkpoint.load(tiny_run.run_dir / "best.pt"))
    model.eval()
    greedy = "".join(c[0] for c in generate(model, vocab, SampleConfig(temp=0.0, length=40, prime="KING")))
    [(one, one_score)] = beam_search(model, vocab, "KING", 1, 40)
    assert one == greedy
    [(wide, wide_score)] = beam_search(model, vocab, "KING", 5, 40)
    assert len(wide) == 40 and wide_score >= one_score - 1e-9
    best3 = beam_search(model, vocab, "KING", 5, 40, best=3)
    assert len(best3) == 3 and [s for _, s in best3] == sorted((s for _, s in best3), reverse=True)


def test_jsonl_lines_parse_and_their_nats_match_eval_on_the_same_text(run_cli, tiny_run, tmp_path):
    code, out, err = run_cli(
        "sample", "-c", tiny_run.run_dir, "--num", "3", "--length", "120", "--seed", "5", "--format", "jsonl"
    )
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["sample"] for r in rows] == [1, 2, 3] and all(r["seed"] == 5 for r in rows)
    for i, row in enumerate(rows):
        f = tmp_path / f"s{i}.txt"
        f.write_text(row["text"], encoding="utf-8")
        code, out, err = run_cli("eval", f, "-c", tiny_run.run_dir, "--json")
        assert code == 0, err
        assert row["nats_per_char"] == pytest.approx(json.loads(out)["nats_per_char"], abs=1e-6)


def test_prime_from_a_file_or_stdin_equals_the_same_prime_inline(run_cli, tiny_run, tmp_path, monkeypatch):
    args = ("sample", "-c", tiny_run.run_dir, "--length", "50", "--seed", "2")
    inline = run_cli(*args, "--prime", "KING:\n")
    (tmp_path / "p.txt").write_text("KING:\n", encoding="utf-8")
    from_file = run_cli(*args, "--prime-file", tmp_path / "p.txt")
    monkeypatch.setattr("sys.stdin", io.StringIO("KING:\n"))
    from_stdin = run_cli(*args, "--prime", "-")
    assert inline[0] == from_file[0] == from_stdin[0] == 0
    assert inline[1] == from_file[1] == from_stdin[1] and inline[1].startswith("KING:\n")
    code, _, err = run_cli(*args, "--prime-file", tmp_path / "missing.txt")
    assert code == 1 and "--prime-file" in err and "not found" in err and "Traceback" not in err
