"""The automatic model shape: a speed probe of candidate shapes on the real corpus, on the device and in
the precision the run will use, and the rule that turns each candidate's speed into the steps it would
make in the budget and picks the shape expected to end lowest.

The rule itself (which shapes, how many steps a shape needs) is data in config.py; this module measures
and applies it. Nothing here touches the run's random generators' seeds: the trainer seeds after sizing.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from charrnn.config import (
    AUTO_CELL_PASSES,
    AUTO_CELLS,
    AUTO_LSTM_STEP_WORTH,
    SIZING_BATCHES,
    SIZING_RANK_FROM,
    SIZING_REF_BATCH,
    SIZING_SHAPES,
    VALIDATION_SPEEDUP,
    ModelConfig,
    TrainConfig,
    sizing_min_steps,
    sizing_predicted_loss,
)
from charrnn.devices import autocast
from charrnn.model import CharRNN, detach_state

log = logging.getLogger(__name__)  # one debug line per shape measured (benchmarks/quality.py shows them)

PROBE_BUDGET_FRAC = 0.03  # the probe may use 3% of a time budget ...
PROBE_MAX_SECONDS = 10.0  # ... and never more than 10 s
# Timed steps per candidate, after its untimed warm-up (PROBE_SETTLE); their median is the rate. Three, not two: the
# median of two is their mean, and one step slowed by a neighbour on a shared 2-core VM (10-30% on the
# Zen 5 machine) moved a shape across the line between qualifying and not.
PROBE_TIMED_STEPS = 3
# The dropout a shape is timed at when the run's own is not settled yet (it follows the passes the probe plans):
# the needs (config.SIZING_MIN_STEPS) were fitted on runs at 0.1, so a run that plans few passes and drops none
# makes a few % more steps than its plan (GRU 2x192 in 1 minute: 575-648 against 578-587 at 0.1).
PROBE_DROPOUT = 0.1
# The first training steps of a fresh process can keep speeding up for several steps (GRU 2x256 on the
# Zen 5 machine: 186, 133, 104 ms after the warm-up step), and two 1-minute probes read GRU 2x128 at 16,928
# and 18,988 chars/s where its 1-minute training ran at 23,822, so 2x192 fell under the 1-minute need and
# GRU 2x128 was chosen, 0.036 nats/char behind 2x256 (benchmarks/README.md). So the first shape a Probe
# measures warms up until a step is no more than PROBE_SETTLE faster than the one before (at most
# PROBE_MAX_WARM_UP steps, on the cheapest shape); later shapes warm up for one step.
PROBE_SETTLE = 0.15
PROBE_MAX_WARM_UP = 6
# A shape read under its need, but by less than this share of the rate it needs, is timed once more where the
# probe has the time, and the faster reading is kept: a neighbour on a shared VM slows a step, nothing makes it
# run faster than the machine can. On the 2-core AVX2 VM the probe's reading of GRU 2x192 was 0.81-1.19 of the
# same model's next 30 steps in six fresh processes; in twelve 1-minute plans one read it at 17,496 chars/s,
# under its need, and at 21,381 again (21,294 in the steps after), and took it where it would have taken 2x128;
# one read 14,948 and 17,048, and its next steps ran at 17,180, under the need: 2x128 was right. A slow spell
# longer than the probe is not caught: one run read 16,547 and 15,615, took 2x128 and trained it at 32,184
# (benchmarks/README.md, "A second reading").
PROBE_RETRY_MARGIN = 0.3


def probe_seconds(budget_s: float) -> float:
    """The whole probe's limit for a budget of `budget_s` seconds, every cell's measurements together."""
    return min(PROBE_MAX_SECONDS, PROBE_BUDGET_FRAC * budget_s)


@dataclass(frozen=True)
class Shape:
    """What sizing decides: the model's depth and width and the number of streams per step."""

    layers: int
    hidden: int
    batch_size: int

    def __str__(self) -> str:
        return f"{self.layers}x{self.hidden}, batch {self.batch_size}"


@dataclass(frozen=True)
class Choice:
    shape: Shape
    steps: float  # optimizer steps the run is planned to make
    rate: float | None  # training chars/s the probe measured for this shape; None under --steps alone


