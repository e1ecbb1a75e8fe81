"""What the automatic shape's probe measures and chooses, without training: the sizing call that
`charrnn train CORPUS --minutes M` makes (recipe._plan: same split, device and precision), printing one line
per shape measured and the dim line. Run it several times, each a fresh process, to see the probe's spread.
The plan counts quality.py's validations at --milestones, as a quality.py run's would (--milestones "" for
`charrnn train`'s own).

    python benchmarks/probe.py ../shared/corpora/tinyshakespeare.txt --minutes 1 [--precision fp32]
    python benchmarks/probe.py ../shared/corpora/tinyshakespeare.txt --minutes 1 --then 2x192

--then LxH: after the plan, in the same process, the median chars/s of 24 training steps (after 4 untimed) of
a GRU of that shape at batch 16 without dropout, as a run that plans few passes trains it (the probe times
shapes at dropout 0.1, sizing.PROBE_DROPOUT): what the machine gave right after the probe read it.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from charrnn import dataset, recipe, sizing
from charrnn.config import ModelConfig, TrainConfig
from charrnn.devices import describe_cpu, pick_device, pick_dtype
from charrnn.distributed import Dist


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--milestones", default="1,2,2.5,5,15", help="quality.py's validations, in minutes")
    ap.add_argument("--then", default=None, help="LxH: time this GRU shape's steps after the plan")
    args = ap.parse_args()
    logging.basicConfig(format="  %(message)s")
    logging.getLogger("charrnn.sizing").setLevel(logging.DEBUG)
    cfg = TrainConfig(minutes=args.minutes, precision=args.precision)
    ds = dataset.load([args.corpus], cfg.val_frac)
    device = pick_device(cfg.device)
    dtype = pick_dtype(cfg.precision, device)
    milestones = tuple(m * 60 for m in (float(x) for x in args.milestones.split(",") if x) if m < args.minutes)
    val_chars = len(ds.val) if cfg.val_frac > 0 else 0
    vocab = {"vocab_size": len(ds.vocab)}
    plan = recipe._plan(vocab, {}, cfg, ds.train, device, dtype, Dist(), False, val_chars, milestones)
    print(f"  -> {plan.note}")
    then = None
    if args.then:
        layers, hidden = (int(x) for x in args.then.split("x"))
        shape = sizing.Shape(layers, hidden, 16)
        probe = sizing.Probe(ModelConfig(model="gru", dropout=0.0, **vocab), ds.train, cfg.seq_len, device, dtype)
        step = probe._bench(shape)
        times = [step() for _ in range(28)][4:]  # 4 untimed, as the probe's warm-up
        then = shape.batch_size * cfg.seq_len / float(np.median(times))
        print(f"  then GRU {shape}: {then:,.0f} chars/s (median of 24 steps)")
    result = {"minutes": args.minutes, "choice": plan.note, "then_chars_per_s": then, "cpu": describe_cpu()}
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
