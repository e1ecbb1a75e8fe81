"""Corpus reading and the TBPTT layout: strict UTF-8 with offsets, the id cache, streams and windows."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charrnn import data
from charrnn.errors import CharRNNError


def write(tmp_path, content: bytes, name="c.txt"):
    p = tmp_path / name
    p.write_bytes(content)
    return p


def test_read_corpus_ids_and_vocab(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARRNN_CACHE", str(tmp_path / "cache"))
    text = "To be, or not to be: that is the question.\n" * 50
    corpus = data.read_corpus(write(tmp_path, text.encode()))
    assert corpus.vocab.chars == "".join(sorted(set(text)))
    assert corpus.ids.dtype == np.uint8
    assert corpus.vocab.decode(corpus.ids) == text
    assert corpus.info.chars == len(text) and corpus.info.size == len(text.encode())


def test_cache_hit_is_a_memory_map_and_keyed_by_content(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARRNN_CACHE", str(tmp_path / "cache"))
    p = write(tmp_path, b"abcabc\n" * 100)
    first = data.read_corpus(p)
    second = data.read_corpus(p)
    assert isinstance(second.ids, np.memmap)
    assert np.array_equal(first.ids, second.ids)
    assert len(list((tmp_path / "cache").iterdir())) == 1
    p.write_bytes(b"xyzxyz\n" * 100)  # same size, other content: must not reuse the old ids
    third = data.read_corpus(p)
    assert third.vocab.chars == "\nxyz"
    assert len(list((tmp_path / "cache").iterdir())) == 2


def test_chunked_decoding_handles_split_characters_and_offsets(tmp_path):
    text = "añ中🙂" * 1000
    p = write(tmp_path, text.encode())
    assert "".join(data.iter_text(p, chunk_bytes=7)) == text  # 7 bytes splits multi-byte characters
    bad = "añ中".encode() * 10 + b"\xff" + b"tail"
    p = write(tmp_path, bad, "bad.txt")
    with pytest.raises(CharRNNError, match=f"byte offset {len('añ中'.encode()) * 10}"):
        list(data.iter_text(p, chunk_bytes=5))


def test_more_than_255_characters_use_uint16(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARRNN_CACHE", str(tmp_path / "cache"))
    text = "".join(chr(0x4E00 + i) for i in range(300)) * 3
    corpus = data.read_corpus(write(tmp_path, text.encode()))
    assert len(corpus.vocab) == 300 and corpus.ids.dtype == np.uint16
    assert corpus.vocab.decode(corpus.ids) == text


def test_split_is_first_and_last():
    ids = np.arange(100)
    train, val = data.split(ids, 0.1)
    assert np.array_equal(train, np.arange(90)) and np.array_equal(val, np.arange(90, 100))
    train, val = data.split(ids, 0.0)
    assert len(train) == 100 and len(val) == 0


def test_streams_layout_matches_the_drawing():
    ids = np.arange(24)  # a..x in the docstring
    s = data.Streams(ids, batch_size=3, seq_len=3)
    assert s.stream_len == 7 and s.windows == 2
    x0, y0 = s.window(0)
    x1, y1 = s.window(1)
    assert x0.tolist() == [[0, 1, 2], [7, 8, 9], [14, 15, 16]]
    assert x1.tolist() == [[3, 4, 5], [10, 11, 12], [17, 18, 19]]
    assert np.array_equal(y0, x0 + 1) and np.array_equal(y1, x1 + 1)  # targets: inputs shifted by one
    assert np.array_equal(s.window(2)[0], x0) and s.starts_epoch(2) and not s.starts_epoch(1)


@settings(max_examples=100, deadline=None)
@given(n=st.integers(10, 400), b=st.integers(1, 6), t=st.integers(1, 9))
def test_each_position_once_per_epoch_and_windows_consecutive(n, b, t):
    ids = np.arange(n)
    if (n - 1) // b // t < 1:
        with pytest.raises(CharRNNError, match="--batch-size"):
            data.Streams(ids, b, t)
        return
    s = data.Streams(ids, b, t)
    seen = np.concatenate([s.window(k)[0].ravel() for k in range(s.windows)])
    assert len(seen) == len(set(seen.tolist()))  # no position twice in an epoch
    assert len(seen) == b * s.windows * t  # and every trained position once
    for k in range(s.windows - 1):
        x, _ = s.window(k)
        nxt, _ = s.window(k + 1)
        assert np.array_equal(nxt[:, 0], x[:, -1] + 1)  # each row continues where it stopped


@pytest.mark.parametrize("world", [2, 4])
def test_ranks_partition_the_single_process_batch(world):
    ids = np.arange(1000)
    whole = data.Streams(ids, 8, 5)
    for step in range(3):
        parts = [data.Streams(ids, 8, 5, rank=r, world=world).window(step)[0] for r in range(world)]
        assert np.array_equal(np.concatenate(parts), whole.window(step)[0])


def test_batch_not_divisible_by_world():
    with pytest.raises(CharRNNError, match="multiple"):
        data.Streams(np.arange(1000), 6, 5, rank=0, world=4)


def test_a_new_corpus_is_hashed_and_counted_in_one_read_and_a_cached_one_only_hashed(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARRNN_CACHE", str(tmp_path / "cache"))
    p = tmp_path / "c.txt"
    p.write_text("hello world\n" * 500, encoding="utf-8")
    reads = []
    real_iter, real_digest = data.iter_text, data.file_digest
    monkeypatch.setattr(data, "iter_text", lambda *a, **k: (reads.append("decode"), real_iter(*a, **k))[1])
    monkeypatch.setattr(data, "file_digest", lambda *a: (reads.append("hash"), real_digest(*a))[1])
    first = data.read_corpus(p)
    assert reads == ["decode", "decode"]  # hash + count, then encode: never a separate hashing read
    assert first.info.sha256 == real_digest(p)
    reads.clear()
    again = data.read_corpus(p)
    assert reads == ["hash"] and np.array_equal(np.asarray(again.ids), np.asarray(first.ids))
