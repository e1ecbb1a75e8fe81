"""Loss curves: read the metrics.jsonl of one or several runs and draw train and validation loss against
steps or minutes, in the terminal (plotext) or as a picture (matplotlib, the optional [plot] extra).

Reading is strict about what it cannot use and says so: an empty log or one with no readable row is an
error that names the file; a torn last line (a run killed mid-write) is skipped with a notice.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from charrnn.atomic import replace_with
from charrnn.errors import CharRNNError

PICTURES = (".png", ".svg", ".pdf")


@dataclass(frozen=True)
class Curve:
    name: str  # the run folder's name
    steps: list[int]
    minutes: list[float]
    train: list[float | None]  # smoothed train loss, nats/char
    val: list[float | None]  # validation loss, nats/char (None where a run has no validation)


def metrics_path(run: Path) -> Path:
    """A run folder's metrics.jsonl, or the file itself."""
    path = run / "metrics.jsonl" if run.is_dir() else run
    if not path.is_file():
        raise CharRNNError(f"no metrics.jsonl in {run} (give a run folder that `charrnn train` wrote)")
    return path


def read(run: Path, warn: Callable[[str], None] = lambda message: None) -> Curve:
    path = metrics_path(Path(run))
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows.append((int(row["step"]), float(row["elapsed"]), row.get("train_loss"), row.get("val_loss")))
        except (ValueError, KeyError, TypeError):
            warn(f"{path}: line {n} is torn or not a metrics row (a run killed mid-write?); skipped")
    if not rows:
        raise CharRNNError(f"{path} has no metrics rows yet (a run writes one at every validation)")
    name = path.parent.name if path.name == "metrics.jsonl" else path.stem
    return Curve(
        name,
        [r[0] for r in rows],
        [r[1] / 60 for r in rows],
        [r[2] for r in rows],
        [r[3] for r in rows],
    )


def _series(curve: Curve, x: str, bits: bool) -> tuple[list[float], list[tuple[str, list[float], list[float]]]]:
    """The x values, and (label, xs, ys) for train and val, without the missing points."""
    xs = curve.steps if x == "steps" else curve.minutes
    scale = 1 / math.log(2) if bits else 1.0
    out = []
    for label, ys in (("train", curve.train), ("val", curve.val)):
        pts = [(a, b * scale) for a, b in zip(xs, ys) if b is not None]
        if pts:
            out.append((f"{curve.name} {label}", [p[0] for p in pts], [p[1] for p in pts]))
    return xs, out


def draw_terminal(curves: Sequence[Curve], x: str = "steps", bits: bool = False, width: int | None = None) -> str:
    """The chart as text (ANSI colours) for a terminal."""
    import plotext as plt

    plt.clear_figure()
    if width:
        plt.plotsize(width, 24)
    for curve in curves:
        for label, xs, ys in _series(curve, x, bits)[1]:
            plt.plot(xs, ys, label=label, marker="braille")
    plt.xlabel(x)
    plt.ylabel("bits/char" if bits else "nats/char")
    plt.title("loss: " + ", ".join(c.name for c in curves))
    return plt.build()


def draw_picture(curves: Sequence[Curve], out: Path, x: str = "steps", bits: bool = False) -> None:
    """A .png, .svg or .pdf with matplotlib, an optional extra."""
    if out.suffix.lower() not in PICTURES:
        raise CharRNNError(f"--out {out}: give a .png, .svg or .pdf file")
    try:
        import matplotlib
    except ImportError:
        raise CharRNNError("pictures need matplotlib: pip install 'charrnn[plot]'") from None
    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    for curve in curves:
        for label, xs, ys in _series(curve, x, bits)[1]:
            ax.plot(xs, ys, label=label, linestyle="--" if label.endswith("train") else "-")
    ax.set_xlabel(x)
    ax.set_ylabel("bits/char" if bits else "nats/char")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        replace_with(out, fig.savefig)
    finally:
        plt.close(fig)
