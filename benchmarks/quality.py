"""Quality benchmark: train with charrnn's own code and defaults for a wall-clock budget and print the
validation loss at fixed moments, to compare with nanoGPT's shakespeare_char (same 90/10 split).

    python benchmarks/quality.py ../shared/corpora/tinyshakespeare.txt --minutes 5 [train flags, e.g. --hidden 384]

Validation at each milestone is charrnn's own full stateful pass over the last 10%, in the training
precision; the final best.pt is scored again in fp32 so the headline figure does not depend on bf16.
The last line is `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from charrnn import checkpoint, data
from charrnn.devices import describe_cpu
from charrnn.evaluate import evaluate
from charrnn.loop import train


def parse_flags(extra: list[str]) -> tuple[dict, dict]:
    """`--hidden 384 --model gru` style flags for the model and training configs (for sweeps)."""
    from charrnn.config import ModelConfig, TrainConfig

    model_flags, train_flags = {}, {}
    for key, raw in zip(extra[::2], extra[1::2]):
        name = key.removeprefix("--").replace("-", "_")
        for cls, target in ((ModelConfig, model_flags), (TrainConfig, train_flags)):
            if name in cls.__dataclass_fields__:
                kind = str(cls.__dataclass_fields__[name].type)
                target[name] = (
                    tuple(int(c) for c in raw.split(",") if c)  # --cutoffs 500,2000; --cutoffs , is a full softmax
                    if "tuple" in kind
                    else raw.lower() in ("1", "true", "yes")
                    if "bool" in kind
                    else int(raw)
                    if "int" in kind
                    else float(raw)
                    if "float" in kind
                    else raw
                )
                break
        else:
            sys.exit(f"unknown flag {key}")
    return model_flags, train_flags


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--milestones", default="1,2,2.5,5,15", help="minutes at which to validate")
    ap.add_argument("--out", type=Path, default=None, help="run folder (default: a temporary one)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args, extra = ap.parse_known_args()  # the rest are train flags, e.g. --hidden 384 --lr 0.004
    if args.threads:
        torch.set_num_threads(args.threads)
    model_flags, train_flags = parse_flags([a for a in extra if a != "--"])
    train_flags = {"minutes": args.minutes, "val_frac": 0.1, **train_flags}
    milestones = sorted(m for m in map(float, args.milestones.split(",")) if m < args.minutes)
    out = args.out or Path(tempfile.mkdtemp(prefix="charrnn-quality-")) / "run"
    seen: list[dict] = []

    def report(event) -> None:
        if event.kind in ("notice", "info"):
            print(f"  {event.elapsed / 60:6.2f} min  step {event.step:6d}  {event.message}", flush=True)
        if event.kind == "eval" and event.val is not None:
            row = {
                "minutes": round(event.elapsed / 60, 3),
                "step": event.step,
                "val_nats": round(event.val.nats_per_char, 4),
                "val_bpc": round(event.val.bits_per_char, 4),
                "chars_per_s": round(event.chars_per_s),
            }
            seen.append(row)
            print(
                f"  {row['minutes']:6.2f} min  step {row['step']:6d}  val {row['val_nats']:.4f} nats/char "
                f"({row['val_bpc']:.4f} bpc)  {row['chars_per_s']:,} chars/s",
                flush=True,
            )

    logging.basicConfig(format="  %(message)s")  # what the automatic shape's probe measured
    logging.getLogger("charrnn.sizing").setLevel(logging.DEBUG)
    cpu = describe_cpu()
    print(f"charrnn quality: {args.corpus} budget {args.minutes:g} min, flags {model_flags} {train_flags}", flush=True)
    print(f"CPU: {cpu}", flush=True)
    result = train(
        args.corpus, model_flags, train_flags, out=out, report=report, eval_at_seconds=[m * 60 for m in milestones]
    )
    ckpt = checkpoint.load(out / "best.pt")
    model, vocab = checkpoint.build_model(ckpt)
    _, val_ids = data.split(data.read_corpus(args.corpus).ids, 0.1)
    fp32 = evaluate(model, val_ids, "cpu", torch.float32)
    at = {}
    for m in milestones:  # the first validation at or after each milestone
        row = next((r for r in seen if r["minutes"] >= m - 1e-9), None)
        if row:
            at[f"{m:g}"] = row["val_nats"]
    rates = [r["chars_per_s"] for r in seen if r["chars_per_s"]]
    summary = {
        "corpus": str(args.corpus),
        "minutes": args.minutes,
        "steps": result.step,
        "model": ckpt["model_config"],
        "train": {k: v for k, v in ckpt["train_config"].items()},
        "val_nats_at_minutes": at,
        "final_val_nats": round(result.last_val.nats_per_char, 4),
        "best_val_nats": round(result.best_val, 4),
        "best_val_bpc": round(result.best_val / math.log(2), 4),
        "best_val_nats_fp32": round(fp32.nats_per_char, 4),
        "best_val_bpc_fp32": round(fp32.bits_per_char, 4),
        "train_chars_per_s_median": sorted(rates)[len(rates) // 2] if rates else None,
        "precision": ckpt.get("precision"),
        "sizing": ckpt.get("sizing"),
        "cpu": cpu,
    }
    print(
        f"final: best val {summary['best_val_nats']:.4f} nats/char ({summary['best_val_bpc']:.4f} bpc); "
        f"fp32 re-score {summary['best_val_nats_fp32']:.4f} ({summary['best_val_bpc_fp32']:.4f} bpc)"
    )
    print("RESULT " + json.dumps(summary))
    if args.out is None:
        shutil.rmtree(out.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