@dataclass(frozen=True)
class Overhead:
    """What of a time budget does not train, so that a shape's planned steps are the steps it will make: the
    probe's own seconds (they count against the budget) and the validations the run's schedule makes inside
    the budget, each a forward pass over `val_chars` at VALIDATION_SPEEDUP times the training chars/s, due every
    `eval_every(shape)` steps and at each of `at_seconds` (a benchmark's milestones). The run's last
    validation comes after the budget and costs no steps. The default is none: every second trains, as in
    the grids' step counts, which are already net of their own runs' validations."""

    spent: float = 0.0
    val_chars: int = 0
    eval_every: Callable[[Shape], int] = lambda shape: 1
    at_seconds: tuple[float, ...] = ()

    def steps(self, rate: float, shape: Shape, seq_len: int, budget_s: float) -> float:
        """Steps a run of `shape` at `rate` chars/s makes in `budget_s` seconds."""
        chars_per_step = shape.batch_size * seq_len
        per_validation = self.val_chars / (VALIDATION_SPEEDUP * chars_per_step)  # in training steps, at any rate
        milestones = sum(t < budget_s for t in self.at_seconds)
        free = (budget_s - self.spent) * rate / chars_per_step - milestones * per_validation
        if free <= 0:
            return 0.0
        every = self.eval_every(shape)
        due = math.floor((free + per_validation) / (every + per_validation))  # validations begun in the budget
        return max(due * every, free - due * per_validation)  # the last may run past the budget's end


NO_OVERHEAD = Overhead()


def candidates(device_type: str, fixed: Mapping[str, int]) -> list[Shape]:
    """Every shape the rule may choose on this kind of device. An explicit --layers, --hidden or --batch-size
    wins for its own dimension, even outside the grid, and the others still vary: --layers 3 on a CPU (whose
    grid has two layers) tries the CPU's widths at three layers."""
    kind = "cpu" if device_type == "cpu" else "gpu"
    pairs = SIZING_SHAPES[kind]
    if "layers" in fixed:
        pairs = [(fixed["layers"], hidden) for _, hidden in pairs]
    if "hidden" in fixed:
        pairs = [(layers, fixed["hidden"]) for layers, _ in pairs]
    batches = (fixed["batch_size"],) if "batch_size" in fixed else SIZING_BATCHES[kind]
    shapes = {Shape(layers, hidden, batch) for batch in batches for layers, hidden in pairs}
    return sorted(shapes, key=lambda s: (s.batch_size, size(s)))


def size(shape: Shape) -> int:
    """Recurrent weights per layer stack: the order in which candidates cost more and may learn more."""
    return shape.layers * shape.hidden * shape.hidden


def effective_steps(steps: float, shape: Shape, worth: float = 1.0) -> float:
    """Steps scaled by sqrt(batch / SIZING_REF_BATCH): below the critical batch size a step of twice the
    streams is worth about 1.4 steps, not 2 (the square-root rule for Adam), so a bigger batch pays only
    when the hardware runs it nearly as fast (a GPU), not when its steps take twice as long (a CPU).
    `worth`: what one step of this cell is worth against one of the first cell (AUTO_LSTM_STEP_WORTH)."""
    return steps * math.sqrt(shape.batch_size / SIZING_REF_BATCH) * worth


def predicted_loss(steps: float, shape: Shape, worth: float = 1.0) -> float:
    """What ranks the shapes that make their need (config.sizing_predicted_loss)."""
    return sizing_predicted_loss(width(shape), effective_steps(steps, shape, worth))


def width(shape: Shape) -> float:
    """The width of the two-layer stack with as many recurrent weights: a deeper shape needs as many steps as
    the wider one it matches (sizing_min_steps)."""
    return math.sqrt(size(shape) / 2)


def qualifies(steps: float, shape: Shape, budget_s: float | None, worth: float = 1.0) -> bool:
    """Whether `shape` makes the effective steps a budget of `budget_s` seconds asks of its width
    (sizing_min_steps)."""
    return effective_steps(steps, shape, worth) >= sizing_min_steps(budget_s, width(shape))


