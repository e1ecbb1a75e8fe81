"""Corpus to training windows: strict UTF-8 reading, a memory-mapped id cache, the train/val split, and
the stream/window layout of truncated backpropagation through time. Knows nothing of models or devices.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charrnn.errors import CharRNNError
from charrnn.vocab import MAX_CODE_POINT, Vocab, code_points, smallest_id_dtype

CHUNK_BYTES = 1 << 24  # 16 MiB: big enough for vectorised work, small enough that memory stays flat.
# eval FILE holds a chunk as text, code points and int64 ids at once (~20 bytes a character): 4 MiB
# chunks keep that under 100 MB whatever the file's size (benchmarks/README.md, eval memory).
ENCODE_CHUNK_BYTES = 1 << 22
BOM = b"\xef\xbb\xbf"
CACHE_FORMAT = 1


@dataclass(frozen=True)
class CorpusInfo:
    """Where the ids came from; stored in checkpoints so `eval` can tell if the corpus moved or changed."""

    path: str
    size: int  # bytes on disk
    sha256: str
    chars: int  # characters after decoding (a byte-order mark is not one)


@dataclass
class Corpus:
    ids: np.ndarray  # (N,) uint8/16/32, usually a read-only memory map
    vocab: Vocab
    info: CorpusInfo


def check_corpus_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise CharRNNError(f"corpus not found: {p} (give the path of a UTF-8 text file)")
    if p.is_dir():
        raise CharRNNError(f"corpus {p} is a folder, not a file (give the path of a UTF-8 text file)")
    if p.stat().st_size == 0:
        raise CharRNNError(f"corpus {p} is empty (give a file with some text in it)")
    return p


def iter_text(
    path: Path, chunk_bytes: int = CHUNK_BYTES, on_bytes: Callable[[bytes], None] | None = None
) -> Iterator[str]:
    """Decode a file as strict UTF-8, chunk by chunk, naming the byte offset of the first bad byte.

    A leading byte-order mark is dropped; line endings are kept exactly as they are (CRLF stays CRLF).
    A NUL byte is valid UTF-8 but never appears in text, so it marks the file as binary.
    """
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    offset = 0  # byte offset of the start of `raw` in the file
    with open(path, "rb") as f:
        while True:
            raw = f.read(chunk_bytes)
            if on_bytes is not None:
                on_bytes(raw)  # e.g. a hash of the very bytes decoded here, so the file is read once for both
            if offset == 0 and raw.startswith(BOM):
                raw, offset = raw[len(BOM) :], len(BOM)
            nul = raw.find(b"\0")
            if nul >= 0:
                raise CharRNNError(
                    f"corpus {path} looks binary, not text: NUL byte at byte offset {offset + nul} "
                    "(give a UTF-8 text file)"
                )
            pending = len(decoder.getstate()[0])  # bytes of a split character held from the last chunk
            try:
                text = decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as e:
                at = offset - pending + e.start
                raise CharRNNError(
                    f"corpus {path} is not valid UTF-8: byte 0x{e.object[e.start]:02x} at byte offset {at} "
                    "(convert it, e.g. `iconv -f LATIN1 -t UTF-8 in.txt > out.txt`)"
                ) from None
            if text:
                yield text
            if not raw:
                return
            offset += len(raw)


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            h.update(chunk)
    return h.hexdigest()


def cache_root() -> Path:
    """$CHARRNN_CACHE, else where the platform keeps caches (~/.cache/charrnn on Linux, ~/Library/Caches
    on macOS, %LOCALAPPDATA% on Windows: platformdirs knows each)."""
    if env := os.environ.get("CHARRNN_CACHE"):
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("charrnn", appauthor=False))


@dataclass(frozen=True)
class CachedCorpus:
    folder: Path
    source: str  # the file name it was made from (as first seen)
    chars: int
    vocab_size: int
    bytes: int  # on disk
    used: float  # last written or read (mtime), seconds since the epoch


def cached_corpora(root: Path | None = None) -> list[CachedCorpus]:
    """Every complete entry of the corpus cache, most recently used first."""
    root = cache_root() if root is None else root
    found = []
    for folder in root.iterdir() if root.is_dir() else ():
        try:
            meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
            size = sum(f.stat().st_size for f in folder.iterdir())
            used = max(f.stat().st_mtime for f in folder.iterdir())
            found.append(CachedCorpus(folder, meta.get("source", "?"), meta["chars"], len(meta["vocab"]), size, used))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not ours, or half-written: left alone
    return sorted(found, key=lambda c: -c.used)


def clear_cache(root: Path | None = None) -> tuple[int, int]:
    """Remove every cache entry (folders named digest-size, as read_corpus makes them); returns (entries,
    bytes) removed. Anything else in the folder is not ours and stays."""
    import re
    import shutil

    root = cache_root() if root is None else root
    entries = freed = 0
    for folder in root.iterdir() if root.is_dir() else ():
        if folder.is_dir() and re.fullmatch(r"[0-9a-f]{24}-\d+", folder.name):
            freed += sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
            shutil.rmtree(folder, ignore_errors=True)
            entries += 1
    return entries, freed


def read_corpus(path: str | os.PathLike, use_cache: bool = True, digest: str | None = None) -> Corpus:
    """Read, build the vocabulary, encode; reuse the memory-mapped ids when this exact file was seen before.

    The cache is keyed by size and SHA-256, so an edited corpus is never served stale ids, and a second
    run on a 100 MB corpus starts in well under a second. A caller that already hashed the file passes
    `digest` so it is not read twice.
    """
    p = check_corpus_path(path)
    size = p.stat().st_size
    root = cache_root()
    counts = None
    if digest is None and not (use_cache and any(root.glob(f"*-{size}"))):
        h = hashlib.sha256()  # nothing cached has this size: surely new, so one read hashes and counts
        counts = _count(p, on_bytes=h.update)
        digest = h.hexdigest()
    digest = digest or file_digest(p)
    folder = root / f"{digest[:24]}-{size}"
    if use_cache and (cached := _load_cache(folder)) is not None:
        ids, vocab, chars = cached
    else:
        counts = _count(p) if counts is None else counts
        ids, vocab, chars = _encode_file(p, counts, folder if use_cache else None)
    return Corpus(ids, vocab, CorpusInfo(str(p.resolve()), size, digest, chars))


def _count(path: Path, on_bytes: Callable[[bytes], None] | None = None) -> np.ndarray:
    """The histogram of the file's code points, (0x110000,); `on_bytes` sees the raw bytes of the same read."""
    counts = np.zeros(MAX_CODE_POINT + 1, dtype=np.int64)  # (0x110000,)
    for text in iter_text(path, on_bytes=on_bytes):
        counts += np.bincount(code_points(text), minlength=MAX_CODE_POINT + 1)
    return counts


