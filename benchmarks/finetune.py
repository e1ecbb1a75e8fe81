"""Fine-tuning benchmark: on a small text, does starting from the bundled English model beat training
from scratch in the same wall-clock budget? Both runs use charrnn's defaults and the same 90/10 split.

    python corpora/build.py murphy /tmp/corpora/murphy.txt      # 59 KB of English (see corpora/README.md)
    python benchmarks/finetune.py /tmp/corpora/murphy.txt --minutes 1,5
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python benchmarks/finetune.py ... --precision fp32
                                                                # an AVX2-only CPU, on an AVX-512 one

For each budget it trains from scratch, then with `init="bundled"`, and prints the best validation loss of
each (nats/char over the same validation characters). The last line is `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import charrnn
from charrnn.devices import describe_cpu


def one_run(corpus: Path, minutes: float, init: str | None, out: Path, precision: str) -> dict:
    result = charrnn.train(corpus, minutes=minutes, val_frac=0.1, init=init, out=out, precision=precision)
    row = {
        "minutes": minutes,
        "start": init or "scratch",
        "steps": result.step,
        "best_val_nats": round(result.best_val, 4),
        "model": charrnn.load(out).info["shape"],
    }
    print(
        f"  {minutes:g} min  {row['start']:8s}  {row['steps']:5d} steps  best val {row['best_val_nats']:.4f}",
        flush=True,
    )
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--minutes", default="1,5", help="budgets, comma-separated")
    ap.add_argument("--init", default="bundled", help="the model to start from (a .pt, a run folder, or bundled)")
    ap.add_argument("--precision", default="auto", help="as `charrnn train --precision` (fp32 to emulate AVX2)")
    args = ap.parse_args()
    print(
        f"charrnn fine-tune benchmark: {args.corpus}; CPU {describe_cpu()}",
        flush=True,
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="charrnn-finetune-") as tmp:
        for minutes in map(float, args.minutes.split(",")):
            for init in (None, args.init):
                out = Path(tmp) / f"{minutes:g}-{'scratch' if init is None else 'init'}"
                rows.append(one_run(args.corpus, minutes, init, out, args.precision))
    for minutes in sorted({r["minutes"] for r in rows}):
        scratch, tuned = (
            next(r for r in rows if r["minutes"] == minutes and r["start"] == s) for s in ("scratch", args.init)
        )
        print(
            f"{minutes:g} min: fine-tuning ends {scratch['best_val_nats'] - tuned['best_val_nats']:.4f} nats/char lower"
        )
    print("RESULT " + json.dumps({"cpu": describe_cpu(), "runs": rows}))


if __name__ == "__main__":
    main()
