"""sample --check-copy: the longest span of a sample found verbatim in the training text, and the share of
its 20-character windows found there, from an index built once into the corpus cache."""

from __future__ import annotations

import json
import random
import shutil

import pytest

from charrnn import checkpoint, copycheck
from charrnn.errors import CharRNNError


def random_text(n: int, alphabet: str, seed: int) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(alphabet) for _ in range(n))


def test_a_span_planted_in_the_corpus_is_found_whole(tmp_path):
    corpus = random_text(50_000, "abcdefghij klmnop\n", seed=1)
    (tmp_path / "c.txt").write_text(corpus, encoding="utf-8")
    index = copycheck.CorpusIndex(tmp_path / "c.txt")
    assert list((tmp_path / ".cache").rglob("windows20-*.u64"))  # built once, into the corpus cache
    planted = corpus[12_345 : 12_345 + 60]
    text = "XYZ" * 10 + planted + "QRS" * 10  # characters the corpus never had around it
    found = copycheck.check(text, [index])
    assert found.longest == 60 and found.span == planted
    assert found.windows == len(text) - 19 and found.found == 60 - 19
    none = copycheck.check("XYZ" * 40, [index])
    assert none.longest == 0 and "none of 20 characters or more;" in none.summary()
    assert f"{found.longest} characters: " in found.summary()
    again = copycheck.CorpusIndex(tmp_path / "c.txt")  # from the cache
    assert copycheck.check(text, [again]) == found


def test_windows_that_occur_apart_are_not_reported_as_one_copied_span(tmp_path):
    text = "abcdefghijklmnopqrstuvwxyz0123ABCDEFGHIJ"  # 40 characters
    (tmp_path / "c.txt").write_text(text[:30] + "#" + text[10:] + "\n", encoding="utf-8")
    found = copycheck.check(text, [copycheck.CorpusIndex(tmp_path / "c.txt")])
    assert found.found == found.windows == 21  # every window occurs somewhere...
    assert found.longest == 30  # ...but the longest verbatim span is one of the two halves


def test_sample_check_copy_on_the_command_line(tiny_run, tmp_path, run_cli):
    code, out, err = run_cli("sample", "-c", tiny_run.run_dir, "--seed", 1, "--length", 300, "--check-copy")
    assert code == 0 and "copy check: longest span found verbatim in the training text" in err
    code, out, err = run_cli(
        "sample", "-c", tiny_run.run_dir, "--num", 2, "--length", 200, "--check-copy", "--format", "jsonl"
    )
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and all(0 <= r["copy"]["share"] <= 1 and r["copy"]["windows"] == 181 for r in rows)
    for r in rows:  # the reported span really is in the corpus
        assert r["copy"]["span"] in tiny_run.corpus.read_text(encoding="utf-8")
    moved = tmp_path / "run"
    shutil.copytree(tiny_run.run_dir, moved)
    ckpt = checkpoint.load(moved / "best.pt")
    for f in [ckpt["corpus"], *ckpt["files"]]:
        f["path"] = "/nowhere/tiny.txt"
    checkpoint.save({k: v for k, v in ckpt.items() if k not in ("format", "version")}, moved / "best.pt")
    code, out, err = run_cli("sample", "-c", moved, "--check-copy", "--length", 50)
    assert code == 1 and "is not on this machine" in err and "Traceback" not in err


def test_the_bundled_model_checks_against_the_corpus_it_ships_with(run_cli):
    code, _, err = run_cli("sample", "-c", checkpoint.BUNDLED, "--seed", 3, "--length", 200, "--check-copy")
    assert code == 0 and "copy check" in err


def test_no_recorded_corpus_is_a_clear_error():
    with pytest.raises(CharRNNError, match="records no training text"):
        copycheck.training_files([])
