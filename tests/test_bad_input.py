"""Every bad input gets exit code 1, exactly one line on stderr naming the problem, no traceback, nothing
on stdout, and leaves every existing checkpoint byte for byte as it was.

One tiny run is trained per module (conftest's `tiny_run`); each test runs its bad command with the
working folder set to that run's root, so a command that wrongly trained or saved anything would show up
as a changed or new file under its checkpoints/.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import random
import re
import shutil
from pathlib import Path

import pytest
import torch
from conftest import TINY, make_text


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` except lock files (they hold the pid of the last locker)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def error_line(err: str) -> str:
    lines = err.rstrip("\n").split("\n")
    assert len(lines) == 1 and lines[0].strip(), f"expected exactly one line on stderr, got:\n{err}"
    return lines[0]


class Guard:
    """Checks one bad command's result and that nothing under the tiny run's checkpoints/ changed."""

    def __init__(self, root: Path, pristine: dict[str, str]) -> None:
        self.root = root
        self.pristine = pristine
        self.before = snapshot(root / "checkpoints")

    def check(self, result: tuple[int, str, str], *names: str, code: int = 1) -> str:
        got, out, err = result
        assert "Traceback" not in out + err, err
        assert got == code, f"exit code {got}, stderr:\n{err}"
        assert out == "", f"nothing belongs on stdout after an error, got {out!r}"
        line = error_line(err)
        for name in names:
            assert name in line, f"{name!r} not named in: {line}"
        self.untouched()
        return line

    def untouched(self) -> None:
        now = snapshot(self.root / "checkpoints")
        assert now == self.before, "files under checkpoints/ were written or changed"
        run_files = {k: v for k, v in now.items() if k in self.pristine}
        assert run_files == self.pristine, "the trained run's files changed"


@pytest.fixture(scope="module")
def pristine(tiny_run) -> dict[str, str]:
    return snapshot(tiny_run.root / "checkpoints")


@pytest.fixture
def guard(tiny_run, pristine, monkeypatch) -> Guard:
    """cwd = the tiny run's root (so default run folders sit next to it), and the checks of a bad command."""
    monkeypatch.chdir(tiny_run.root)
    return Guard(tiny_run.root, pristine)


def resume_args(tiny_run) -> list[str]:
    return ["--resume", "--out", str(tiny_run.run_dir)]


# ---- corpora -------------------------------------------------------------------------------------------


def _corpus(tmp_path: Path, name: str, content: bytes | None) -> Path:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    return path


BAD_CORPORA = [
    # id, file name, bytes (None: not created), words the error must contain
    ("missing", "missing.txt", None, ["missing.txt", "not found"]),
    ("empty", "empty.txt", b"", ["empty.txt", "empty"]),
    ("only-bom", "bom.txt", b"\xef\xbb\xbf", ["bom.txt", "empty"]),
    ("latin1", "latin1.txt", b"hello \xff world", ["latin1.txt", "UTF-8", "offset 6"]),
    (
        "bad-after-bom-and-multibyte",
        "later.txt",
        b"\xef\xbb\xbf" + "h\u00e9llo".encode() + b"\xc3(x",
        ["later.txt", "UTF-8", "offset 9"],
    ),
    ("binary", "binary.bin", b"text\x00\x01\x02more", ["binary.bin", "NUL", "offset 4"]),
]


@pytest.mark.parametrize("mode", ["new", "resume"])
@pytest.mark.parametrize("name,content,words", [c[1:] for c in BAD_CORPORA], ids=[c[0] for c in BAD_CORPORA])
def test_bad_corpus(run_cli, guard, tiny_run, tmp_path, mode, name, content, words):
    corpus = _corpus(tmp_path, name, content)
    args = ["train", corpus, *TINY] if mode == "new" else ["train", corpus, *resume_args(tiny_run)]
    guard.check(run_cli(*args), *words)


