"""The automatic shape's rule against every grid measured so far, without training: each grid's fixed runs
(cell, width, batch, the steps they made, the loss they reached) go in as if the probe had read exactly
the speed each run trained at, and out comes the shape charrnn's own rule (sizing.choose and plan's cell
branch) takes, and how far its loss is from the grid's best. The grids are the tables of
benchmarks/README.md at 1, 2 and 5 minutes (two-layer shapes; where a shape ran twice, the mean of its
runs). Other anchors can be tried without editing config.py:

    python benchmarks/backtest.py                                      # the rule as it is
    python benchmarks/backtest.py --anchors 1:500,2:1000,5:1350 --width-exponent 0   # the rule before
"""

from __future__ import annotations

import argparse
import json

from charrnn import config, sizing
from charrnn.sizing import Shape

SEQ_LEN = 128
# grid name (machine_minutes) -> (cell, hidden, batch, steps, best val nats/char)
GRIDS: dict[str, list[tuple[str, int, int, float, float]]] = {
    "avx2_1": [
        ("lstm", 128, 16, 772, 1.7564),
        ("lstm", 192, 16, 801, 1.7365),
        ("lstm", 256, 16, 479, 1.8012),
        ("gru", 128, 16, 564, 1.6774),
        ("gru", 192, 16, 371, 1.7336),
        ("gru", 256, 16, 288, 1.7978),
    ],
    "avx2_5": [
        ("lstm", 384, 16, 1143, 1.5929),
        ("lstm", 256, 16, 2039, 1.5325),
        ("gru", 128, 16, 2490, 1.5397),
        ("gru", 192, 16, 1639, 1.5195),
        ("gru", 256, 16, 1540, 1.4884),
        ("gru", 256, 32, 942, 1.5016),
        ("gru", 384, 16, 646, 1.5738),
    ],
    "zen5a_1": [
        ("gru", 128, 16, 846, 1.6587),
        ("gru", 256, 16, 527, 1.6052),
        ("gru", 256, 32, 413, 1.6116),
        ("lstm", 256, 16, 1000, 1.6417),
        ("lstm", 384, 16, 715, 1.7031),
        ("lstm", 512, 16, 427, 1.8023),
    ],
    "zen5a_2": [("gru", 256, 16, 1035, 1.5239), ("gru", 512, 16, 569, 1.5452), ("lstm", 512, 16, 847, 1.6149)],
    "zen5a_5": [("gru", 384, 16, 1274, 1.4878), ("gru", 512, 16, 1519, 1.4345), ("lstm", 512, 16, 2234, 1.4662)],
    "zen5b_1": [
        ("gru", 128, 16, 686, 1.6715),
        ("gru", 256, 16, 498, 1.6258),
        ("gru", 384, 16, 382, 1.6857),
        ("gru", 512, 16, 247, 1.8057),
        ("gru", 768, 16, 128, 2.0173),
        ("gru", 256, 32, 358, 1.6290),
        ("gru", 384, 32, 247, 1.6914),
        ("lstm", 256, 16, 1100, 1.6309),
        ("lstm", 384, 16, 561, 1.7401),
        ("lstm", 512, 16, 370, 1.8540),
        ("lstm", 768, 16, 102, 2.3527),
        ("lstm", 256, 32, 490, 1.7424),
        ("lstm", 384, 32, 285, 1.8773),
    ],
    "zen5b_5": [
        ("gru", 256, 16, 2541, 1.4595),
        ("gru", 384, 16, 2000, 1.4367),
        ("gru", 512, 16, 1536, 1.4320),
        ("gru", 768, 16, 892, 1.4771),
        ("gru", 256, 32, 1957, 1.4639),
        ("gru", 384, 32, 1249, 1.4417),
        ("gru", 512, 32, 939, 1.4448),
        ("gru", 768, 32, 595, 1.4831),
        ("lstm", 384, 16, 3126, 1.4736),
        ("lstm", 512, 16, 1880, 1.4802),
        ("lstm", 768, 16, 732, 1.6447),
        ("lstm", 384, 32, 1771, 1.5045),
        ("lstm", 512, 32, 1194, 1.5068),
        ("lstm", 768, 32, 374, 1.7621),
    ],
    "zen5c_2": [
        ("gru", 256, 16, 1067, 1.5238),
        ("gru", 384, 16, 711, 1.5424),
        ("gru", 512, 16, 615, 1.5343),
        ("gru", 256, 32, 845, 1.5102),
        ("gru", 384, 32, 507, 1.5346),
        ("gru", 512, 32, 299, 1.6105),
        ("lstm", 256, 16, 2094, 1.5362),
        ("lstm", 384, 16, 1463, 1.5490),
        ("lstm", 512, 16, 848, 1.6228),
    ],
    "zen5emu_1": [
        ("gru", 128, 16, 685, 1.6733),
        ("gru", 192, 16, 490, 1.6454),
        ("gru", 256, 16, 348, 1.7409),
        ("gru", 192, 32, 420, 1.6163),
    ],
    "intel_1": [
        ("gru", 128, 16, 426, 1.7688),
        ("gru", 192, 16, 397, 1.7109),
        ("gru", 256, 16, 323, 1.7677),
        ("gru", 128, 32, 322, 1.7366),
        ("lstm", 128, 16, 1268, 1.6805),
        ("lstm", 192, 16, 922, 1.6963),
        ("lstm", 256, 16, 752, 1.6949),
        ("lstm", 384, 16, 405, 1.8603),
        ("lstm", 256, 32, 461, 1.7644),
    ],
    "intel_2": [
        ("gru", 128, 16, 772, 1.6646),
        ("gru", 128, 32, 602, 1.6285),
        ("lstm", 128, 16, 2166, 1.6136),
        ("lstm", 192, 16, 1524, 1.6165),
    ],
    "intel_5": [
        ("gru", 256, 16, 1374, 1.5073),
        ("gru", 384, 16, 1000, 1.4906),
        ("lstm", 192, 16, 3770, 1.5536),
        ("lstm", 256, 16, 2700, 1.5481),
    ],
    # the Intel Xeon as an AVX2 CPU, the fast spell (2x128 at batch 16: the two automatic runs)
    "intelemu_2": [
        ("gru", 128, 16, 1029, 1.6187),
        ("gru", 192, 16, 783, 1.5958),
        ("gru", 256, 16, 651, 1.5839),
        ("gru", 192, 32, 566, 1.5676),
    ],
    # measured after the anchors were fitted
    "intelemu_5": [
        ("gru", 192, 16, 1654, 1.5234),
        ("gru", 256, 16, 1102, 1.5246),
        ("gru", 384, 16, 699, 1.5491),
        ("gru", 256, 32, 876, 1.5050),
        ("lstm", 256, 16, 1671, 1.5631),
        ("lstm", 384, 16, 596, 1.7379),
    ],
}


