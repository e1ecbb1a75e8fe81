"""Re-make the model bundled with the package (`charrnn/pretrained/english.pt`: what `charrnn sample` uses
before any training, and the start of `charrnn train --init bundled`): train on the shipped corpora
(Shakespeare and the BSD fortunes, old and modern English) with the defaults for a budget, then keep
best.pt with the corpus recorded by file names, sizes and hashes only (a path from this disk means
nothing elsewhere).

    python benchmarks/make_bundled.py --steps 4500 --model gru --layers 2 --hidden 384 --batch-size 16
    python benchmarks/make_bundled.py --minutes 10 [train flags]

A recipe in steps makes the same model on any machine (a 10-minute budget made 4,500 steps of GRU 2x384 on
the 2-core AVX-512 CPU and about 2,400 on the AVX2 one); in minutes it is the defaults for that budget.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from quality import parse_flags

from charrnn import checkpoint, locate
from charrnn.loop import train
from charrnn.model import count_parameters

ROOT = Path(__file__).resolve().parent.parent
CORPORA = [ROOT / "corpora" / "shakespeare.txt", ROOT / "corpora" / "fortunes.txt"]
BUNDLED = locate.BUNDLED
MAX_BYTES = 8 * 1024 * 1024  # what the wheel can carry without weighing on every install


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=None, help="a time budget (default: 10, unless --steps)")
    args, extra = ap.parse_known_args()
    model_flags, train_flags = parse_flags(extra)
    if args.minutes is not None:
        train_flags["minutes"] = args.minutes
    elif "steps" not in train_flags:
        train_flags["minutes"] = 10.0
    out = Path(tempfile.mkdtemp(prefix="charrnn-bundled-")) / "run"
    result = train(CORPORA, model_flags, train_flags, out=out)
    ckpt = checkpoint.load(out / "best.pt")
    ckpt["corpus"]["path"] = Path(ckpt["corpus"]["path"]).name
    for f in ckpt.get("files") or []:
        f["path"] = Path(f["path"]).name
    checkpoint.save({k: v for k, v in ckpt.items() if k not in ("format", "version")}, BUNDLED)
    size = BUNDLED.stat().st_size
    if size > MAX_BYTES:
        raise SystemExit(f"{BUNDLED} is {size:,} bytes, over the {MAX_BYTES:,} limit: pass a smaller --hidden")
    model, _ = checkpoint.build_model(ckpt)
    print(
        f"{BUNDLED}: {size:,} bytes, {count_parameters(model):,} parameters"
        f"{', ' + ckpt['sizing'] if ckpt.get('sizing') else ''}; "
        f"best val {result.best_val:.4f} nats/char after {result.step:,} steps"
    )


if __name__ == "__main__":
    main()