def planned_steps(
    rate: float,
    shape: Shape,
    seq_len: int,
    budget_s: float | None,
    max_steps: int | None,
    overhead: Overhead = NO_OVERHEAD,
) -> float:
    """Steps in the budget at `rate` chars/s, net of `overhead`, capped by --steps when both are given."""
    steps = math.inf if budget_s is None else overhead.steps(rate, shape, seq_len, budget_s)
    return min(steps, max_steps) if max_steps is not None else steps


def qualifies_at(
    rate: float,
    shape: Shape,
    seq_len: int,
    budget_s: float,
    max_steps: int | None = None,
    worth: float = 1.0,
    overhead: Overhead = NO_OVERHEAD,
) -> bool:
    """Whether `shape`, measured at `rate` chars/s, makes its need in the budget (qualifies)."""
    return qualifies(planned_steps(rate, shape, seq_len, budget_s, max_steps, overhead), shape, budget_s, worth)


def lstm_wins(gru: Choice, lstm: Choice) -> bool:
    """Whether the LSTM's choice, its steps counted at AUTO_LSTM_STEP_WORTH, makes more effective steps than
    the GRU's (asked only where the GRU's choice falls short of its need: plan())."""
    return effective_steps(lstm.steps, lstm.shape, AUTO_LSTM_STEP_WORTH) > effective_steps(gru.steps, gru.shape)


def lstm_cheaper(shape: Shape, gru: Mapping[Shape, float], lstm: Mapping[Shape, float]) -> bool:
    """Whether an LSTM step is the cheaper one at the GRU's chosen `shape` (or, where the LSTM's probe
    stopped before it, at the largest shape both cells were measured at); with no measurements (--steps
    alone), yes: torch's fused LSTM step was the cheaper on every CPU measured before the GRU's kernel."""
    common = [s for s in gru if s in lstm]
    if not common:
        return True
    at = shape if shape in common else max(common, key=size)
    return lstm[at] > gru[at]


def choose(
    rates: Mapping[Shape, float],
    seq_len: int,
    budget_s: float | None,
    max_steps: int | None,
    worth: float = 1.0,
    overhead: Overhead = NO_OVERHEAD,
) -> Choice:
    """Of the shapes at least SIZING_RANK_FROM wide that make enough (effective) steps in the budget, the one
    with the lowest predicted loss (config.sizing_predicted_loss; where two tie, the larger, then the one with
    more effective steps); where only narrower ones make enough, the largest of those; where none does, the
    one with the most effective steps. Pure: the probe's measurements (or, under --steps alone, any rates) and
    what the budget spends outside training in, the choice out."""
    if not rates:
        raise ValueError("no candidate shapes to choose from")
    plan = {s: planned_steps(r, s, seq_len, budget_s, max_steps, overhead) for s, r in rates.items()}
    ok = [s for s in plan if qualifies(plan[s], s, budget_s, worth)]
    ranked = [s for s in ok if width(s) >= SIZING_RANK_FROM]
    if ranked:
        best = min(ranked, key=lambda s: (predicted_loss(plan[s], s, worth), -size(s), -effective_steps(plan[s], s)))
    elif ok:
        best = max(ok, key=lambda s: (size(s), effective_steps(plan[s], s)))
    else:
        best = max(plan, key=lambda s: (effective_steps(plan[s], s), -size(s)))
    return Choice(best, plan[best], rates[best])


def choose_for_steps(cands: Iterable[Shape], steps: int) -> Choice:
    """--steps without a clock: every candidate makes the same steps, so the shape follows the steps alone;
    the batch stays the reference one (with no clock, a bigger batch would always look free)."""
    cands = list(cands)
    ref = [s for s in cands if s.batch_size == SIZING_REF_BATCH] or cands
    return replace(choose({s: 1.0 for s in ref}, 1, None, steps), rate=None)


@dataclass(frozen=True)
class Plan:
    """What sizing decided for a new run: the cell and shape (None where flags fixed everything and no
    speed was needed), the planned steps, the probe's seconds (they count against the budget), and the
    line that tells the user."""

    choice: Choice | None
    cell: str | None
    seconds: float = 0.0
    note: str = ""


