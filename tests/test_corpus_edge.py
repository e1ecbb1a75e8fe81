"""Unusual but valid corpora through the whole CLI: a byte-order mark, Windows line endings, a single
repeated character, one 10 MB line, and characters outside the Basic Multilingual Plane."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import torch
from conftest import TINY, make_text


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.lower().startswith("warning")]


def eval_json(run_cli, *args) -> dict:
    code, out, err = run_cli("eval", *args, "--json")
    assert code == 0, err
    return json.loads(out)


def test_byte_order_mark_is_stripped(run_cli, tmp_path):
    text = make_text(20_000, seed=1)
    corpus = tmp_path / "bom.txt"
    corpus.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    code, out, err = run_cli("train", corpus, *TINY)
    assert code == 0, err
    run = tmp_path / "checkpoints" / "bom"
    ckpt = load(run / "best.pt")
    assert "\ufeff" not in ckpt["vocab"]
    assert ckpt["vocab"] == "".join(sorted(set(text)))
    assert ckpt["corpus"]["chars"] == len(text)  # the mark is not a character of the text
    report = eval_json(run_cli, corpus, "-c", run)  # scoring the file strips it too: nothing unknown
    assert report["skipped_unknown"] == 0 and report["chars"] == len(text) - 1


def test_windows_line_endings_are_kept(run_cli, tmp_path):
    text = make_text(20_000, seed=2).replace("\n", "\r\n")
    corpus = tmp_path / "crlf.txt"
    corpus.write_bytes(text.encode("utf-8"))
    code, out, err = run_cli("train", corpus, *TINY)
    assert code == 0, err
    run = tmp_path / "checkpoints" / "crlf"
    vocab = load(run / "best.pt")["vocab"]
    assert "\r" in vocab and "\n" in vocab
    assert load(run / "best.pt")["corpus"]["chars"] == len(text)  # nothing translated or dropped

    report = eval_json(run_cli, corpus, "-c", run)
    assert report["skipped_unknown"] == 0 and report["chars"] == len(text) - 1

    code, out, err = run_cli("sample", "-c", run, "--prime", "ROMEO:\r\n", "--length", "60", "--seed", "1")
    assert code == 0, err
    assert warnings(err) == []  # \r is a character the model knows
    assert out.startswith("ROMEO:\r\n")
    assert len(out) >= len("ROMEO:\r\n") + 60 and set(out) <= set(vocab)


def test_one_repeated_character(run_cli, tmp_path):
    corpus = tmp_path / "aaa.txt"
    corpus.write_text("a" * 5_000, encoding="utf-8")
    code, out, err = run_cli("train", corpus, *TINY)
    assert code == 0, err
    run = tmp_path / "checkpoints" / "aaa"
    assert load(run / "best.pt")["vocab"] == "a"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows and all(math.isfinite(r["val_loss"]) and abs(r["val_loss"]) < 1e-6 for r in rows)

    code, out, err = run_cli("sample", "-c", run, "--length", "30", "--seed", "1")
    assert code == 0, err
    assert out == "a" * 30 + "\n"

    report = eval_json(run_cli, "-c", run)
    assert report["perplexity"] == 1.0 or abs(report["perplexity"] - 1.0) < 1e-6
    assert report["bits_per_char"] < 1e-6


def test_ten_megabyte_single_line(run_cli, tmp_path):
    rng = np.random.default_rng(0)
    letters = np.frombuffer(b"abcdefghij klmnopqrst uvwxyz,.", dtype=np.uint8)
    raw = letters[rng.integers(0, len(letters), size=10_000_000)].tobytes()  # no newline anywhere
    corpus = tmp_path / "oneline.txt"
    corpus.write_bytes(raw)
    code, out, err = run_cli("train", corpus, *TINY, "--steps", "3", "--eval-every", "3", "--val-frac", "0.001")
    assert code == 0, err
    ckpt = load(tmp_path / "checkpoints" / "oneline" / "last.pt")
    assert ckpt["step"] == 3
    assert ckpt["corpus"]["chars"] == 10_000_000
    assert "\n" not in ckpt["vocab"] and ckpt["vocab"] == "".join(sorted(set(raw.decode("ascii"))))
    # The sampler's default prime is a newline the model has never seen: it must still generate.
    code, out, err = run_cli("sample", "-c", tmp_path / "checkpoints" / "oneline", "--length", "20", "--seed", "1")
    assert code == 0, err
    assert len(out.rstrip("\n")) == 20 and "\n" not in out.rstrip("\n")


def test_characters_outside_the_basic_multilingual_plane(run_cli, tmp_path):
    emoji = ["\U0001f600", "\U0001f680", "\U0001f389", "\U0001f44d", "\U0001d518", "\U0001f9e0"]
    rng = random.Random(3)
    words = make_text(20_000, seed=3).split(" ")
    text = " ".join(w + (rng.choice(emoji) if rng.random() < 0.3 else "") for w in words)
    corpus = tmp_path / "emoji.txt"
    corpus.write_text(text, encoding="utf-8")
    assert set(emoji) <= set(text)

    code, out, err = run_cli("train", corpus, *TINY)
    assert code == 0, err
    run = tmp_path / "checkpoints" / "emoji"
    vocab = load(run / "best.pt")["vocab"]
    assert set(emoji) <= set(vocab)  # each one character, not surrogate halves or UTF-8 bytes
    assert all(ord(c) <= 0xFFFF or c in emoji for c in vocab)
    assert len(vocab) == len(set(text))

    code, out, err = run_cli("sample", "-c", run, "--prime", "\U0001f680", "--length", "200", "--seed", "1")
    assert code == 0, err
    assert warnings(err) == []
    assert out.startswith("\U0001f680") and set(out) <= set(vocab)
    assert len(out.rstrip("\n")) >= 200

    report = eval_json(run_cli, corpus, "-c", run)
    assert report["skipped_unknown"] == 0 and report["chars"] == len(text) - 1
    assert math.isfinite(report["nats_per_char"])


def test_no_warning_about_a_prime_nobody_gave(run_cli, tmp_path):
    corpus = tmp_path / "flat.txt"
    corpus.write_text(make_text(20_000, seed=4).replace("\n", " "), encoding="utf-8")
    assert run_cli("train", corpus, *TINY)[0] == 0
    code, out, err = run_cli("sample", "-c", tmp_path / "checkpoints" / "flat", "--length", "20", "--seed", "1")
    assert code == 0, err
    assert len(out.rstrip("\n")) == 20
    assert warnings(err) == [], err