def pick(rows: list[tuple[str, int, int, float, float]], budget_s: float) -> tuple[str, int, int, float, float]:
    """The row the rule takes when every run's speed is known exactly: the GRU's choice, or the LSTM's where
    the GRU falls short of its need and the LSTM makes more effective steps at AUTO_LSTM_STEP_WORTH (plan();
    none of these grids plans the 12 passes of the other branch)."""
    by_shape = {cell: {Shape(2, r[1], r[2]): r for r in rows if r[0] == cell} for cell in ("gru", "lstm")}

    def choose(cell: str, worth: float) -> sizing.Choice | None:
        if not by_shape[cell]:
            return None
        rates = {s: r[3] * s.batch_size * SEQ_LEN / budget_s for s, r in by_shape[cell].items()}
        return sizing.choose(rates, SEQ_LEN, budget_s, None, worth)

    gru = choose("gru", 1.0)  # every grid has GRU rows
    if sizing.qualifies(gru.steps, gru.shape, budget_s):
        return by_shape["gru"][gru.shape]
    lstm = choose("lstm", config.AUTO_LSTM_STEP_WORTH)
    return (
        by_shape["lstm"][lstm.shape] if lstm is not None and sizing.lstm_wins(gru, lstm) else by_shape["gru"][gru.shape]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--anchors", help="minutes:steps,... in place of config.SIZING_MIN_STEPS (up to 5 minutes)")
    ap.add_argument("--width-exponent", type=float, help="in place of config.SIZING_WIDTH_EXPONENT")
    args = ap.parse_args()
    if args.anchors:
        pts = [tuple(float(x) for x in p.split(":")) for p in args.anchors.split(",")]
        config.SIZING_MIN_STEPS = (*pts, *(p for p in config.SIZING_MIN_STEPS if p[0] > pts[-1][0]))
    if args.width_exponent is not None:
        config.SIZING_WIDTH_EXPONENT = args.width_exponent
    behind = {}
    for name, rows in GRIDS.items():
        got = pick(rows, float(name.split("_")[1]) * 60)
        best = min(rows, key=lambda r: r[4])
        behind[name] = round(got[4] - best[4], 4)
        print(
            f"{name:11s} takes {got[0]} 2x{got[1]} b{got[2]} {got[4]:.4f}   best {best[0]} 2x{best[1]} b{best[2]} "
            f"{best[4]:.4f}   {behind[name]:+.4f}"
        )
    within = sum(v <= 0.015 for v in behind.values())
    print(f"within 0.015 of the grid's best: {within} of {len(behind)}")
    print(
        "RESULT "
        + json.dumps(
            {
                "anchors": config.SIZING_MIN_STEPS,
                "width_exponent": config.SIZING_WIDTH_EXPONENT,
                "behind": behind,
                "within": within,
            }
        )
    )


if __name__ == "__main__":
    main()