def _encode_file(path: Path, counts: np.ndarray, folder: Path | None) -> tuple[np.ndarray, Vocab, int]:
    chars = int(counts.sum())
    if chars == 0:
        raise CharRNNError(f"corpus {path} is empty (it holds only a byte-order mark)")
    vocab = Vocab.from_counts(counts)
    dtype = smallest_id_dtype(len(vocab))
    if folder is not None:
        try:
            return _write_cache(path, folder, vocab, dtype, chars), vocab, chars
        except OSError:
            pass  # an unwritable cache only costs speed: fall back to ids in memory
    ids = np.concatenate([vocab.encode_code_points(code_points(t)).astype(dtype) for t in iter_text(path)])
    return ids, vocab, chars


def _write_cache(path: Path, folder: Path, vocab: Vocab, dtype: np.dtype, chars: int) -> np.ndarray:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"ids.bin.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        for text in iter_text(path):
            f.write(vocab.encode_code_points(code_points(text)).astype(dtype).tobytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / "ids.bin")
    meta = {"format": CACHE_FORMAT, "dtype": dtype.name, "chars": chars, "vocab": vocab.chars, "source": path.name}
    tmp_meta = folder / f"meta.json.tmp-{os.getpid()}"
    tmp_meta.write_text(json.dumps(meta), encoding="utf-8")
    os.replace(tmp_meta, folder / "meta.json")  # written last: its presence means ids.bin is complete
    return np.memmap(folder / "ids.bin", dtype=dtype, mode="r", shape=(chars,))


def _load_cache(folder: Path) -> tuple[np.ndarray, Vocab, int] | None:
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        if meta.get("format") != CACHE_FORMAT:
            return None
        dtype, chars = np.dtype(meta["dtype"]), int(meta["chars"])
        if (folder / "ids.bin").stat().st_size != chars * dtype.itemsize:
            return None
        ids = np.memmap(folder / "ids.bin", dtype=dtype, mode="r", shape=(chars,))
        os.utime(folder / "meta.json")  # "last used", for `charrnn cache`
        return ids, Vocab(meta["vocab"]), chars
    except (OSError, ValueError, KeyError, CharRNNError):
        return None