def plan(
    model_flags: Mapping[str, Any],
    fixed: Mapping[str, int],
    cfg: TrainConfig,
    train_ids: np.ndarray,
    device: torch.device,
    dtype: torch.dtype,
    world: int = 1,
    share: Callable[[Any], Any] = lambda rates: rates,
    clock: Callable[[], float] = time.perf_counter,
    overhead: Overhead = NO_OVERHEAD,
) -> Plan:
    """Choose what the user left open: the cell (no --model), the shape (some of --layers, --hidden,
    --batch-size missing), and, under a time budget, the speed an automatic dropout needs.

    The cells are tried in AUTO_CELLS order: the GRU learns more per step, so it wins short budgets, and
    the LSTM is taken once the GRU's plan would read the training text AUTO_CELL_PASSES times or more and
    an LSTM step is the cheaper at the GRU's shape (lstm_cheaper), or
    where no GRU shape makes the steps the budget needs and the LSTM, about twice as fast a step on some
    CPUs, makes more of them even at AUTO_LSTM_STEP_WORTH apiece (only if the GRU left probe time for it:
    no measurement, no switch).
    `share` makes every rank of a distributed run use rank 0's measurements and decisions; `overhead`: the
    run's validations (its `spent` is the probe's, filled in here), so the planned steps are those made."""
    budget = cfg.budget_seconds
    cells = (model_flags["model"],) if model_flags.get("model") else AUTO_CELLS
    auto_shape, auto_cell = len(fixed) < 3, len(cells) > 1
    if not (auto_shape or auto_cell) and (budget is None or model_flags.get("dropout") is not None):
        return Plan(None, None)
    cands = candidates(device.type, fixed)
    _import_optimizer_machinery()
    t0 = clock()

    def left() -> float:
        return probe_seconds(budget) - (clock() - t0)

    measured: dict[str, Mapping[Shape, float]] = {}  # cell -> the probe's rates (none under --steps alone)

    def spent(shared: bool = False) -> Overhead:
        """`overhead` with the probe's seconds so far (rank 0's where a decision must agree on every rank)."""
        seconds = clock() - t0
        return replace(overhead, spent=share(seconds) if shared else seconds)

    def measure(i: int, worth: float) -> Choice:
        """The choice for cells[i], from the probe's measurements of it (no clock under --steps alone)."""
        if budget is None:
            return choose_for_steps(cands, cfg.steps)
        first = {"model": cells[i], "layers": cands[0].layers, "hidden": cands[0].hidden}
        probe_ = Probe(ModelConfig(**{**model_flags, **first}), train_ids, cfg.seq_len, device, dtype, world)
        limit = _cell_limit(left(), len(cells) - 1 - i, budget, len(train_ids), cfg.seq_len, cands, spent())
        log.debug("probe %s: %.1f s of the probe left", cells[i], left())
        rates, _ = probe(
            cands, probe_.rate, cfg.seq_len, budget, cfg.steps, limit=limit, clock=clock, worth=worth, overhead=spent()
        )
        measured[cells[i]] = share(rates)
        return choose(measured[cells[i]], cfg.seq_len, budget, cfg.steps, worth, spent(shared=True))

    def passes(c: Choice) -> float:
        return c.steps * c.shape.batch_size * cfg.seq_len / max(1, len(train_ids))

    cell, choice = cells[0], measure(0, 1.0)
    starved = budget is not None and not qualifies(choice.steps, choice.shape, budget)
    if auto_cell and passes(choice) >= AUTO_CELL_PASSES:
        other = measure(1, 1.0)
        if lstm_cheaper(choice.shape, measured.get(cells[0], {}), measured.get(cells[1], {})):
            cell, choice = cells[1], other
    elif auto_cell and starved and share(left() > 0):  # rank 0's clock decides, so every rank probes alike
        other = measure(1, AUTO_LSTM_STEP_WORTH)
        if lstm_wins(choice, other):
            cell, choice = cells[1], other
    seconds = clock() - t0
    if budget is not None:  # the whole probe's seconds, where a later cell's probe came after this choice
        steps = planned_steps(choice.rate, choice.shape, cfg.seq_len, budget, cfg.steps, spent(shared=True))
        choice = replace(choice, steps=steps)
    if not (auto_shape or auto_cell):
        return Plan(choice, cell, seconds)
    flags = ", ".join(
        f for f, auto in (("--model", auto_cell), ("--layers, --hidden, --batch-size", auto_shape)) if auto
    )
    if budget is None:
        note = f"{cell} {choice.shape}: chosen for {cfg.steps:,} steps ({flags} set it)"
    else:
        note = (
            f"{cell} {choice.shape}: about {choice.steps:,.0f} steps ({passes(choice):.1f} passes) in "
            f"{budget / 60:g} min at {choice.rate:,.0f} chars/s, measured in a {seconds:.1f} s probe ({flags} set it)"
        )
    return Plan(choice, cell, seconds, note)


