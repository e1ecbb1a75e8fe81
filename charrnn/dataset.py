"""What a run reads: one text file or many (files, folders, globs), in one vocabulary, each file split at
its own end into training and validation text, so every kind of text in a mixed corpus is validated.

    files:      a.txt = a a a a a a a a a|a      b.txt = b b b b|b        (| : the last --val-frac)
    train ids:  a a a a a a a a a <sep> b b b b
    val ids:    a <sep> b

One file keeps the memory-mapped ids of the corpus cache (views, nothing copied). Several files are each
read through the same cache, then their parts are joined in memory in the merged vocabulary.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from charrnn import data
from charrnn.errors import CharRNNError
from charrnn.vocab import Vocab, smallest_id_dtype

GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Dataset:
    train: np.ndarray  # (N_train,) ids in `vocab`
    val: np.ndarray  # (N_val,) ids in `vocab`
    vocab: Vocab
    files: tuple[data.CorpusInfo, ...]
    separator: str | None  # between files; None: a blank line
    notices: tuple[str, ...] = ()  # files skipped, one line each

    def record(self) -> dict[str, Any]:
        """What a checkpoint keeps: the first file as `corpus` (what older readers know) and every file."""
        return {"corpus": asdict(self.files[0]), "files": [asdict(f) for f in self.files], "separator": self.separator}


def expand(specs: Sequence[str | os.PathLike]) -> tuple[list[Path], list[Path], list[str]]:
    """The files that PATHs name: (named files, files found in folders or by globs, notices).

    A folder gives its files recursively in sorted order; hidden files and folders are skipped with a
    notice. A glob that the shell did not expand (quoted) is expanded here, also in sorted order.
    """
    named: list[Path] = []
    found: list[Path] = []
    notices: list[str] = []
    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            inside = sorted(f for f in p.rglob("*") if f.is_file())
            for f in inside:
                if any(part.startswith(".") for part in f.relative_to(p).parts):
                    notices.append(f"skipped {f}: a hidden file")
                else:
                    found.append(f)
            if not inside:
                raise CharRNNError(f"corpus folder {p} holds no files (give a folder with text files in it)")
        elif not p.exists() and GLOB_CHARS & set(str(spec)):
            matches = sorted(Path(m) for m in glob.glob(str(spec), recursive=True) if Path(m).is_file())
            if not matches:
                raise CharRNNError(f"no file matches {spec} (check the pattern, or quote it so the shell leaves it)")
            found.extend(matches)
        else:
            named.append(p)  # a file, or a missing path that read_corpus names in its error
    return named, found, notices


def load(specs: Sequence[str | os.PathLike], val_frac: float, separator: str | None = None) -> Dataset:
    """Read every file (strict UTF-8, through the cache), merge their vocabularies and split each one."""
    named, found, notices = expand(specs)
    corpora: list[data.Corpus] = []
    seen: set[Path] = set()
    for path in [*named, *found]:
        if path.resolve() in seen:
            continue  # a file named twice (say, by a folder and a glob) is read once
        seen.add(path.resolve())
        try:
            corpora.append(data.read_corpus(path))
        except CharRNNError as e:
            if path in named:
                raise  # a file the user named must be text: that is an error, not a notice
            notices.append(f"skipped {path}: {str(e).split(' (')[0].removeprefix(f'corpus {path} ')}")
    if not corpora:
        raise CharRNNError(f"no UTF-8 text files in {', '.join(map(str, specs))} (give text files or folders of them)")
    infos = tuple(c.info for c in corpora)
    if len(corpora) == 1:
        train, val = data.split(corpora[0].ids, val_frac)
        return Dataset(train, val, corpora[0].vocab, infos, separator, tuple(notices))
    chars = set().union(*(c.vocab.chars for c in corpora)) | set(separator if separator is not None else "\n")
    vocab = Vocab("".join(sorted(chars)))
    dtype = smallest_id_dtype(len(vocab))
    train_parts: list[np.ndarray] = []
    val_parts: list[np.ndarray] = []
    for i, corpus in enumerate(corpora):
        to_merged = vocab.encode(corpus.vocab.chars).astype(dtype)  # (V_file,) file id -> merged id
        train, val = data.split(corpus.ids, val_frac)
        for parts, part in ((train_parts, train), (val_parts, val)):
            if i and len(part) and parts:
                parts.append(_separator_ids(vocab, separator, parts[-1]))
            if len(part):
                parts.append(to_merged[part])  # (n,) in the merged vocabulary
    join = lambda parts: np.concatenate(parts) if parts else np.zeros(0, dtype)  # noqa: E731
    return Dataset(join(train_parts), join(val_parts), vocab, infos, separator, tuple(notices))


def _separator_ids(vocab: Vocab, separator: str | None, before: np.ndarray) -> np.ndarray:
    """The ids put between two files' parts. The default is a blank line: one newline after text that
    ends with one (as text files do), two after text that does not."""
    if separator is None:
        newline = vocab.encode("\n")[0]
        separator = "\n" if len(before) and before[-1] == newline else "\n\n"
    return vocab.encode(separator).astype(before.dtype)


def files_of(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The file records (path, size, hash) of the files a checkpoint's run trained on, in order (one for
    a run from before several files)."""
    return record.get("files") or ([record["corpus"]] if record.get("corpus") else [])


def paths_of(record: Mapping[str, Any]) -> list[str]:
    """The files a checkpoint's run trained on, in order."""
    return [f["path"] for f in files_of(record)]


def names_of(record: Mapping[str, Any]) -> str:
    """The training files by name, for one line of `info` or a lineage: a path from the disk of whoever
    trained the model means nothing elsewhere, and a long list of files would not fit."""
    names = [Path(p).name for p in paths_of(record)]
    return ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")


def check_unchanged(saved: dict[str, Any], now: Dataset, run_dir: Path) -> None:
    """A resumed run continues at a position in the text, with the state it had there: on other text both
    would be silently wrong, so a changed, added or missing file is refused, by name."""
    then = files_of(saved)
    if not then or not all(f.get("sha256") for f in then):
        return  # a checkpoint from before hashes were recorded
    by_path = {Path(f["path"]).resolve(): f for f in then}
    for info in now.files:
        old = by_path.pop(Path(info.path).resolve(), None)
        if old is None:
            raise CharRNNError(
                f"{info.path} is not among the text the run in {run_dir} trained on: resume with the same files, "
                f"or start a new run from these weights: charrnn train ... --init {run_dir} --out NEW_FOLDER"
            )
        if old["sha256"] != info.sha256:
            change = (
                f"{old.get('size', 0):,} bytes then, {info.size:,} now"
                if old.get("size") != info.size
                else "same size, different content"
            )
            raise CharRNNError(
                f"{info.path} has changed since the run in {run_dir} trained on it ({change}): resume with the "
                f"original text, or start a new run from these weights: charrnn train {info.path} --init {run_dir} "
                "--out NEW_FOLDER"
            )
    if by_path:
        missing = next(iter(by_path.values()))
        raise CharRNNError(
            f"{missing['path']} is missing from the text being resumed (the run in {run_dir} trained on it): "
            "resume with the same files, or start a new run with --init"
        )