class IdFile:
    """Character ids on disk, read one slice at a time, so scoring a file larger than memory keeps only a
    window of it resident (evaluate only ever slices its ids)."""

    def __init__(self, path: Path, dtype: np.dtype, n: int) -> None:
        self.dtype, self.n = np.dtype(dtype), n
        self._f = open(path, "rb")  # noqa: SIM115 - lives as long as this object; closed by close()

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, s: slice) -> np.ndarray:
        start, stop, _ = s.indices(self.n)
        self._f.seek(start * self.dtype.itemsize)
        return np.fromfile(self._f, self.dtype, max(0, stop - start))  # (stop - start,)

    def close(self) -> None:
        self._f.close()


def encode_to_file(path: str | os.PathLike, vocab: Vocab, out: Path) -> tuple[IdFile, int]:
    """Encode any text file with a model's vocabulary into `out`, chunk by chunk: (the ids, read back a
    slice at a time, and the number of characters skipped as unknown)."""
    p = check_corpus_path(path)
    dtype = smallest_id_dtype(len(vocab))
    n = skipped = 0
    with open(out, "wb") as f:
        for text in iter_text(p, chunk_bytes=ENCODE_CHUNK_BYTES):
            cps = code_points(text)
            ids = vocab.encode_code_points(cps, unknown="skip")
            skipped += len(cps) - len(ids)
            n += len(ids)
            f.write(ids.astype(dtype).tobytes())
    return IdFile(out, dtype, n), skipped


def split(ids: np.ndarray, val_frac: float) -> tuple[np.ndarray, np.ndarray]:
    """First (1 - val_frac) for training, the rest for validation: views, nothing is copied."""
    n_val = int(len(ids) * val_frac)
    return ids[: len(ids) - n_val], ids[len(ids) - n_val :]


class Streams:
    """The training ids laid out as `batch_size` contiguous streams, cut into `seq_len` windows.

    With ids a..x (n = 24), batch_size B = 3 and seq_len T = 3, each stream has L = (n - 1) // B = 7
    inputs; its targets are the same ids shifted by one, so a stream reads one id past its inputs::

        stream 0:  a b c | d e f | g      targets  b c d | e f g | h
        stream 1:  h i j | k l m | n               i j k | l m n | o
        stream 2:  o p q | r s t | u               p q r | s t u | v
                  window 0 window 1 (tail)

    Step k trains on window k % (L // T) of every stream at once: a (B, T) batch whose row b continues
    row b of the step before, so the hidden state each row ends with is the right start for the next
    window (carried, detached). A new epoch starts the streams again from zero state. The tail
    (L mod T inputs) and the last (n - 1) mod B ids are not trained on.

    With several processes, rank r of `world` owns the consecutive rows r*B/world .. (r+1)*B/world - 1
    of the same global layout, so the union of all ranks is exactly the single-process batch.
    """

    def __init__(
        self,
        ids: np.ndarray,
        batch_size: int,
        seq_len: int,
        rank: int = 0,
        world: int = 1,
        id_map: np.ndarray | None = None,
    ) -> None:
        self.ids, self.batch_size, self.seq_len = ids, batch_size, seq_len
        self.id_map = id_map  # (V_corpus,) corpus id -> model id, when the model knows more characters
        self.stream_len = (len(ids) - 1) // batch_size  # L
        self.windows = self.stream_len // seq_len  # windows per epoch
        if self.windows < 1:
            need = batch_size * seq_len + 1
            raise CharRNNError(
                f"the training split has {len(ids)} characters, too few for one window of "
                f"--batch-size {batch_size} x --seq-len {seq_len} (needs {need}): lower --batch-size "
                "or --seq-len, or use a longer corpus"
            )
        if batch_size % world:
            raise CharRNNError(f"--batch-size {batch_size} must be a multiple of the number of processes ({world})")
        rows = np.arange(rank * batch_size // world, (rank + 1) * batch_size // world)  # (B_rank,)
        self._offsets = rows[:, None] * self.stream_len + np.arange(seq_len + 1)[None, :]  # (B_rank, T+1)

    def window(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and targets of training step `step` (0-based): two (B_rank, T) int64 arrays."""
        k = step % self.windows
        chunk = self.ids[self._offsets + k * self.seq_len].astype(np.int64)  # (B_rank, T+1), reads only these pages
        if self.id_map is not None:
            chunk = self.id_map[chunk]  # (B_rank, T+1) in the model's ids
        return chunk[:, :-1], chunk[:, 1:]

    def starts_epoch(self, step: int) -> bool:
        return step % self.windows == 0