def _cell_limit(
    left: float,
    later: int,
    budget_s: float,
    chars: int,
    seq_len: int,
    cands: list[Shape],
    overhead: Overhead = NO_OVERHEAD,
) -> Callable[[Mapping[Shape, float]], float]:
    """The probe seconds one cell may use, from the `left` of the probe's limit, once its first (cheapest)
    shape is measured: all of them when no `later` cell can be needed, else an equal share.

    A later cell is probed if this one's choice reads the training text AUTO_CELL_PASSES times, or if it
    cannot make its need (plan()). No choice reads faster than the cheapest shape at the widest batch, and
    a step of k times the streams takes at least as long as one, so at most k times the first rate. In a
    1-minute budget on tiny-shakespeare that bound is far below AUTO_CELL_PASSES, and where the cheapest
    shape makes its need the GRU gets the whole 1.8 s: with half, it measured 2x128 and 2x192 and stopped
    before 2x256, the best shape of that budget on the AVX-512 machine (benchmarks/README.md). Where even
    the cheapest shape falls short (the GRU in 1 minute on the Intel machine), the later cell is likely to
    be needed and gets its share."""
    widen = max(s.batch_size for s in cands) / min(s.batch_size for s in cands)

    def limit(rates: Mapping[Shape, float]) -> float:
        shape, first = next(iter(rates.items()))
        reads_often = budget_s * first * widen / max(1, chars) >= AUTO_CELL_PASSES
        starves = not qualifies_at(first, shape, seq_len, budget_s, overhead=overhead)
        return left / (1 + later) if later > 0 and (reads_often or starves) else left

    return limit


def _import_optimizer_machinery() -> None:
    """torch's optimizers import torch._dynamo on their first use (torch._disable_dynamo), about 1 s on a
    2-core CPU. Every training process pays that once, with or without a probe (the trainer's clock starts
    after its optimizer exists), so it is paid here, before the probe's clock starts. Charged to the probe,
    it took most of a 1-minute budget's 1.8 s on the first, smallest shape, and the probe stopped there."""
    with contextlib.suppress(ImportError):
        import torch._dynamo  # noqa: F401


