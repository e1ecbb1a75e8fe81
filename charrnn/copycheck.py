"""How much of a generated text the model copied from its training corpus: the longest span found verbatim
in the corpus, and the share of the text's 20-character windows that appear in it.

The index is every 20-character window of the corpus as a 64-bit rolling hash, sorted, kept on disk in the
corpus cache beside the encoded ids (8 bytes a character: 800 MB for a 100 MB corpus, built once, in
about a minute there); a lookup is a binary search in a memory map, so checking a sample reads a few
pages. The longest span is confirmed with a search of the corpus bytes, so a chain of windows that each
appear somewhere, but not together, is never reported as copied. Imports no torch.
"""

from __future__ import annotations

import mmap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charrnn import data
from charrnn.atomic import replace_with
from charrnn.errors import CharRNNError
from charrnn.locate import training_file

WINDOW = 20  # characters: long enough that a match is a copy, not a common phrase
BASE = np.uint64(0x100000001B3)  # odd, so the rolling hash mixes every character in
INDEX_FORMAT = 1


@dataclass(frozen=True)
class Copy:
    longest: int  # characters of the longest span found verbatim in the corpus (0 if under WINDOW)
    span: str  # that span
    windows: int  # WINDOW-character windows in the text
    found: int  # how many of them appear in the corpus

    @property
    def share(self) -> float:
        return self.found / self.windows if self.windows else 0.0

    def summary(self) -> str:
        """One line for the user. A longest span of 0 means none reached WINDOW characters: shorter spans are
        not searched for (any word is in the corpus), so "0 characters" would misstate it."""
        if self.longest:
            span = f"{self.longest} characters: {self.span[:80]!r}{'...' if len(self.span) > 80 else ''}"
        else:
            span = f"none of {WINDOW} characters or more"
        found = f"{self.share:.0%} of its {self.windows} {WINDOW}-character windows appear there"
        return f"longest span found verbatim in the training text {span}; {found}"

    def as_dict(self) -> dict:
        return {"longest": self.longest, "span": self.span, "windows": self.windows, "share": round(self.share, 4)}


def _hashes(ids: np.ndarray) -> np.ndarray:
    """(n - WINDOW + 1,) the hash of every window of `ids`; uint64 arithmetic wraps, which is the modulus."""
    n = len(ids) - WINDOW + 1
    if n <= 0:
        return np.zeros(0, np.uint64)
    h = np.zeros(n, np.uint64)
    with np.errstate(over="ignore"):
        for k in range(WINDOW):
            h *= BASE
            h += np.asarray(ids[k : k + n], dtype=np.uint64) + np.uint64(1)  # + 1: id 0 still counts
    return h


class CorpusIndex:
    """The windows of one corpus file, built on first use into its cache folder."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        corpus = data.read_corpus(self.path)
        self.ids = {c: i for i, c in enumerate(corpus.vocab.chars)}  # character -> the corpus's id
        folder = data.cache_root() / f"{corpus.info.sha256[:24]}-{corpus.info.size}"
        index = folder / f"windows{WINDOW}-v{INDEX_FORMAT}.u64"
        if not index.exists():
            folder.mkdir(parents=True, exist_ok=True)
            replace_with(index, np.sort(_hashes(corpus.ids)).tofile)
        self.sorted = np.memmap(index, dtype=np.uint64, mode="r") if index.stat().st_size else np.zeros(0, np.uint64)

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        """(m,) bool: which window hashes occur in the corpus."""
        if len(self.sorted) == 0:
            return np.zeros(len(hashes), bool)
        at = np.searchsorted(self.sorted, hashes)  # (m,)
        return self.sorted[np.minimum(at, len(self.sorted) - 1)] == hashes

    def has_text(self, text: str) -> bool:
        """Whether `text` occurs verbatim in the corpus file (a search of its bytes)."""
        if not text:
            return True
        with open(self.path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            return m.find(text.encode("utf-8")) >= 0


def training_files(recorded: Sequence[dict]) -> list[Path]:
    """The model's training files on this machine: where they were recorded, or, for a model that records
    its corpus by name (the bundled one), the copy that ships with charrnn."""
    found = []
    for f in recorded:
        where = training_file(f["path"], f.get("size"))
        if where is None:
            raise CharRNNError(
                f"the model's training text {f['path']} is not on this machine, so --check-copy cannot compare "
                "against it (sample on the machine that trained it, or put the file back)"
            )
        found.append(where)
    if not found:
        raise CharRNNError("this model records no training text, so --check-copy has nothing to compare against")
    return found


def check(text: str, corpora: Sequence[CorpusIndex]) -> Copy:
    """The copy report of `text` against one or several corpus files."""
    m = len(text) - WINDOW + 1
    if m <= 0 or not corpora:
        return Copy(0, "", max(0, m), 0)
    found = np.zeros(m, bool)
    for index in corpora:
        codes = np.array([index.ids.get(c, -1) for c in text])  # (L,) -1: a character the corpus never had
        ok = np.convolve(codes < 0, np.ones(WINDOW, int), "valid") == 0  # (m,) windows of known characters only
        found |= index.contains(_hashes(np.maximum(codes, 0))) & ok
    longest, span = 0, ""
    runs = _runs(found)  # (start, windows) of consecutive found windows, longest first
    for start, count in runs:
        if count + WINDOW - 1 <= longest:
            break
        best = _longest_present(text[start : start + count + WINDOW - 1], corpora)
        if len(best) > longest:
            longest, span = len(best), best
    return Copy(longest, span, m, int(found.sum()))


def _runs(found: np.ndarray) -> list[tuple[int, int]]:
    edges = np.diff(np.r_[0, found.astype(int), 0])
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return sorted(zip(starts.tolist(), (ends - starts).tolist()), key=lambda r: -r[1])


def _longest_present(run: str, corpora: Sequence[CorpusIndex]) -> str:
    """The longest substring of `run` (whose windows all occur somewhere) found verbatim in a corpus: the
    whole run in one search when it was copied as a whole, else the longest piece, start by start."""
    if any(c.has_text(run) for c in corpora):
        return run
    best, i = "", 0
    while len(run) - i > len(best):
        lo, hi = len(best), len(run) - i  # grow the span starting at i as far as a corpus has it
        if not any(c.has_text(run[i : i + lo + 1]) for c in corpora):
            i += 1
            continue
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if any(c.has_text(run[i : i + mid]) for c in corpora):
                lo = mid
            else:
                hi = mid - 1
        if lo > len(best):
            best = run[i : i + lo]
        i += 1
    return best if len(best) >= WINDOW else ""