@pytest.mark.parametrize("mode", ["new", "resume"])
def test_folder_as_corpus(run_cli, guard, tiny_run, tmp_path, mode):
    folder = tmp_path / "texts"
    folder.mkdir()
    args = ["train", folder, *TINY] if mode == "new" else ["train", folder, *resume_args(tiny_run)]
    line = guard.check(run_cli(*args), "texts")
    assert "folder" in line or "directory" in line


def test_corpus_too_short_for_one_window(run_cli, guard, tmp_path):
    corpus = _corpus(tmp_path, "short.txt", b"ROMEO: hi.\n" * 20)
    line = guard.check(run_cli("train", corpus, *TINY), "--batch-size", "--seq-len")
    assert re.search(r"\b257\b", line)  # 8 x 32 + 1 characters needed


# ---- checkpoints ---------------------------------------------------------------------------------------


class Hostile:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def _real(tiny_run) -> dict:
    return torch.load(tiny_run.run_dir / "best.pt", map_location="cpu", weights_only=True)


def make_checkpoint(kind: str, tiny_run, tmp_path: Path) -> Path:
    """A bad --checkpoint of the given kind, under tmp_path."""
    path = tmp_path / f"{kind}.pt"
    real = (tiny_run.run_dir / "best.pt").read_bytes()
    if kind == "missing":
        pass
    elif kind == "folder":
        path = tmp_path / "no-checkpoints-here"
        path.mkdir()
        (path / "notes.txt").write_text("not a checkpoint")
    elif kind == "zero-bytes":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(real[: len(real) // 2])
    elif kind == "random-bytes":
        path.write_bytes(random.Random(0).randbytes(4096))
    elif kind == "text":
        path.write_text(make_text(500), encoding="utf-8")
    elif kind == "not-charrnn":
        torch.save({"a": 1}, path)
    elif kind == "newer-version":
        ckpt = _real(tiny_run)
        ckpt["version"] = 999
        torch.save(ckpt, path)
    elif kind == "wrong-shapes":
        ckpt = _real(tiny_run)
        ckpt["model_config"] = {**ckpt["model_config"], "hidden": 48}
        torch.save(ckpt, path)
    elif kind == "no-weights":
        ckpt = _real(tiny_run)
        del ckpt["model"]
        torch.save(ckpt, path)
    elif kind == "vocab-mismatch":
        ckpt = _real(tiny_run)
        ckpt["vocab"] = ckpt["vocab"][:-1]
        torch.save(ckpt, path)
    elif kind == "hostile-zip":
        torch.save(Hostile(tmp_path / "MARKER"), path)
    elif kind == "hostile-raw-pickle":
        path.write_bytes(pickle.dumps(Hostile(tmp_path / "MARKER"), protocol=2))
    else:
        raise ValueError(kind)
    return path


BAD_CHECKPOINTS = {
    # kind: words the error must contain besides the file's name
    "missing": ["not found"],
    "folder": ["no best.pt or last.pt"],
    "zero-bytes": ["empty"],
    "truncated": ["not a readable checkpoint"],
    "random-bytes": [],
    "text": [],
    "not-charrnn": ["not a charrnn checkpoint"],
    "newer-version": ["999", "upgrade"],
    "wrong-shapes": ["do not match"],
    "no-weights": ["'model'"],
    "vocab-mismatch": ["vocabulary"],
    "hostile-zip": ["refusing"],
    "hostile-raw-pickle": ["refusing"],
}


@pytest.mark.parametrize("command", ["sample", "eval", "info"])
@pytest.mark.parametrize("kind", list(BAD_CHECKPOINTS))
def test_bad_checkpoint(run_cli, guard, tiny_run, tmp_path, command, kind):
    path = make_checkpoint(kind, tiny_run, tmp_path)
    before = path.read_bytes() if path.is_file() else None
    line = guard.check(run_cli(command, "-c", path), path.name, *BAD_CHECKPOINTS[kind])
    if before is not None:
        assert path.read_bytes() == before  # reading never rewrites the file
    assert not (tmp_path / "MARKER").exists(), "unpickling ran code from the checkpoint"
    if kind.startswith("hostile"):
        assert "trust" in line or "code" in line


@pytest.mark.parametrize("kind", ["hostile-zip", "hostile-raw-pickle"])
def test_hostile_checkpoints_really_run_code_when_unpickled(tiny_run, tmp_path, kind):
    """The self-check that makes the refusal above mean something: an unsafe load does run the command."""
    path = make_checkpoint(kind, tiny_run, tmp_path)
    try:
        torch.load(path, map_location="cpu", weights_only=False)
    except RuntimeError:
        pass  # the raw pickle runs its code while torch reads the "magic number", then fails
    assert (tmp_path / "MARKER").exists()


@pytest.mark.parametrize(
    "kind", ["truncated", "random-bytes", "newer-version", "wrong-shapes", "hostile-zip", "hostile-raw-pickle"]
)
def test_resume_from_a_bad_last_pt(run_cli, guard, tiny_run, tmp_path, kind):
    run = tmp_path / "run"
    run.mkdir()
    bad = make_checkpoint(kind, tiny_run, tmp_path)
    shutil.copy(bad, run / "last.pt")
    before = snapshot(run)
    guard.check(run_cli("train", tiny_run.corpus, "--resume", "--out", run), "last.pt")
    assert snapshot(run) == before  # the bad last.pt is neither replaced nor deleted
    assert not (tmp_path / "MARKER").exists()


def test_resume_with_nothing_to_resume(run_cli, guard, tiny_run, tmp_path):
    run = tmp_path / "empty-run"
    run.mkdir()
    guard.check(run_cli("train", tiny_run.corpus, "--resume", "--out", run), "nothing to resume", "last.pt")


@pytest.mark.parametrize("command", ["sample", "eval", "info"])
def test_no_checkpoint_anywhere_says_how_to_train_one(run_cli, tmp_path, monkeypatch, command):
    from charrnn import locate

    monkeypatch.setattr(locate, "BUNDLED", tmp_path / "no-such-bundled.pt")
    assert os.getcwd() == str(tmp_path) and not (tmp_path / "checkpoints").exists()
    code, out, err = run_cli(command)
    assert code == 1 and out == "" and "Traceback" not in err
    line = error_line(err)
    assert "no checkpoint" in line and "charrnn train" in line


def test_eval_when_the_runs_corpus_is_gone(run_cli, guard, tiny_run, tmp_path):
    ckpt = _real(tiny_run)
    ckpt["corpus"] = {**ckpt["corpus"], "path": str(tmp_path / "moved-away.txt")}
    path = tmp_path / "moved.pt"
    torch.save(ckpt, path)
    guard.check(run_cli("eval", "-c", path), "moved-away.txt", "FILE")


def test_eval_without_file_of_a_run_with_no_validation_split(run_cli, guard, tiny_run, tmp_path):
    ckpt = _real(tiny_run)
    ckpt["train_config"] = {**ckpt["train_config"], "val_frac": 0.0}
    path = tmp_path / "no-val.pt"
    torch.save(ckpt, path)
    guard.check(run_cli("eval", "-c", path), "--val-frac 0", "FILE")


def test_resume_with_a_corpus_of_other_characters(run_cli, guard, tiny_run, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text(make_text(5_000).upper(), encoding="utf-8")
    guard.check(run_cli("train", other, *resume_args(tiny_run), "--steps", "80"), "other.txt", "character")


def test_eval_file_with_no_known_characters(run_cli, guard, tiny_run, tmp_path):
    text = tmp_path / "cyrillic.txt"
    text.write_text("ЖЖЖЖЖЖЖ☃☃☃", encoding="utf-8")  # not one character the model knows
    line = guard.check(run_cli("eval", text, "-c", tiny_run.run_dir))
    assert "characters" in line


# ---- flags ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags,words",
    [
        (["--temp", "-1"], ["--temp"]),
        (["--length", "-1"], ["--length"]),
        (["--top-k", "0"], ["--top-k"]),
        (["--top-p", "0"], ["--top-p"]),
        (["--top-p", "1.5"], ["--top-p"]),
        (["--num", "0"], ["--num"]),
        (["--temp", "nan"], ["--temp"]),
    ],
    ids=lambda v: " ".join(v) if len(v) == 2 else "",
)
def test_bad_sample_flag(run_cli, guard, tiny_run, flags, words):
    guard.check(run_cli("sample", "-c", tiny_run.run_dir, *flags), *words)


TRAIN_FLAGS = [
    (["--val-frac", "0.5"], ["--val-frac", "0.5"]),
    (["--val-frac", "-0.1"], ["--val-frac", "-0.1"]),
    (["--model", "transformer"], ["--model", "transformer", "lstm"]),
    (["--steps", "0"], ["--steps"]),
    (["--batch-size", "0"], ["--batch-size"]),
    (["--dropout", "1.0"], ["--dropout"]),
    (["--weight-drop", "1"], ["--weight-drop"]),
    (["--tie-weights"], ["--embed", "--hidden"]),
    (["--lr", "-0.1"], ["--lr"]),
    (["--precision", "fp8"], ["--precision", "fp8"]),
]


@pytest.mark.parametrize("flags,words", TRAIN_FLAGS, ids=[" ".join(f) for f, _ in TRAIN_FLAGS])
def test_bad_train_flag(run_cli, guard, tiny_run, flags, words):
    guard.check(run_cli("train", tiny_run.corpus, *TINY, *flags), *words)


@pytest.mark.parametrize(
    "flags,words",
    [
        (["--val-frac", "0.5"], ["--val-frac"]),
        (["--lr", "0"], ["--lr"]),
    ],
    ids=["--val-frac 0.5", "--lr 0"],
)
def test_bad_train_flag_on_resume(run_cli, guard, tiny_run, flags, words):
    guard.check(run_cli("train", *resume_args(tiny_run), "--steps", "80", *flags), *words)


def test_unknown_option_and_bad_type_are_usage_errors(run_cli, guard, tiny_run):
    guard.check(run_cli("train", tiny_run.corpus, "--hiden", "32"), "--hiden", code=2)
    guard.check(run_cli("train", tiny_run.corpus, "--steps", "many"), "--steps", code=2)


def test_resume_with_a_contradicting_architecture(run_cli, guard, tiny_run):
    line = guard.check(run_cli("train", *resume_args(tiny_run), "--steps", "80", "--hidden", "64"), "--hidden")
    assert "64" in line and "32" in line


def test_resume_a_finished_run_without_a_larger_budget(run_cli, guard, tiny_run):
    guard.check(run_cli("train", *resume_args(tiny_run)), "--steps")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("command", ["train", "sample", "eval"])
def test_device_cuda_without_cuda(run_cli, guard, tiny_run, command):
    args = {
        "train": ["train", tiny_run.corpus, *TINY, "--device", "cuda"],
        "sample": ["sample", "-c", tiny_run.run_dir, "--device", "cuda"],
        "eval": ["eval", "-c", tiny_run.run_dir, "--device", "cuda"],
    }[command]
    guard.check(run_cli(*args), "cuda")


@pytest.mark.parametrize("mode", ["new", "resume"])
def test_bf16_on_a_cpu_without_native_bf16(run_cli, guard, tiny_run, monkeypatch, mode):
    """An AVX2 CPU: oneDNN's LSTM raised a RuntimeError with a traceback on the first bf16 step."""
    from charrnn import devices

    monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda: False)
    first = ["train", tiny_run.corpus, *TINY] if mode == "new" else ["train", *resume_args(tiny_run), "--steps", "80"]
    guard.check(run_cli(*first, "--precision", "bf16"), "--precision bf16", "--precision fp32")


# ---- run folders ---------------------------------------------------------------------------------------


def test_second_trainer_on_a_locked_run_refuses(run_cli, guard, tiny_run):
    from charrnn.runs import RunLock

    with RunLock(tiny_run.run_dir):
        line = guard.check(run_cli("train", *resume_args(tiny_run), "--steps", "80"))
    assert "another" in line and str(tiny_run.run_dir) in line


def test_lock_released_or_left_behind_does_not_block_training(run_cli, tiny_run, tmp_path):
    from charrnn.runs import RunLock

    run = tmp_path / "copy"
    shutil.copytree(tiny_run.run_dir, run)
    with RunLock(run):
        code, out, err = run_cli("train", "--resume", "--out", run, "--steps", "60")
        assert code == 1 and "another" in err
    # The lock file is still there, holding the pid of a holder that is gone, as after a crash.
    (run / ".lock").write_text("999999\n")
    code, out, err = run_cli("train", "--resume", "--out", run, "--steps", "60")
    assert code == 0, err
    assert torch.load(run / "last.pt", map_location="cpu", weights_only=True)["step"] == 60


def test_out_below_a_regular_file(run_cli, guard, tiny_run, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("I am a file, not a folder")
    guard.check(run_cli("train", tiny_run.corpus, *TINY, "--out", blocker / "run"), "a-file", "--out")
    assert blocker.read_text() == "I am a file, not a folder"


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="root ignores permissions (test_out_below_a_regular_file covers the same error path)",
)
def test_unwritable_run_folder(run_cli, guard, tiny_run, tmp_path):
    locked = tmp_path / "read-only"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        guard.check(run_cli("train", tiny_run.corpus, *TINY, "--out", locked / "run"), "read-only", "--out")
    finally:
        locked.chmod(0o700)


def test_unwritable_run_folder_simulated(run_cli, guard, tiny_run, tmp_path, monkeypatch):
    """The permission error itself, even as root: the probe write in the run folder fails with EACCES."""
    import builtins

    real_open = builtins.open
    target = tmp_path / "run"

    def deny(file, mode="r", *args, **kwargs):
        if "w" in mode and Path(file).parent == target:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", deny)
    line = guard.check(run_cli("train", tiny_run.corpus, *TINY, "--out", target), "run", "Permission denied")
    assert "--out" in line
    assert not (target / "best.pt").exists()


def test_out_of_a_folder_holding_only_best_pt_refuses(run_cli, tiny_run, tmp_path):
    run = tmp_path / "shared-model"
    run.mkdir()
    shutil.copy(tiny_run.run_dir / "best.pt", run / "best.pt")
    before = (run / "best.pt").read_bytes()
    code, out, err = run_cli("train", tiny_run.corpus, *TINY, "--seed", "5", "--out", run)
    assert (run / "best.pt").read_bytes() == before, "the existing best.pt was overwritten"
    assert code == 1 and "--resume" in error_line(err)


# ---- exactly one line, with nothing printed before it ----------------------------------------------------


def test_train_error_is_exactly_one_line(run_cli, guard, tmp_path):
    code, out, err = run_cli("train", tmp_path / "missing.txt", *TINY)
    assert code == 1
    error_line(err)


def test_sample_error_is_exactly_one_line(run_cli, guard, tmp_path):
    code, out, err = run_cli("sample", "-c", tmp_path / "missing.pt")
    assert code == 1
    error_line(err)


def test_random_bytes_are_called_corrupt_not_hostile(run_cli, guard, tiny_run, tmp_path):
    path = make_checkpoint("random-bytes", tiny_run, tmp_path)
    line = guard.check(run_cli("info", "-c", path), path.name)
    assert "refusing" not in line and "code" not in line
    assert "not a readable checkpoint" in line
