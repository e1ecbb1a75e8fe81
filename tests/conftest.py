"""Shared test fixtures: an isolated, single-threaded working folder per test, a tiny corpus, a tiny run
trained once per module, and an in-process CLI runner with the flags of a tiny fast model."""

from __future__ import annotations

import contextlib
import io
import random
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

# Flags for a tiny model that trains in well under a second: `run_cli("train", path, *TINY)`.
TINY = [
    "--model",
    "lstm",
    "--hidden",
    "32",
    "--embed",
    "16",
    "--layers",
    "2",
    "--batch-size",
    "8",
    "--seq-len",
    "32",
    "--eval-every",
    "20",
    "--steps",
    "40",
    "--device",
    "cpu",
    "--precision",
    "fp32",
]

_WORDS = (
    "the and of to my that in you is not with it for be his your this but he have as thou so him "
    "will me what by all are her do no shall if lord good now thee o love more king then sir "
    "well come let our at how say night death heart time eyes day make speak upon"
).split()
_SPEAKERS = ("ROMEO", "JULIET", "KING HENRY", "LADY MACBETH", "HAMLET", "First Citizen")


def make_text(n_chars: int = 30_000, seed: int = 0) -> str:
    """Deterministic pseudo-English play text of about n_chars characters: speaker lines, then verse."""
    rng = random.Random(seed)
    blocks: list[str] = []
    size = 0
    while size < n_chars:
        speech = [f"{rng.choice(_SPEAKERS)}:"]
        for _ in range(rng.randint(1, 4)):
            words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 10))]
            speech.append(" ".join(words).capitalize() + rng.choice(".,;!?"))
        block = "\n".join(speech) + "\n\n"
        blocks.append(block)
        size += len(block)
    return "".join(blocks)


def invoke(*args: object) -> tuple[int, str, str]:
    """(exit_code, stdout, stderr) of `charrnn.cli.main(args)` in-process, without capsys (any fixture scope)."""
    from charrnn.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Every test: one torch thread, its own corpus cache ($CHARRNN_CACHE) and cwd = tmp_path (runs land in
    tmp_path/checkpoints)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("CHARRNN_CACHE", str(tmp_path / ".cache"))
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_corpus(tmp_path: Path) -> Path:
    """Path of a ~30 KB deterministic UTF-8 corpus (tmp_path/tiny.txt, from make_text()) that TINY trains on."""
    path = tmp_path / "tiny.txt"
    path.write_text(make_text(), encoding="utf-8")
    return path


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]):
    """run_cli(*args) -> (exit_code, stdout, stderr): `charrnn.cli.main(list(args))` in-process, output captured."""
    from charrnn.cli import main

    def run(*args: object) -> tuple[int, str, str]:
        capsys.readouterr()  # drop whatever came before
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@dataclass(frozen=True)
class TinyRun:
    root: Path  # the folder training ran in (cwd): holds tiny.txt and checkpoints/
    corpus: Path  # root/tiny.txt, make_text()
    run_dir: Path  # root/checkpoints/tiny: best.pt, last.pt, metrics.jsonl
    code: int  # exit code of the `charrnn train`
    out: str  # its stdout
    err: str  # its stderr


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    """A run trained once per module with `charrnn train tiny.txt *TINY` (40 steps); read-only: copy it to change it."""
    root = tmp_path_factory.mktemp("tiny_run")
    corpus = root / "tiny.txt"
    corpus.write_text(make_text(), encoding="utf-8")
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHARRNN_CACHE", str(root / ".cache"))
        mp.chdir(root)
        torch.set_num_threads(1)
        try:
            code, out, err = invoke("train", corpus, *TINY)
        finally:
            torch.set_num_threads(threads)
    assert code == 0, err
    return TinyRun(root, corpus, root / "checkpoints" / "tiny", code, out, err)