class Probe:
    """Times a few real training steps (forward, backward, clip, AdamW) of a candidate shape on windows of
    the real corpus, after untimed warm-up steps, so kernel selection, allocation and, for the first shape,
    the process's ramp-up (PROBE_SETTLE) do not count.

    A wider batch is timed step for step against its twin at the first batch measured (same layers and width),
    and read as that twin's rate times the ratio of the two: a shared VM's speed drifts by 20-30% over seconds
    (AVX2 machine, benchmarks/README.md), and timed after the twin, batch 32 read 1.4-1.7x batch 16's chars/s
    where whole runs made 1.08-1.16x, so a batch worth fewer effective steps was chosen."""

    def __init__(
        self,
        model_cfg: ModelConfig,
        train_ids: np.ndarray,
        seq_len: int,
        device: torch.device,
        dtype: torch.dtype,
        world: int = 1,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.model_cfg, self.train_ids, self.seq_len = model_cfg, train_ids, seq_len
        self.device, self.dtype, self.world, self.clock = device, dtype, world, clock
        self.settled = False  # whether this Probe's first shape has warmed up (see PROBE_SETTLE)
        self.readings: dict[Shape, float] = {}  # the fastest rate() returned for each shape, as probe() keeps
        self._benches: dict[Shape, Callable[[], float]] = {}  # shape -> one timed step of its warm model

    def rate(self, shape: Shape) -> float:
        """Training chars/s of the whole (global) batch, as this process sees it."""
        twin = self.twin(shape)
        step = self._bench(shape)
        warm = [step()]  # kernel selection and allocation: never timed
        while not self.settled and len(warm) < PROBE_MAX_WARM_UP and _speeding_up(warm):
            warm.append(step())
        self.settled = True
        if twin is None:
            mine = [step() for _ in range(PROBE_TIMED_STEPS)]
            rate = shape.batch_size * self.seq_len / float(np.median(mine))
        else:
            pairs = [(step(), self._benches[twin]()) for _ in range(PROBE_TIMED_STEPS)]
            mine, theirs = (float(np.median(t)) for t in zip(*pairs))
            rate = self.readings[twin] * (shape.batch_size / mine) / (twin.batch_size / theirs)
        self.readings[shape] = max(rate, self.readings.get(shape, 0.0))
        return rate

    def twin(self, shape: Shape) -> Shape | None:
        """The shape at the first batch this Probe measured that `shape` is timed against, if measured."""
        return twin_of(shape, self._benches)

    def _bench(self, shape: Shape) -> Callable[[], float]:
        """A fresh model of `shape` with its optimizer and streams; returns its step, which times itself. Kept
        for the shapes of the first batch, which a wider batch is timed against."""
        from charrnn.data import Streams
        from charrnn.state import forward_loss, make_optimizer

        local = max(1, shape.batch_size // self.world)
        dropout = PROBE_DROPOUT if self.model_cfg.dropout is None else self.model_cfg.dropout
        cfg = replace(self.model_cfg, layers=shape.layers, hidden=shape.hidden, dropout=dropout)
        model = CharRNN(cfg).to(self.device)
        if model.adaptive:  # which clusters the windows reach depends on the frequency order
            model.set_frequency_order(torch.from_numpy(np.bincount(self.train_ids, minlength=cfg.vocab_size)))
        opt = make_optimizer(model, TrainConfig())
        streams = Streams(self.train_ids, local, self.seq_len)
        state = model.init_state(local, self.device)
        k = 0

        def step() -> float:
            nonlocal state, k
            x, y = (torch.from_numpy(a).to(self.device) for a in streams.window(k))  # (b, T) each
            k += 1
            self._sync()
            t0 = self.clock()
            with autocast(self.device, self.dtype):
                loss, state = forward_loss(model, model, x, y, state)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            state = detach_state(state)
            self._sync()
            return self.clock() - t0

        if not self._benches or shape.batch_size == _first_batch(self._benches):
            self._benches.pop(shape, None)  # a shape measured again is timed on a fresh model, last in order
            self._benches[shape] = step
        return step

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _speeding_up(times: list[float]) -> bool:
    """Whether warm-up step times are still falling: fewer than two, or the last more than PROBE_SETTLE
    faster than the one before it."""
    return len(times) < 2 or times[-1] < (1 - PROBE_SETTLE) * times[-2]


def probe(
    cands: list[Shape],
    measure: Callable[[Shape], float],
    seq_len: int,
    budget_s: float,
    max_steps: int | None,
    limit: float | Callable[[Mapping[Shape, float]], float] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    worth: float = 1.0,
    overhead: Overhead = NO_OVERHEAD,
) -> tuple[dict[Shape, float], float]:
    """Measure candidates from the cheapest up, batch by batch, until one can no longer make the steps it
    needs (a larger one, slower still, cannot either) or the probe's own time is spent. A wider batch
    starts at the shape the rule takes from what was measured so far: a smaller one wins only on its steps,
    and it makes more of them at the narrower batch (unless the wider batch runs more chars/s, as on a GPU,
    where the larger shapes are the ones that gain). Measuring from the cheapest, a 1-minute probe spent its
    time on 2x128 and 2x192 at batch 32 and never reached 2x256. A shape read just under its need is read once
    more, time permitting, and keeps the faster reading (PROBE_RETRY_MARGIN).
    Returns the rates measured and the seconds the probe took (they count against the budget). `limit`:
    the probe's seconds, or a function of the rates measured so far that gives them (_cell_limit); `worth`:
    what a step of this cell counts for against the need (effective_steps); `overhead`: what the budget spends
    outside training (Overhead)."""
    if limit is None:
        limit = probe_seconds(budget_s)
    limit_now = limit if callable(limit) else lambda rates, seconds=limit: seconds

    def judged() -> Overhead:
        """`overhead` with the probe's whole limit spent: the plan made after the probe is charged the seconds
        it took, so a shape judged here on the seconds spent so far could pass here and fail there, unread
        twice (a 1-minute probe read GRU 2x192 at 17,093 chars/s: over its need with nothing spent, under it
        with the probe's 1.2 s)."""
        return replace(overhead, spent=overhead.spent + limit_now(rates))

    def makes_need(shape: Shape, rate: float) -> bool:
        return qualifies_at(rate, shape, seq_len, budget_s, max_steps, worth, judged())

    t0 = clock()
    rates: dict[Shape, float] = {}
    for batch in sorted({s.batch_size for s in cands}):
        taken = choose(rates, seq_len, budget_s, max_steps, worth, judged()) if rates else None
        floor = size(taken.shape) if taken and qualifies(taken.steps, taken.shape, budget_s, worth) else 0
        for shape in [s for s in cands if s.batch_size == batch and size(s) >= floor]:
            if rates and clock() - t0 + _probe_cost(shape, rates, seq_len) > limit_now(rates):
                break
            t_shape = clock()
            rates[shape] = measure(shape)
            log.debug("probe %s: %.0f chars/s in %.2f s", shape, rates[shape], clock() - t_shape)
            if (
                not makes_need(shape, rates[shape])
                and makes_need(shape, rates[shape] * (1 + PROBE_RETRY_MARGIN))
                and clock() - t0 + _probe_cost(shape, rates, seq_len) <= limit_now(rates)
            ):
                t_shape = clock()
                again = measure(shape)
                log.debug("probe %s again: %.0f chars/s in %.2f s", shape, again, clock() - t_shape)
                rates[shape] = max(rates[shape], again)
            if not makes_need(shape, rates[shape]):
                break
    return rates, clock() - t0


def _first_batch(measured: Collection[Shape]) -> int:
    return next(iter(measured)).batch_size


def twin_of(shape: Shape, measured: Collection[Shape]) -> Shape | None:
    """The shape of the same layers and width at the first batch measured (`measured` in the order measured),
    which a wider batch is timed against (Probe); None for a shape of that batch, or one whose twin was not
    measured."""
    if not measured:
        return None
    twin = replace(shape, batch_size=_first_batch(measured))
    return twin if twin != shape and twin in measured else None


def _probe_cost(shape: Shape, rates: Mapping[Shape, float], seq_len: int) -> float:
    """Seconds a probe of `shape` should take, from the speed of the last shape measured. Predicted from the
    timed steps, not from how long the last probe took: the first probe of a process also pays one-time
    start-up (kernel selection, allocation, PROBE_SETTLE's warm-up)."""
    last, rate = list(rates.items())[-1]
    rate_here = rate * _step_work(last) / _step_work(shape)  # chars/s
    twin = twin_of(shape, rates)
    paired = PROBE_TIMED_STEPS * twin.batch_size * seq_len / rates[twin] if twin else 0.0  # its steps (Probe)
    return (1 + PROBE_TIMED_STEPS) * shape.batch_size * seq_len / rate_here + paired


def _step_work(shape: Shape) -> float:
    """How time per character grows with the shape, for predicting probe costs: as layers * hidden ** 1.5,
    not as the recurrent weights (hidden ** 2). In a 5-minute probe on the Zen 5 machine (GRU, batch 16)
    widening 256 -> 384 -> 512 -> 768 cost 1.30x, 1.41x and 1.86x the time per character, where
    hidden ** 2 predicts 2.25x, 1.78x and 2.25x and hidden ** 1.5 1.84x, 1.54x and 1.84x. With hidden ** 2
    a 1-minute probe that had used 1.1 s predicted 0.76 s for GRU 2x256 and stopped (its limit: 1.8 s);
    2x256 took 0.44-0.56 s in the probes that reached it."""
    return shape.layers * shape.hidden**1.5
