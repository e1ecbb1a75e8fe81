"""Frozen configuration dataclasses: the single home of every default, each with its reason.

Validation lives in ``__post_init__`` and names the command-line flag a user would change, so a bad
value is reported the same way whether it came from the CLI, a checkpoint or Python code.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from charrnn.errors import CharRNNError

CELL_TYPES = ("lstm", "gru", "rnn")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise CharRNNError(message)


def _positive_int(value: Any, flag: str) -> None:
    _check(isinstance(value, int) and value >= 1, f"{flag} must be a whole number >= 1, got {value!r}")


@dataclass(frozen=True)
class ModelConfig:
    """What a CharRNN is; stored in every checkpoint so a model can be rebuilt without its corpus."""

    model: str = "lstm"  # LSTM trains best of the three cells on character data (Karpathy 2015).
    vocab_size: int = 0  # Filled in from the corpus; 0 only before the corpus is read.
    layers: int = 2  # Two layers beat one clearly; a third costs time a CPU budget cannot repay.
    hidden: int = 512  # Measured best for a 5-minute CPU budget (benchmarks/README.md).
    embed: int = 128  # Characters need few dimensions; the input matmul stays cheap.
    dropout: float | None = None  # None: the trainer picks it from the planned passes (auto_dropout).
    tie_weights: bool = False  # Sharing embedding and output weights needs embed == hidden.
    locked_dropout: bool = False  # One dropout mask per window instead of per character (benchmarks/README.md).
    weight_drop: float = 0.0  # DropConnect on the recurrent weights (AWD-LSTM); 0: off (benchmarks/README.md).
    cutoffs: tuple[int, ...] = ()  # Adaptive softmax class boundaries by frequency rank; (): a full softmax.

    def __post_init__(self) -> None:
        _check(self.model in CELL_TYPES, f"--model must be one of {', '.join(CELL_TYPES)}, got {self.model!r}")
        _check(isinstance(self.vocab_size, int) and self.vocab_size >= 0, "vocab_size must be >= 0")
        _positive_int(self.layers, "--layers")
        _positive_int(self.hidden, "--hidden")
        _positive_int(self.embed, "--embed")
        _check(self.dropout is None or 0.0 <= self.dropout < 1.0, f"--dropout must be in [0, 1), got {self.dropout}")
        _check(0.0 <= self.weight_drop < 1.0, f"--weight-drop must be in [0, 1), got {self.weight_drop}")
        object.__setattr__(self, "cutoffs", tuple(self.cutoffs))  # a list when read back from a checkpoint
        _check(
            all(0 < a < b for a, b in zip(self.cutoffs, (*self.cutoffs[1:], self.vocab_size))),
            f"adaptive softmax cutoffs must rise within the vocabulary, got {self.cutoffs}",
        )
        _check(not (self.cutoffs and self.tie_weights), "tied weights need a full softmax (no cutoffs)")
        _check(
            not self.tie_weights or self.embed == self.hidden,
            f"tied weights need --embed equal to --hidden, got {self.embed} and {self.hidden}",
        )

    @property
    def gates(self) -> int:
        """Gate blocks per layer in torch's weight layout: LSTM i,f,g,o; GRU r,z,n; RNN one."""
        return {"lstm": 4, "gru": 3, "rnn": 1}[self.model]


