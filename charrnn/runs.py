"""Run folders: choosing one, making sure it is writable before training time is spent, and locking it
so two `charrnn train` processes never write the same checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

from charrnn.checkpoint import RUNS_DIR
from charrnn.errors import CharRNNError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the run still works, unguarded
    fcntl = None


def pick_run_dir(out: str | os.PathLike | None, corpus: Path, resume: bool) -> Path:
    """--out as given; else checkpoints/<corpus stem>, or <stem>-2, -3, ... when that one already holds a
    run, so starting again never overwrites an earlier run's checkpoints."""
    if out is not None:
        run = Path(out)
        if not resume and ((run / "last.pt").exists() or (run / "best.pt").exists()):
            raise CharRNNError(f"{run} already holds a run: add --resume to continue it, or choose another --out")
        return run
    base = RUNS_DIR / corpus.stem
    if resume:
        return base
    run, n = base, 1
    while (run / "last.pt").exists() or (run / "best.pt").exists():
        n += 1
        run = base.with_name(f"{base.name}-{n}")
    return run


class RunLock:
    """An exclusive flock on <run>/.lock: the OS drops it when the process dies, so a crash never leaves
    the run locked forever, while a live second trainer is refused at once."""

    def __init__(self, run: Path) -> None:
        self.path = run / ".lock"
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(self._fd)
                self._fd = None
                raise CharRNNError(
                    f"another charrnn train is using {self.path.parent} (wait for it to finish, "
                    "or choose another --out)"
                ) from None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"{os.getpid()}\n".encode())
        for stale in self.path.parent.glob(".*.tmp-*"):  # half-written files of a killed run: we hold the lock
            stale.unlink(missing_ok=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None


def ensure_writable(run: Path) -> None:
    """Fail before training, not at the first save, when the run folder cannot be written."""
    try:
        run.mkdir(parents=True, exist_ok=True)
        probe = run / f".write-test-{os.getpid()}"
        with open(probe, "wb") as f:
            f.write(b"ok")
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
    except OSError as e:
        raise CharRNNError(
            f"cannot write to the run folder {run}: {e.strerror or e} (choose another --out or free some disk space)"
        ) from None
