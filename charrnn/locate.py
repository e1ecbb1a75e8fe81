"""Finding a model: --checkpoint as given (a file or a run folder), else the newest run under
./checkpoints, else the model bundled with the package. Imports no torch, so a sampler can find its
weights before deciding whether it needs torch at all."""

from __future__ import annotations

from pathlib import Path

from charrnn.errors import CharRNNError

RUNS_DIR = Path("checkpoints")
BUNDLED = Path(__file__).parent / "pretrained" / "english.pt"


def newest_run(root: Path = RUNS_DIR) -> Path | None:
    """The checkpoint of the most recently written run folder under `root` (its best.pt, else last.pt)."""
    if not root.is_dir():
        return None
    found = [f for d in root.iterdir() if d.is_dir() for f in (d / "best.pt", d / "last.pt") if f.is_file()]
    if not found:
        return None
    newest = max(found, key=lambda f: f.stat().st_mtime).parent
    return resolve(newest)


def resolve(spec: Path | str | None, root: Path = RUNS_DIR) -> Path:
    """--checkpoint as given (a file, a run folder meaning its best.pt, or `bundled`), else the newest
    run, else the model bundled with the package."""
    if spec is not None:
        p = Path(spec)
        if str(spec) == "bundled" and not p.exists():
            return BUNDLED
        if p.is_dir():
            for name in ("best.pt", "last.pt"):
                if (p / name).is_file():
                    return p / name
        return p
    if (found := newest_run(root)) is not None:
        return found
    if BUNDLED.is_file():
        return BUNDLED
    raise CharRNNError(
        f"no checkpoint found under ./{root} (train one first: `charrnn train`, or pass --checkpoint PATH)"
    )


def training_file(recorded: str, size: int | None) -> Path | None:
    """A training text a checkpoint recorded, where it is on this machine: at its recorded path, or, for a
    model that records its corpus by name (the bundled one), the copy that ships with charrnn (in the
    wheel, or in the source tree). None when it is not here."""
    where = Path(recorded)
    if where.is_file():
        return where
    for shipped in shipped_corpora(where.name):
        if shipped.is_file() and shipped.stat().st_size == size:
            return shipped
    return None


def shipped_corpora(name: str) -> tuple[Path, Path]:
    """Where a corpus that ships with charrnn may be: inside the package in a wheel (pyproject's
    force-include), or beside it in the source tree under an editable install (`pip install -e .`, the
    README's test setup), which runs the package from there and has no copy inside it."""
    here = Path(__file__).parent
    return here / "corpora" / name, here.parent / "corpora" / name
