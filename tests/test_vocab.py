"""Vocab: round trips, sorted order, the unknown-character policy, the id dtype."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charrnn.errors import CharRNNError
from charrnn.vocab import Vocab, smallest_id_dtype


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1))
def test_round_trip_any_text(text):
    vocab = Vocab.from_text(text)
    ids = vocab.encode(text)
    assert ids.shape == (len(text),)
    assert vocab.decode(ids) == text
    assert vocab.chars == "".join(sorted(set(text)))


def test_from_counts_matches_sorted_set():
    text = "héllo wörld 🙂 中文\r\n"
    counts = np.bincount(np.frombuffer(text.encode("utf-32-le"), "<u4"), minlength=0x110000)
    assert Vocab.from_counts(counts).chars == "".join(sorted(set(text)))


def test_unknown_policy():
    vocab = Vocab.from_text("abc\n")
    with pytest.raises(CharRNNError, match="not in the vocabulary"):
        vocab.encode("abz")
    assert vocab.decode(vocab.encode("aXbYc🙂", unknown="skip")) == "abc"
    assert vocab.unknown("aXbXY🙂") == "XY🙂"
    assert vocab.unknown("abc") == ""


def test_rejects_unsorted_or_duplicate():
    with pytest.raises(CharRNNError):
        Vocab("ba")
    with pytest.raises(CharRNNError):
        Vocab("aa")


@pytest.mark.parametrize(
    "size,dtype", [(1, np.uint8), (256, np.uint8), (257, np.uint16), (65536, np.uint16), (65537, np.uint32)]
)
def test_smallest_dtype(size, dtype):
    assert smallest_id_dtype(size) == np.dtype(dtype)
