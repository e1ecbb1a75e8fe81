"""Vocab: characters <-> integer ids, vectorised both ways, with an explicit unknown-character policy.

Knows nothing of files or models. Characters are Unicode code points (so emoji and CJK work), sorted by
code point, which is the order of Python's ``sorted(set(text))``.
"""

from __future__ import annotations

import numpy as np

from charrnn.errors import CharRNNError

MAX_CODE_POINT = 0x10FFFF


def smallest_id_dtype(vocab_size: int) -> np.dtype:
    """The narrowest unsigned integer type that holds every id: a 100 MB corpus stays 100 MB on disk."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    raise CharRNNError(f"vocabulary of {vocab_size} characters is larger than Unicode")


def code_points(text: str) -> np.ndarray:
    """The text's code points as a (len(text),) uint32 array, without a Python loop per character."""
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")


class Vocab:
    """The characters a model knows, in id order."""

    def __init__(self, chars: str) -> None:
        if len(set(chars)) != len(chars) or list(chars) != sorted(chars):
            raise CharRNNError("vocabulary must be distinct characters sorted by code point")
        if not chars:
            raise CharRNNError("vocabulary is empty: the corpus has no characters")
        self.chars = chars
        self._cps = code_points(chars)  # (V,) id -> code point
        # (max_cp + 2,) code point -> id, with -1 for unknown; one slot past the end catches everything above.
        self._lut = np.full(int(self._cps.max()) + 2, -1, dtype=np.int64)
        self._lut[self._cps] = np.arange(len(chars))

    @classmethod
    def from_counts(cls, counts: np.ndarray) -> Vocab:
        """From a per-code-point histogram: every character that occurs, sorted."""
        present = np.flatnonzero(counts).astype("<u4")
        return cls(present.tobytes().decode("utf-32-le"))

    @classmethod
    def from_text(cls, text: str) -> Vocab:
        return cls("".join(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.chars)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and other.chars == self.chars

    def __contains__(self, char: str) -> bool:
        return char in self.chars

    def unknown(self, text: str) -> str:
        """The distinct characters of ``text`` outside the vocabulary, in order of first appearance."""
        return "".join(dict.fromkeys(c for c in text if c not in self.chars)) if text else ""

    def encode(self, text: str, unknown: str = "error", dtype: np.dtype | type = np.int64) -> np.ndarray:
        """Ids of ``text`` as a (len,) array. ``unknown``: "error" raises, "skip" drops those characters."""
        ids = self.encode_code_points(code_points(text), unknown)
        return ids.astype(dtype, copy=False)

    def encode_code_points(self, cps: np.ndarray, unknown: str = "error") -> np.ndarray:
        """Vectorised lookup of a (N,) code-point array; returns (N',) int64 ids (N' < N when skipping)."""
        ids = self._lut[np.minimum(cps, len(self._lut) - 1)]  # (N,)
        missing = ids < 0
        if missing.any():
            if unknown == "skip":
                return ids[~missing]
            bad = np.unique(cps[missing])[:10].astype("<u4").tobytes().decode("utf-32-le")
            raise CharRNNError(f"characters not in the vocabulary: {bad!r}")
        return ids

    def decode(self, ids: np.ndarray | list[int]) -> str:
        return self._cps[np.asarray(ids, dtype=np.int64)].astype("<u4").tobytes().decode("utf-32-le")

    def preview(self, limit: int = 60) -> str:
        shown = self.chars[:limit].encode("unicode_escape").decode("ascii")
        return shown + ("..." if len(self.chars) > limit else "")