@dataclass(frozen=True)
class TrainConfig:
    """How to train; stored in checkpoints so that --resume continues the same schedule."""

    seq_len: int = 128  # Window length of truncated BPTT; state still flows across windows.
    batch_size: int = (
        16  # Streams per step (global across ranks): on a CPU budget more, smaller steps win (benchmarks/README.md).
    )
    lr: float = 3e-3  # Peak AdamW rate at LR_REF_HIDDEN units; unless --lr is given it scales as auto_lr.
    min_lr_frac: float = 0.05  # Cosine decay ends at this fraction of --lr when the budget runs out.
    warmup_steps: int = 50  # Linear warmup: Adam's early steps are noisy at a high rate.
    weight_decay: float = 0.3  # Decoupled (AdamW), on matrices only; 0.1 for --init (FINETUNE_WEIGHT_DECAY: why).
    clip: float = 1.0  # Global gradient-norm clip: RNN gradients occasionally explode.
    steps: int | None = None  # Optimizer steps; None means only --minutes bounds the run.
    minutes: float | None = None  # Wall-clock budget; None with no --steps means DEFAULT_MINUTES.
    val_frac: float = 0.1  # Last 10% is validation, the split nanoGPT's shakespeare_char uses.
    separator: str | None = None  # Between files of a corpus of several; None: a blank line.
    val_chars: int | None = None  # Validate on only the first N characters of the split; None: all of it.
    eval_every: int = 500  # Steps between validations (at most; see EVAL_MAX_PASSES): about a minute on a 2-core CPU.
    sample_every: int = 1  # A short sample at every Nth validation (0: never), to watch the model learn.
    sample_length: int = 200  # Characters in each of those samples: a few lines, a few milliseconds.
    seed: int = 1337  # Fixed so two runs with the same flags are the same run.
    device: str = "auto"  # cuda, then mps, then cpu.
    precision: str = "auto"  # bf16 autocast where the hardware has it, fp32 elsewhere.

    def __post_init__(self) -> None:
        _positive_int(self.seq_len, "--seq-len")
        _positive_int(self.batch_size, "--batch-size")
        _check(self.lr > 0 and math.isfinite(self.lr), f"--lr must be a positive number, got {self.lr}")
        _check(0.0 <= self.min_lr_frac <= 1.0, "min_lr_frac must be in [0, 1]")
        _check(self.warmup_steps >= 0, "warmup_steps must be >= 0")
        _check(self.weight_decay >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}")
        _check(self.clip > 0, f"--clip must be > 0, got {self.clip}")
        _check(
            self.steps is None or (isinstance(self.steps, int) and self.steps >= 1),
            f"--steps must be >= 1, got {self.steps}",
        )
        _check(self.minutes is None or self.minutes > 0, f"--minutes must be > 0, got {self.minutes}")
        _check(0.0 <= self.val_frac < 0.5, f"--val-frac must be in [0, 0.5), got {self.val_frac}")
        _positive_int(self.eval_every, "--eval-every")
        _check(
            self.separator is None or isinstance(self.separator, str),
            f"--separator must be text, got {self.separator!r}",
        )
        _check(
            isinstance(self.sample_every, int) and self.sample_every >= 0,
            f"--sample-every must be a whole number >= 0, got {self.sample_every}",
        )
        _check(
            isinstance(self.sample_length, int) and self.sample_length >= 1,
            f"--sample-length must be a whole number >= 1, got {self.sample_length}",
        )
        _check(
            self.val_chars is None or (isinstance(self.val_chars, int) and self.val_chars >= 2),
            f"--val-chars must be a whole number >= 2, got {self.val_chars}",
        )
        _check(self.device in DEVICES, f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        _check(
            self.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
        )

    @property
    def budget_seconds(self) -> float | None:
        """The wall-clock budget in force: --minutes, else DEFAULT_MINUTES unless --steps was given."""
        if self.minutes is not None:
            return self.minutes * 60.0
        return None if self.steps is not None else DEFAULT_MINUTES * 60.0


DEFAULT_MINUTES = 5.0  # With neither --steps nor --minutes, a run is a coffee break long.

# TrainConfig.weight_decay. 0.1 (nanoGPT's) beat 0.01 by 0.018 nats/char for an LSTM 2x512 at 15 minutes on
# tiny-shakespeare (about 15 passes) and made no difference at 5. For the GRU 2x512 at 15 minutes (10-11
# passes) 0.3 ended at 1.3917 and 0.5 at 1.3944 where 0.1 had ended at 1.4021-1.4107 in four runs, and the
# automatic run at 0.3 reached 1.3855; at 5 minutes (3.8 passes) 0.3 ended at 1.4378 against 1.4453, and at 1
# minute at 1.5630 against 1.5803; as an AVX2 CPU at 5 minutes 1.4745 against 1.4616-1.4683 at 0.1 in earlier
# sessions, within the spread of single runs (benchmarks/README.md). A fine-tuning run (--init) keeps
# FINETUNE_WEIGHT_DECAY unless --weight-decay is given: decay pulls every weight towards zero, away from what the
# start model knows, and the fine-tuning measurements were made at 0.1.
FINETUNE_WEIGHT_DECAY = 0.1

# Automatic dropout: none up to DROPOUT_PASSES[0] planned passes over the training text, rising linearly to
# DROPOUT_TOP (GRU_DROPOUT_TOP for a GRU) at DROPOUT_PASSES[1] passes and beyond (benchmarks/README.md, "No
# dropout below eight passes"). A model that has read its text a few times has little to overfit, and weight
# decay 0.3 already holds the weights in. On the AVX2 machine, against the 0.1 the rule gave before: GRU 2x192 in
# 1 minute (1.1 passes) ended at 1.5798-1.5903 without dropout against 1.6230-1.6249 (three pairs back to back),
# LSTM 2x192 at 1.7473 against 1.7741; in 5 minutes GRU 2x256 (4.3 passes) at 1.4419 against 1.4671-1.4700 and
# GRU 2x384 (2.5) at 1.4583 against 1.4795; in 15 minutes GRU 2x384 (8.0) at 1.3991 against 1.4144 at 0.112.
# It was 0.1 from 0 passes, rising from 6, since the first round (an LSTM at weight decay 0.01, where 0.1 beat
# none at about 5 passes). Beyond 12 passes the earlier evidence stands: an LSTM at 16 passes gained from 0.25
# over 0.1, and GRU 2x512 at 11 passes ended lower at 0.15 than at 0.19-0.23. One run says the top could move
# further out for a narrow GRU (GRU 2x256 at 13.5 passes: 1.4180 without dropout against 1.4310 at 0.15); no
# run at those passes measured a wide one without dropout, so the top stays where it was measured.
DROPOUT_TOP = 0.25
DROPOUT_PASSES = (8.0, 12.0)
# The GRU's top is lower: GRU 2x512 at 15 minutes on tiny-shakespeare (about 11 passes) ended lower at 0.15
# than at the 0.227-0.233 the LSTM's line gave then (0.1 up to 6 passes), in two sessions (1.4056 against
# 1.4131, 1.4021 against 1.4154), its Zen 5 runs at about 0.19 sat between (1.4065, 1.4097), and two more at
# 0.15 ended at 1.4044 and 1.4107: a small gain (runs of the same flags spread by about 0.009;
# benchmarks/README.md).
GRU_DROPOUT_TOP = 0.15


# Automatic shape (charrnn.sizing): the candidates, smallest first, and what one needs to be worth its cost.
# On a CPU budget the number of updates matters more than their width, so a shape qualifies only if it
# makes sizing_min_steps(budget, width) effective steps in the budget; of those that qualify, the one with the
# lowest predicted loss wins (SIZING_LOSS_WIDTH, below).
# The need grows with the budget (compute-optimal training lets both the model and its updates grow;
# Chinchilla's tokens grow as compute ** 0.5) and, beyond SIZING_WIDE_FROM units, with the width as
# width ** SIZING_WIDTH_EXPONENT: a wider model has more to learn before its width pays. One need for
# every width could not hold for every machine: in 2 minutes on the Zen 5, 2x384 with 711-780 steps lost
# to 2x256 with 1,067 by 0.01-0.03 nats/char, while on the Intel Xeon as an AVX2 CPU 2x192 with 783 and
# 2x256 with 651 beat 2x128 with 937-1,121 by 0.016-0.042; at 5 minutes on the Intel Xeon 2x384 with 1,000
# steps beat 2x256 with 1,374 while on the Zen 5 2x768 with 892 lost to 2x512 with 1,536. The anchors
# are the needs of 2x256 and narrower (benchmarks/README.md has every grid they were checked on):
# - 1 minute, 500: GRU 2x128 with 564 steps beat 2x192 with 371 (AVX2), GRU 2x256 with 527 beat 2x128
#   with 846-969 (Zen 5), and on the Intel Xeon no GRU made it (2x128: 426), which hands the budget to
#   the LSTM (AUTO_LSTM_STEP_WORTH);
# - 2 minutes, 700 (2x384: 857, 2x512: 990): GRU 2x256 with 845-1,067 steps beat 2x384 with 711-780 and
#   2x512 with 615 (Zen 5), and 2x192 with 783 (566 at batch 32) beat 2x128 (Intel Xeon as an AVX2 CPU);
# - 5 minutes, 750 (2x384: 919, 2x512: 1,061, 2x768: 1,299): GRU 2x256 with 1,540 beat 2x384 with 646
#   (AVX2), 2x512 with 1,519-1,536 beat 2x384 and 2x768 (Zen 5), 2x384 with 1,000 beat 2x256 (Intel Xeon);
# - 15 minutes, 2,100 (2x512: 2,970, 2x768: 3,637): LSTM 2x768 with 2,389 steps (its probe planned
#   3,089) ended at 1.434 nats/char, behind 2x512 with 3,590-5,348 (1.4065-1.4138, Zen 5).
# Fed each grid's measured steps (`python benchmarks/backtest.py`), these anchors take a shape within 0.015
# nats/char of the grid's best in all 14 grids, 13 they were fitted on and one measured after (26 of 26 with
# the grids measured since, the real AVX2 machine's among them); one need for every width (1,000 at 2 minutes,
# 1,350 at 5) did so in 11 of the 14 (0.017-0.051 behind in the others).
# Between those budgets the need follows the straight line through its neighbours on log-log axes; below them
# the first segment's slope, beyond them SIZING_LONG_EXPONENT, Chinchilla's, where no grid was measured. The
# need never grows faster than the budget, so a longer budget never takes a smaller shape.
SIZING_MIN_STEPS = ((1.0, 500.0), (2.0, 700.0), (5.0, 750.0), (15.0, 2100.0))  # (budget in minutes, effective steps)
SIZING_WIDE_FROM = 256
SIZING_WIDTH_EXPONENT = 0.5
SIZING_LONG_EXPONENT = 0.5
SIZING_REF_MINUTES = 5.0  # whose need --steps alone uses (no clock: any shape makes the steps it is given)
# Among the shapes that make their need, the one with the lowest predicted loss (sizing_predicted_loss) wins,
# not simply the largest. Whether a wider shape beats a narrower one depends on the steps the narrower one would
# make too, and no threshold on the wider shape's own steps can say that for every machine: at 5 minutes 2x384
# with 1,000 steps beat 2x256 with 1,374 on the Intel Xeon (1.37x the steps), while on the AVX2 machine without
# dropout 2x256 with 2,110 beat 2x384 with 1,282 (1.65x); 2x512 with 1,536 beat 2x384 with 2,000 on the Zen 5
# (1.30x), while on the Zen 4 2x384 with 2,603 beat 2x512 with 1,784 (1.46x). The shape's part of the final loss,
#     A * (width / 256) ** -alpha + B * (effective steps / 1,000) ** -beta     (SIZING_LOSS_WIDTH = (A, alpha),
# SIZING_LOSS_STEPS = (B, beta)), was fitted by least squares on the GRU rows of every grid, one level E per grid
# for the machines and sessions (`python benchmarks/backtest.py --predicted-loss`; rmse 0.011, exponents on a
# 0.1 grid). The minimum is flat: with the last runs added, least squares prefers (0.4611, 0.3) and
# (0.2722, 0.6) by an rmse of 0.010620 against 0.010624 for these. The two rank alike in every replay below
# (0.0073 and 0.0074 behind at spread 0.15; `backtest.py --fit 0.4611,0.3,0.2722,0.6`), and these also take the
# Intel Xeon as AVX2's 5-minute best from the steps of its fastest run (2x256 at batch 32, where the other takes
# 2x192, 0.018 behind), so these stay.
# Only shapes at least SIZING_RANK_FROM units wide are ranked; 2x128 is the floor, taken where nothing wider
# makes its need: its many cheap steps predict more than they gave (Zen 5, 1 minute: 2x128 with 846-969 steps
# ended 0.05 behind 2x256 with 527; the fit says 0.01 either way). Fed each grid's measured steps, with the
# fit of every other grid (`backtest.py --held-out`), the rule takes a shape within 0.015 of the grid's best in 30
# of 30 grids, a mean 0.0013 behind; the largest shape that makes its need did so in 28 (the AVX2 machine without
# dropout at 2 and 5 minutes: 2x256 and 2x384, 0.017 behind each), 0.0035 behind. With each shape's speed misread
# by a log-normal factor of spread 0.15, about this VM's probe, 0.0074 against 0.0086 behind
# (benchmarks/README.md, "The shapes ranked by a fitted loss"). Without the need the fit alone took too narrow
# shapes where steps were many and cheap. As the budget or the speed grows every shape's steps grow alike and
# their term shrinks, so the width weighs more: the rule stays monotone in both.
SIZING_LOSS_WIDTH = (0.2254, 0.5)
SIZING_LOSS_STEPS = (0.1928, 0.7)
SIZING_RANK_FROM = 192

# The steps a shape makes are planned net of what the budget spends outside training (sizing.Overhead): the
# probe, and each validation inside the budget, a forward-only pass over the validation text that runs at
# VALIDATION_SPEEDUP times the training chars/s. On the Zen 4, natively and as an AVX2 CPU, GRU 2x256-2x768 at
# batch 16 validated at 1.9-2.9x (median 2.2) their training chars/s, so one validation of tiny-shakespeare
# (111,540 chars) cost 20-29 training steps. Counted in full, the plan had overcounted the steps made by a
# median factor of 1/0.86 in the benchmarks' runs, which validate at 1, 2 and 2.5 minutes besides every
# eval_every steps; the needs above are made steps (the grids' own), so an overcount took shapes too wide:
# GRU 2x512 as AVX2 planned 1,141 steps in 5 minutes, above its need of 1,061, and made 1,000.
VALIDATION_SPEEDUP = 2.2
# A third layer is for GPUs: on a CPU budget it learned less per step, not only fewer steps (LSTM 3x512 had
# 1.617 nats/char at step 1,000 against 1.558 for 2x512, in 5 minutes on the AVX-512 BF16 machine).
_WIDTHS = (128, 192, 256, 384, 512, 768, 1024)
SIZING_SHAPES = {
    "cpu": tuple((2, h) for h in _WIDTHS),
    "gpu": (*((2, h) for h in _WIDTHS[:-1]), (3, 512), (3, 768), (3, 1024)),
}
SIZING_BATCHES = {"cpu": (16, 32), "gpu": (32, 64, 128, 256)}  # a CPU gains no speed from wide batches
SIZING_REF_BATCH = 16  # effective steps are counted in steps of this batch size (sizing.effective_steps)


def sizing_min_steps(budget_s: float | None, width: float) -> float:
    """Effective steps a shape `width` units wide (a two-layer stack's equivalent) must make in a budget of
    `budget_s` seconds to qualify: SIZING_MIN_STEPS interpolated on log-log axes (None, --steps alone: the
    need of SIZING_REF_MINUTES), times (width / SIZING_WIDE_FROM) ** SIZING_WIDTH_EXPONENT above it."""
    minutes = SIZING_REF_MINUTES if budget_s is None else budget_s / 60.0
    pts = SIZING_MIN_STEPS
    if minutes > pts[-1][0]:
        need = pts[-1][1] * (minutes / pts[-1][0]) ** SIZING_LONG_EXPONENT
    else:
        i = next(k for k in range(1, len(pts)) if minutes <= pts[k][0] or k == len(pts) - 1)  # segment [i-1, i]
        (m0, s0), (m1, s1) = pts[i - 1], pts[i]
        need = s0 * (minutes / m0) ** (math.log(s1 / s0) / math.log(m1 / m0))
    return need * max(1.0, width / SIZING_WIDE_FROM) ** SIZING_WIDTH_EXPONENT


def sizing_predicted_loss(width: float, effective_steps: float) -> float:
    """A shape's part of its final loss (SIZING_LOSS_WIDTH, SIZING_LOSS_STEPS): only differences between shapes
    on one machine were fitted, so it ranks shapes and means nothing alone."""
    (a, alpha), (b, beta) = SIZING_LOSS_WIDTH, SIZING_LOSS_STEPS
    return a * (width / 256) ** -alpha + b * (max(effective_steps, 1.0) / 1000) ** -beta


# Automatic cell (no --model): the GRU learns more per step and wins short budgets; once its plan reads the
# training text AUTO_CELL_PASSES times (where the automatic dropout reaches its top) the LSTM is taken if its
# step is the cheaper at the GRU's chosen shape (sizing.lstm_cheaper). It was 6 passes, where dropout starts to
# rise, until the Zen 5's 15-minute runs: the GRU 2x512, planning 9.9 passes, ended at 1.4065 and 1.4097 while
# the LSTM that 6 chose planned 13.5, got dropout 0.25 and ended at 1.4279 (benchmarks/README.md). Beyond 12
# passes the only measurement is the earlier AVX-512 machine's, where the LSTM won at 15 minutes (1.3996 against
# a GRU held at dropout 0.1, 1.4112) with more steps: torch's fused LSTM step was the cheaper one. Where the GRU
# trains through its own kernel it can be the cheaper: on the Zen 4 the probe read GRU 2x512 at 14,693 chars/s
# and LSTM 2x512 at 10,136, and the LSTM that 12 passes alone chose ended 15 minutes at 1.4378 (3,516 steps),
# where GRU 2x512 had reached 1.4056-1.4131 with fewer steps than it now makes.
AUTO_CELLS = ("gru", "lstm")
AUTO_CELL_PASSES = DROPOUT_PASSES[1]
# The other way the LSTM wins: a machine where the GRU is too slow for the budget. torch runs the LSTM as one
# fused oneDNN kernel and the GRU step by step, so an LSTM step was 2-3x cheaper on every CPU measured (the
# GRU's own kernel, charrnn.grutrain, narrows that where it loads; the probe measures whichever runs), but a
# GRU step learns about as much as two of the LSTM's: GRU 2x256 with 498 steps matched LSTM 2x256 with 1,100
# at 1 minute on the Zen 5 (1.6258 against 1.6309), and the GRU won wherever it made its need. On the Intel
# Xeon, in 1 minute, no GRU shape did (GRU 2x192: 397 steps, 1.7109) and LSTM 2x128 made 1,500 and ended at
# 1.6464. So when the GRU's choice falls short of its need the LSTM is probed too, its steps counted at
# AUTO_LSTM_STEP_WORTH against the need, and taken if its choice then makes more effective steps than the GRU's.
AUTO_LSTM_STEP_WORTH = 0.5


LR_REF_HIDDEN = 512  # TrainConfig.lr was measured best at this width (benchmarks/README.md)


# A small corpus is read many times in a budget and overfits within a few passes: unless --eval-every is
# given, validate (and so keep best.pt) at least every EVAL_MAX_PASSES passes over the training text, but
# not more often than every EVAL_MIN_STEPS steps (each validation also saves and samples).
EVAL_MAX_PASSES = 2
EVAL_MIN_STEPS = 25
# A fine-tuning run's (--init) learning-rate schedule (warmup, cosine to min_lr_frac) spans the budget,
# or this many passes over the training text when they come first. Fine-tuning the bundled model for 5
# minutes on 59 KB of text (about 55 passes) ended at 1.5664 nats/char with the cosine over the budget
# and at 1.5317 with it over 16 passes. Not for a run from scratch: the same cap took a 5-minute LSTM
# from scratch on that text from 1.6393 to 1.7348 (it still had to learn, not just adapt).
FINETUNE_SCHEDULE_PASSES = 16


def auto_eval_every(windows_per_pass: int) -> int:
    """Steps between validations for a training text of `windows_per_pass` windows: the default 500, or
    every EVAL_MAX_PASSES passes when that is sooner (tiny-shakespeare at batch 16 keeps 500)."""
    return max(EVAL_MIN_STEPS, min(TrainConfig.eval_every, EVAL_MAX_PASSES * windows_per_pass))


def auto_lr(hidden: int) -> float:
    """The peak learning rate for a model `hidden` units wide: TrainConfig.lr * LR_REF_HIDDEN / hidden.

    Adam's update moves every weight by about the rate, and a wider layer sums more of those moves into
    each unit, so the stable and best rate falls as 1/width (the muP rule for hidden matrices). Measured on
    tiny-shakespeare in 5 minutes: 2x256 reached 1.533 nats/char at 0.006 against 1.613 at 0.003."""
    return round(TrainConfig.lr * LR_REF_HIDDEN / hidden, 6)


# Large vocabularies: above ADAPTIVE_MIN_VOCAB characters the output layer is an adaptive softmax (Grave et
# al. 2017): the ADAPTIVE_CUTOFFS most frequent characters in a full head, the rarer ones in clusters with
# smaller projections. On 5,172-character Chinese verse the top 500 cover 76% of the text and the top 2,000
# 97%, and a 2x256 LSTM step ran 2.2x faster than with the full softmax (benchmarks/README.md).
ADAPTIVE_MIN_VOCAB = 1000
ADAPTIVE_CUTOFFS = (500, 2000)


def auto_cutoffs(vocab_size: int) -> tuple[int, ...]:
    """The adaptive softmax boundaries for a vocabulary, () for a full softmax."""
    if vocab_size < ADAPTIVE_MIN_VOCAB:
        return ()
    return tuple(c for c in ADAPTIVE_CUTOFFS if c < vocab_size)


def auto_dropout(passes: float, cell: str = "lstm") -> float:
    """Dropout for a `cell` model that will read its training text `passes` times.

    Dropout fights overfitting, and a character model only overfits once it has seen the same text
    several times: on tiny-shakespeare no dropout beat 0.1 by 0.015-0.04 nats/char up to 8 passes (at
    weight decay 0.3), yet at 16 passes 0.1 stalled while 0.25 kept improving. So the amount follows the
    passes, whether they come from a small corpus or a long budget. The GRU wants less of it at many
    passes (GRU_DROPOUT_TOP)."""
    lo, hi = DROPOUT_PASSES
    top = GRU_DROPOUT_TOP if cell == "gru" else DROPOUT_TOP
    return round(top * min(1.0, max(0.0, (passes - lo) / (hi - lo))), 3)


@dataclass(frozen=True)
class SampleConfig:
    """How to generate text from a trained model."""

    temp: float = 0.8  # Below 1 trades a little variety for far fewer misspellings; 0 is greedy.
    length: int = 1000  # Characters generated, not counting the prime: a screenful or two.
    prime: str = "\n"  # A newline starts the model at the beginning of a line, as after a speech.
    top_k: int | None = None  # Off by default: temperature alone already reads well for characters.
    top_p: float | None = None  # Off by default, as top_k.
    seed: int | None = None  # None draws fresh randomness; a seed makes the text repeat exactly.
    num: int = 1  # Independent samples, generated together as one batch.

    def __post_init__(self) -> None:
        _check(math.isfinite(self.temp) and self.temp >= 0, f"--temp must be >= 0, got {self.temp}")
        _check(isinstance(self.length, int) and self.length >= 0, f"--length must be >= 0, got {self.length}")
        _check(self.top_k is None or self.top_k >= 1, f"--top-k must be >= 1, got {self.top_k}")
        _check(self.top_p is None or 0.0 < self.top_p <= 1.0, f"--top-p must be in (0, 1], got {self.top_p}")
        _positive_int(self.num, "--num")


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-data form for checkpoints (weights-only loadable)."""
    return asdict(cfg)


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a config, ignoring keys a newer version may have added and defaulting missing ones."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})
