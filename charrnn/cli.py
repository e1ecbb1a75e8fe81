"""The command line: typer commands that turn flags into configs, make one library call, and render.

Progress, tables and diagnostics go to stderr; sampled text (and `eval --json`) alone goes to stdout.
This is the only place that catches CharRNNError: one red line, exit 1.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperCommand, TyperGroup

from charrnn.config import (
    DEFAULT_MINUTES,
    DROPOUT_PASSES,
    DROPOUT_TOP,
    FINETUNE_WEIGHT_DECAY,
    GRU_DROPOUT_TOP,
    LR_REF_HIDDEN,
    ModelConfig,
    SampleConfig,
    TrainConfig,
)
from charrnn.errors import CharRNNError


def _usage_error_types() -> tuple[type[Exception], ...]:
    """Typer >= 0.2x vendors click and raises its own exception types; older typer raises click's."""
    found: list[type[Exception]] = []
    if hasattr(typer, "TyperException"):
        found.append(typer.TyperException)
    try:
        import click

        found.append(click.ClickException)
    except ImportError:
        pass
    return tuple(found)


class _FlagsTakeNoValue:
    """typer >= 0.2x prints a flag's Python type beside it (`--resume <bool>`, even `--help <bool>`), which
    reads as if the flag wanted a value; an empty metavar leaves that column blank for flags."""

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option

    def format_help(self, ctx: Any, formatter: Any) -> None:
        for param in self.params:
            if getattr(param, "is_flag", False):
                param.metavar = ""
        super().format_help(ctx, formatter)


class _Command(_FlagsTakeNoValue, TyperCommand):
    pass


class _Group(_FlagsTakeNoValue, TyperGroup):
    pass


app = typer.Typer(
    cls=_Group,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Character-level LSTM/GRU/RNN language models: train on any UTF-8 text, sample, evaluate.",
)
err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

ThreadsOpt = Annotated[
    Optional[int], typer.Option(help="CPU threads for torch and the sampler's BLAS. (default: all cores)")
]
CheckpointOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--checkpoint",
        "-c",
        help="A .pt or .safetensors file, or a run folder (its best.pt). Default: the newest "
        "run under ./checkpoints, else the bundled English model.",
    ),
]


def _given(**flags: Any) -> dict[str, Any]:
    """Only the flags the user typed: the rest comes from the config defaults or the resumed checkpoint."""
    return {k: v for k, v in flags.items() if v is not None}


@app.command(cls=_Command)
def train(
    corpus: Annotated[
        Optional[list[Path]],
        typer.Argument(
            help="UTF-8 text files, folders of them (read recursively, hidden files skipped) or quoted globs "
            "such as 'notes/*.md'; each file is split for validation at its own end. "
            "Default: corpora/shakespeare.txt."
        ),
    ] = None,
    model: Annotated[
        Optional[str],
        typer.Option(help="lstm, gru or rnn (tanh). (default: gru for short budgets, else lstm)"),
    ] = None,
    layers: Annotated[
        Optional[int], typer.Option(help="Stacked recurrent layers. (default: chosen for the machine and budget)")
    ] = None,
    hidden: Annotated[
        Optional[int], typer.Option(help="Hidden units per layer. (default: chosen for the machine and budget)")
    ] = None,
    embed: Annotated[
        Optional[int], typer.Option(help=f"Character embedding size. (default: {ModelConfig.embed})")
    ] = None,
    dropout: Annotated[
        Optional[float],
        typer.Option(
            help="Dropout on embeddings, between layers and before the output. "
            f"(default: none while the budget reads the training text up to {DROPOUT_PASSES[0]:g} times, "
            f"rising to {DROPOUT_TOP:g} at {DROPOUT_PASSES[1]:g}+ times; {GRU_DROPOUT_TOP:g} for a GRU)"
        ),
    ] = None,
    locked_dropout: Annotated[
        Optional[bool],
        typer.Option(
            "--locked-dropout/--no-locked-dropout",
            help="One dropout mask per window instead of per character. (default: off)",
        ),
    ] = None,
    weight_drop: Annotated[
        Optional[float],
        typer.Option(help=f"DropConnect on the recurrent weights (AWD-LSTM). (default: {ModelConfig.weight_drop:g})"),
    ] = None,
    tie_weights: Annotated[
        Optional[bool],
        typer.Option(
            "--tie-weights/--no-tie-weights",
            help="Share the embedding and output weights; needs --embed equal to --hidden. (default: off)",
        ),
    ] = None,
    seq_len: Annotated[
        Optional[int], typer.Option(help=f"Truncated-BPTT window length. (default: {TrainConfig.seq_len})")
    ] = None,
    batch_size: Annotated[
        Optional[int],
        typer.Option(
            help="Contiguous streams per step, global across processes. (default: chosen for the machine and budget)"
        ),
    ] = None,
    lr: Annotated[
        Optional[float],
        typer.Option(
            help="Peak learning rate (warmup, then cosine decay to the end of the budget). "
            f"(default: {TrainConfig.lr} x {LR_REF_HIDDEN} / hidden)"
        ),
    ] = None,
    weight_decay: Annotated[
        Optional[float],
        typer.Option(
            help=f"AdamW weight decay on matrices. (default: {TrainConfig.weight_decay:g}; "
            f"{FINETUNE_WEIGHT_DECAY:g} with --init)"
        ),
    ] = None,
    clip: Annotated[
        Optional[float], typer.Option(help=f"Global gradient-norm clip. (default: {TrainConfig.clip})")
    ] = None,
    steps: Annotated[Optional[int], typer.Option(help="Stop after this many steps (total, when resuming).")] = None,
    minutes: Annotated[
        Optional[float],
        typer.Option(
            help="Wall-clock budget; stops at whichever of --steps/--minutes comes first. "
            f"(default: {DEFAULT_MINUTES:g} if --steps is not given)"
        ),
    ] = None,
    val_frac: Annotated[
        Optional[float],
        typer.Option(
            help=f"Fraction at the end of each file held out for validation. (default: {TrainConfig.val_frac})"
        ),
    ] = None,
    val_chars: Annotated[
        Optional[int],
        typer.Option(help="Validate on only the first N characters of the split, for huge corpora. (default: all)"),
    ] = None,
    separator: Annotated[
        Optional[str],
        typer.Option(
            help="Text put between files of a corpus of several ('\\n' is a newline). (default: a blank line)"
        ),
    ] = None,
    eval_every: Annotated[
        Optional[int], typer.Option(help=f"Validate and save every N steps. (default: {TrainConfig.eval_every})")
    ] = None,
    sample_every: Annotated[
        Optional[int],
        typer.Option(
            help="Print and keep (samples.txt) a short sample at every Nth validation; 0: never. (default: 1)"
        ),
    ] = None,
    sample_length: Annotated[
        Optional[int], typer.Option(help=f"Characters in each of those samples. (default: {TrainConfig.sample_length})")
    ] = None,
    out: Annotated[
        Optional[Path], typer.Option(help="Run folder. (default: checkpoints/<corpus name>, numbered if taken)")
    ] = None,
    init: Annotated[
        Optional[str],
        typer.Option(
            help="Start from this trained model (a .pt file, a run folder, or 'bundled'): fine-tune it on the "
            "corpus; its shape is kept and the new text's characters are added to its vocabulary."
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Continue the run in --out (or checkpoints/<corpus name>) from its last.pt."),
    ] = False,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda or mps. (default: auto)")] = None,
    precision: Annotated[
        Optional[str],
        typer.Option(help="auto, fp32, bf16 or fp16 (GPU). auto: bf16 where the hardware has it. (default: auto)"),
    ] = None,
    seed: Annotated[Optional[int], typer.Option(help=f"Random seed. (default: {TrainConfig.seed})")] = None,
    threads: ThreadsOpt = None,
) -> int:
    """Train a character-level model on text files, saving best.pt and last.pt in the run folder."""
    from charrnn.api import train as run_training
    from charrnn.devices import set_threads
    from charrnn.steer import unescape

    set_threads(threads)
    flags = dict(
        model=model,
        layers=layers,
        hidden=hidden,
        embed=embed,
        dropout=dropout,
        locked_dropout=locked_dropout,
        weight_drop=weight_drop,
        tie_weights=tie_weights,
        seq_len=seq_len,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        clip=clip,
        steps=steps,
        minutes=minutes,
        val_frac=val_frac,
        val_chars=val_chars,
        separator=None if separator is None else unescape(separator),
        sample_every=sample_every,
        sample_length=sample_length,
        eval_every=eval_every,
        device=device,
        precision=precision,
        seed=seed,
    )
    with _QuietAfterStop() as quiet:
        with TrainDisplay(err) as display:
            result = run_training(corpus, out=out, resume=resume, init=init, report=display.update, **flags)
            quiet.arm(result.signal)
        _report_run(display, result)
    # A clean, saved stop exits 128 + the signal, as a shell expects; under torchrun every rank exits 0 instead,
    # since torchrun reports any non-zero exit as a worker failure, with a ChildFailedError traceback.
    return 128 + result.signal if result.signal and result.world == 1 else 0


class _QuietAfterStop:
    """Once a run has stopped on a signal and saved, a second Ctrl-C (people press it twice) must not cut
    the summary and the resume command short: ignore SIGINT/SIGTERM until the block ends."""

    def __enter__(self) -> _QuietAfterStop:
        self.old: dict[int, Any] = {}
        return self

    def arm(self, stopped_by: int | None) -> None:
        if stopped_by and not self.old and threading.current_thread() is threading.main_thread():
            self.old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}

    def __exit__(self, *exc: object) -> None:
        for sig, old in self.old.items():
            signal.signal(sig, old)


def _report_run(display: TrainDisplay, result: Any) -> None:
    if result.rank == 0:  # under torchrun only rank 0 speaks
        display.summary(result)
        if result.signal:
            launcher = (
                ["charrnn"]
                if result.world == 1
                else ["torchrun", "--nproc-per-node", str(result.world), "-m", "charrnn"]
            )
            command = shlex.join([*launcher, "train", "--resume", "--out", str(result.run_dir)])
            err.print(f"[yellow]stopped at step {result.step}[/]; resume with: [bold]{escape(command)}[/]")


@app.command(cls=_Command)
def sample(
    checkpoint: CheckpointOpt = None,
    temp: Annotated[
        float, typer.Option(help="Temperature; 0 means greedy (always the likeliest character).")
    ] = SampleConfig.temp,
    length: Annotated[int, typer.Option(help="Characters to generate, not counting the prime.")] = SampleConfig.length,
    prime: Annotated[
        Optional[str], typer.Option(help="Text to start from (warms the state). (default: a newline)")
    ] = None,
    top_k: Annotated[Optional[int], typer.Option(help="Sample only among the k likeliest characters.")] = None,
    top_p: Annotated[
        Optional[float], typer.Option(help="Sample only among the likeliest characters whose probabilities sum to p.")
    ] = None,
    seed: Annotated[Optional[int], typer.Option(help="Same seed, same text.")] = None,
    num: Annotated[int, typer.Option(help="Independent samples, generated together as one batch.")] = SampleConfig.num,
    stop: Annotated[
        Optional[list[str]],
        typer.Option(help="End each sample where it first writes this string (repeatable; '\\n' is a newline)."),
    ] = None,
    keep_stop: Annotated[bool, typer.Option("--keep-stop", help="Print the stop string that ended a sample.")] = False,
    prime_file: Annotated[Optional[Path], typer.Option(help="Read the prime from this UTF-8 file.")] = None,
    beam: Annotated[
        Optional[int], typer.Option(help="Beam search of this width for the likeliest text, instead of sampling.")
    ] = None,
    output_format: Annotated[
        str, typer.Option("--format", help="text, or jsonl: one JSON object per sample, for scripts.")
    ] = "text",
    device: Annotated[str, typer.Option(help="cpu (fastest for a few streams), cuda, mps or auto.")] = "cpu",
    threads: ThreadsOpt = None,
    check_copy: Annotated[
        bool,
        typer.Option(
            "--check-copy", help="Report how much of each sample appears verbatim in the training text (stderr)."
        ),
    ] = False,
) -> int:
    """Generate text from a trained model, streaming it to stdout. `--prime -` reads the prime from stdin."""
    import secrets

    from charrnn.api import load
    from charrnn.devices import set_threads
    from charrnn.steer import unescape

    set_threads(threads)
    if output_format not in ("text", "jsonl"):
        raise CharRNNError(f"--format must be text or jsonl, got {output_format!r}")
    prime = _read_prime(prime, prime_file)
    seed = secrets.randbelow(2**31) if seed is None else seed  # chosen here so that jsonl can report it
    cfg = SampleConfig(**_given(temp=temp, length=length, prime=prime, top_k=top_k, top_p=top_p, seed=seed, num=num))
    stops = [unescape(s) for s in stop or []]
    model = load(checkpoint, device)
    path, vocab = model.path, model.vocab
    err.print(f"[dim]model: {escape(str(path))}[/]")
    unknown = vocab.unknown(cfg.prime) if prime is not None else ""
    if unknown:
        err.print(
            f"[yellow]warning:[/] prime characters not in the model's vocabulary were skipped: {escape(repr(unknown))}"
        )
    echo = "".join(c for c in cfg.prime if c in vocab) if prime is not None else ""
    stream = sys.stdout
    draw = dict(length=cfg.length, temp=cfg.temp, prime=cfg.prime, seed=cfg.seed, top_k=cfg.top_k, top_p=cfg.top_p)
    if beam is not None:
        texts = [t for t, _ in model.beam(cfg.length, beam, cfg.prime, cfg.num, stops, keep_stop)]
    elif cfg.num == 1 and output_format == "text":  # one sample: stream it as it comes
        stream.write(echo)
        text = ""
        for piece in model.stream(**draw, stop=stops, keep_stop=keep_stop):
            stream.write(piece)
            stream.flush()  # to a terminal or a pipe (`| tee`): ~1 us a character
            text += piece
        stream.write("\n")
        stream.flush()
        if check_copy:
            _report_copies([text], model)
        return 0
    else:
        texts = model.sample(**draw, num=cfg.num, stop=stops, keep_stop=keep_stop)
    copies = _report_copies(texts, model, quiet=output_format == "jsonl") if check_copy else []
    if output_format == "jsonl":
        settings = {
            "temp": cfg.temp,
            "top_k": cfg.top_k,
            "top_p": cfg.top_p,
            "length": cfg.length,
            "beam": beam,
            "stop": stops,
            "checkpoint": str(path),
        }
        for i, text in enumerate(texts):
            row = {
                **({"copy": copies[i].as_dict()} if copies else {}),
                "sample": i + 1,
                "text": text,
                "prime": echo,
                "seed": None if beam else cfg.seed,
                "settings": settings,
                "nats_per_char": model.mean_nats(text),
            }
            stream.write(json.dumps(row, ensure_ascii=False) + "\n")
    elif len(texts) == 1:
        stream.write(f"{echo}{texts[0]}\n")
    else:
        for i, text in enumerate(texts, 1):
            stream.write(f"{'' if i == 1 else chr(10)}=== sample {i}/{len(texts)} ===\n{echo}{text}\n")
    stream.flush()
    return 0


def _report_copies(texts: list[str], model: Any, quiet: bool = False) -> list[Any]:
    """--check-copy: how much of each sample the model copied from its training text (on stderr)."""
    from charrnn import copycheck

    corpora = [copycheck.CorpusIndex(p) for p in copycheck.training_files(model.info.get("corpus_files") or [])]
    copies = [copycheck.check(t, corpora) for t in texts]
    for i, c in enumerate(copies):
        if quiet:
            break
        where = f"sample {i + 1}: " if len(texts) > 1 else ""
        err.print(f"[dim]copy check: {where}{escape(c.summary())}[/]")
    return copies


def _read_prime(prime: str | None, prime_file: Path | None) -> str | None:
    """--prime TEXT, --prime - (standard input) or --prime-file FILE (UTF-8)."""
    if prime is not None and prime_file is not None:
        raise CharRNNError("give --prime or --prime-file, not both")
    if prime == "-":
        return sys.stdin.read()
    if prime_file is None:
        return prime
    try:
        return prime_file.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise CharRNNError(f"--prime-file {prime_file} not found") from None
    except UnicodeDecodeError as e:
        raise CharRNNError(f"--prime-file {prime_file} is not UTF-8 (bad byte at offset {e.start})") from None
    except OSError as e:
        raise CharRNNError(f"--prime-file {prime_file}: {e.strerror}") from None


@app.command("eval", cls=_Command)
def eval_(
    file: Annotated[
        Optional[Path], typer.Argument(help="Text to score. Default: the validation split of the run's corpus.")
    ] = None,
    checkpoint: CheckpointOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object on stdout instead of a table.")
    ] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    show: Annotated[
        bool,
        typer.Option("--show", help="Show the text coloured by each character's surprisal, and the hardest words."),
    ] = False,
    html_out: Annotated[
        Optional[Path],
        typer.Option("--html", help="Write the same view as one standalone HTML page (hover: p and top guesses)."),
    ] = None,
    show_chars: Annotated[
        int, typer.Option(help="Characters shown by --show and --html; the totals cover the whole text.")
    ] = 2000,
    cell: Annotated[
        Optional[str],
        typer.Option(help="LAYER:UNIT (layer from 1): colour the text by that hidden unit's value instead."),
    ] = None,
    cell_kind: Annotated[
        Optional[str], typer.Option(help="c (an LSTM's cell state) or h (its output). (default: c, else h)")
    ] = None,
) -> int:
    """Score a text: nats/char, bits/char and perplexity; --show colours it by what surprised the model."""
    from charrnn import checkpoint as ckpt_io
    from charrnn.evaluate import evaluate_checkpoint

    if show_chars < 2:
        raise CharRNNError(f"--show-chars must be at least 2, got {show_chars}")
    path = ckpt_io.resolve(checkpoint)
    where = _parse_cell(cell) if cell is not None else None
    view = show or html_out is not None or where is not None
    report = evaluate_checkpoint(
        path,
        file,
        "cpu" if view and device == "auto" else device,
        warn=lambda msg: err.print(f"[yellow]warning:[/] {escape(msg)}"),
        show=show_chars - 1 if view else 0,
    )
    shown = report.pop("shown", None)
    if where is not None:
        _show_cell(shown, report, where, cell_kind, html_out)
    elif shown is not None:
        _show(shown, report, show, html_out)
    if as_json:
        out.print_json(json.dumps(report))
        return 0
    table = Table(title=escape(report["text"]), show_header=False)
    for key in ("chars", "nats_per_char", "bits_per_char", "perplexity", "skipped_unknown"):
        value = report[key]
        table.add_row(key.replace("_", " "), f"{value:,}" if isinstance(value, int) else f"{value:.4f}")
    out.print(table)
    return 0


def _parse_cell(spec: str) -> tuple[int, int]:
    try:
        layer, unit = (int(x) for x in spec.split(":"))
    except ValueError:
        raise CharRNNError(f"--cell takes LAYER:UNIT, for example 1:37 (layers count from 1), got {spec!r}") from None
    return layer, unit


def _write_page(path: Path, page: str) -> None:
    from charrnn.atomic import replace_with

    replace_with(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    err.print(f"wrote {escape(str(path))}")


def _show_cell(shown: dict, report: dict, where: tuple[int, int], kind: str | None, html_out: Path | None) -> None:
    """--cell LAYER:UNIT: the text coloured by one hidden unit's value after each character."""
    from charrnn import insight, render

    model = shown["model"]
    layer, unit = where
    states = insight.unit_states(model, shown["ids"])
    kind = kind or ("c" if "c" in states else "h")
    if kind not in states:
        raise CharRNNError(f"--cell-kind {kind}: a {model.cfg.model.upper()} has only h (c is an LSTM's cell state)")
    if not (1 <= layer <= model.cfg.layers and 0 <= unit < model.cfg.hidden):
        raise CharRNNError(
            f"--cell {layer}:{unit} is outside the model: layers 1-{model.cfg.layers}, units 0-{model.cfg.hidden - 1}"
        )
    text = shown["vocab"].decode(shown["ids"])
    values = states[kind][:, layer - 1, unit]  # (n,)
    title = f"{report['text']}: unit {layer}:{unit} ({kind}) of {report['checkpoint']}"
    if html_out is not None:
        _write_page(html_out, render.cell_page(text, values, title))
    else:
        out.print(render.cell_terminal(text, values, title))


def _show(shown: dict, report: dict, terminal: bool, html_out: Path | None) -> None:
    """--show and --html: the surprisal view of the first characters (insight.py computes, render.py draws)."""
    from charrnn import insight, render

    view = insight.char_view(
        shown["model"],
        shown["vocab"],
        shown["ids"],
        shown["nats"],
        (report["chars"], report["nats_per_char"] * report["chars"]),
    )
    title = f"{report['text']}: surprisal under {report['checkpoint']}"
    if terminal:
        out.print(render.terminal(view, title))
    if html_out is not None:
        _write_page(html_out, render.page(view, title))


@app.command(cls=_Command)
def cells(
    file: Annotated[Path, typer.Argument(help="Text to read the model's units on.")],
    checkpoint: CheckpointOpt = None,
    show_chars: Annotated[int, typer.Option(help="Characters of FILE to read (from its start).")] = 5000,
    top: Annotated[int, typer.Option(help="Units shown for each property.")] = 3,
) -> int:
    """Rank hidden units by how well they track inside quotes, inside brackets, position in the line and the
    start of a word; show each with a coloured excerpt (view one whole with `eval FILE --cell L:U`)."""
    from charrnn import checkpoint as ckpt_io
    from charrnn import insight, render
    from charrnn.evaluate import evaluate_checkpoint

    if show_chars < 20:
        raise CharRNNError(f"--show-chars must be at least 20, got {show_chars}")
    path = ckpt_io.resolve(checkpoint)
    shown = evaluate_checkpoint(path, file, "cpu", show=show_chars - 1)["shown"]
    text = shown["vocab"].decode(shown["ids"])
    states = insight.unit_states(shown["model"], shown["ids"])
    ranked = insight.rank_cells(states, text, top)
    if not ranked:
        raise CharRNNError(f"{file}: none of the properties varies in its first {show_chars} characters")
    table = Table(title=escape(f"units of {path} that track properties of {file}"), show_lines=True)
    for column in ("property", "unit", "correlation", "excerpt (blue: negative, red: positive)"):
        table.add_column(column)
    excerpt = slice(0, min(len(text), 160))
    for name, found in ranked.items():
        for c in found:
            values = states[c.kind][:, c.layer - 1, c.unit]
            table.add_row(
                name,
                f"{c.layer}:{c.unit} ({c.kind})",
                f"{c.corr:+.3f}",
                render.cell_text(text[excerpt], values[excerpt]),
            )
    out.print(table)
    return 0


@app.command(cls=_Command)
def info(checkpoint: CheckpointOpt = None) -> int:
    """Describe a checkpoint: model, size, vocabulary, training so far."""
    from charrnn import checkpoint as ckpt_io

    path = ckpt_io.resolve(checkpoint)
    table = Table(title=escape(str(path)), show_header=False)
    for key, value in ckpt_io.describe(path).items():
        table.add_row(key, escape(str(value)))
    out.print(table)
    return 0


@app.command(cls=_Command)
def plot(
    runs: Annotated[
        Optional[list[Path]], typer.Argument(help="Run folders (or metrics.jsonl files). Default: the newest run.")
    ] = None,
    x: Annotated[str, typer.Option("--x", help="steps or minutes.")] = "steps",
    bits: Annotated[bool, typer.Option("--bits", help="Bits per character instead of nats.")] = False,
    out_file: Annotated[
        Optional[Path],
        typer.Option("--out", help="Write a .png, .svg or .pdf instead (needs pip install 'charrnn[plot]')."),
    ] = None,
) -> int:
    """Draw train and validation loss of one or several runs on one chart, to compare them."""
    from charrnn import curves, locate

    if x not in ("steps", "minutes"):
        raise CharRNNError(f"--x must be steps or minutes, got {x!r}")
    if not runs:
        newest = locate.newest_run()
        if newest is None:
            raise CharRNNError(f"no run under ./{locate.RUNS_DIR} to plot: give a run folder")
        runs = [newest.parent]
    found = [curves.read(r, warn=lambda msg: err.print(f"[yellow]warning:[/] {escape(msg)}")) for r in runs]
    if out_file is not None:
        curves.draw_picture(found, out_file, x, bits)
        err.print(f"wrote {escape(str(out_file))}")
    else:
        sys.stdout.write(curves.draw_terminal(found, x, bits) + "\n")
    return 0


@app.command(cls=_Command)
def export(
    run: Annotated[
        Optional[Path],
        typer.Argument(
            help="A checkpoint or a run folder (its best.pt). Default: the newest run, else the bundled model."
        ),
    ] = None,
    output_format: Annotated[
        str,
        typer.Option(
            "--format",
            help="onnx: a step model (ids and state in, logits and state out), vocabulary in FILE.json beside "
            "it; safetensors: the weights, vocabulary and config in one file.",
        ),
    ] = "onnx",
    out: Annotated[
        Optional[Path], typer.Option(help="File to write. (default: the run's best.onnx or .safetensors)")
    ] = None,
) -> int:
    """Write a trained model for use outside charrnn: ONNX (browsers, games, other languages) or safetensors."""
    from charrnn import locate
    from charrnn.export import export as write

    source = locate.resolve(run)
    target = out or source.with_suffix(".onnx" if output_format == "onnx" else ".safetensors")
    for path in write(source, output_format, target):
        err.print(f"wrote {escape(str(path))}")
    return 0


@app.command(cls=_Command)
def cache(
    clear: Annotated[
        bool, typer.Option("--clear", help="Remove every cached corpus (they are rebuilt on use).")
    ] = False,
) -> int:
    """List the encoded corpora cached for fast restarts, or clear them."""
    import datetime

    from charrnn import data

    root = data.cache_root()
    if clear:
        entries, freed = data.clear_cache(root)
        err.print(f"removed {entries} cached corpora ({freed / 1e6:,.1f} MB) from {escape(str(root))}")
        return 0
    found = data.cached_corpora(root)
    table = Table(title=escape(f"{root} ({sum(c.bytes for c in found) / 1e6:,.1f} MB)"))
    for column in ("corpus", "characters", "vocabulary", "MB", "last used", "folder"):
        table.add_column(column, justify="right" if column in ("characters", "vocabulary", "MB") else "left")
    for c in found:
        when = datetime.datetime.fromtimestamp(c.used).strftime("%Y-%m-%d %H:%M")
        table.add_row(
            escape(c.source), f"{c.chars:,}", f"{c.vocab_size:,}", f"{c.bytes / 1e6:,.1f}", when, c.folder.name
        )
    out.print(table)
    return 0


class TrainDisplay:
    """A rich progress bar on stderr fed by the training loop's events, then a summary table."""

    def __init__(self, console: Console) -> None:
        from rich.progress import (
            BarColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = console
        self.progress = Progress(
            TextColumn("[bold]train[/]"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[step]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[stats]}"),
            console=console,
            transient=False,
            refresh_per_second=4,
        )
        self.task = self.progress.add_task("train", total=1.0, step="", stats="")
        self.val = ""

    def __enter__(self) -> TrainDisplay:
        self.started = False  # the bar appears with the first step, so an early error stays one line
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started:
            self.progress.stop()

    def update(self, event: Any) -> None:
        if not self.started:
            self.progress.start()
            self.started = True
        if event.kind in ("notice", "info"):
            style = "yellow" if event.kind == "notice" else "dim"
            self.progress.console.print(f"[{style}]{escape(event.message)}[/]")
            return
        if event.kind == "sample":
            self.progress.console.print(f"[dim cyan]{escape(event.message)}[/]", highlight=False)
            return
        if event.kind == "eval" and event.val is not None:
            self.val = f"val {event.val.nats_per_char:.3f} ({event.val.bits_per_char:.3f} bpc)"
            self.progress.console.print(
                f"step {event.step:>6}  train {event.loss or float('nan'):.3f}  {self.val}  "
                f"lr {event.lr:.2e}  {event.chars_per_s:,.0f} chars/s",
                highlight=False,
            )
        steps = f"step {event.step}" + (f"/{event.total_steps}" if event.total_steps else "")
        loss = f"loss {event.loss:.3f}" if event.loss is not None else ""
        stats = "  ".join(x for x in (loss, self.val, f"{event.chars_per_s:,.0f} chars/s") if x)
        self.progress.update(self.task, completed=event.progress, step=steps, stats=stats)

    def summary(self, result: Any) -> None:
        table = Table(title="training summary", show_header=False)
        if result.best_val is not None:
            table.add_row("best val loss", f"{result.best_val:.4f} nats/char ({result.best_val / math.log(2):.4f} bpc)")
        if result.last_val is not None:
            table.add_row("last val loss", f"{result.last_val.nats_per_char:.4f} nats/char")
        table.add_row("steps", f"{result.step:,}")
        table.add_row("time", f"{result.elapsed:,.1f} s")
        table.add_row("checkpoints", escape(f"{result.run_dir}/best.pt, {result.run_dir}/last.pt"))
        table.add_row("loss curve", escape(shlex.join(["charrnn", "plot", str(result.run_dir)])))
        self.console.print(table)


def main(argv: list[str] | None = None) -> None:
    """Run the app, turning every expected failure into one line on stderr and an exit code."""
    try:
        code = app(args=argv, prog_name="charrnn", standalone_mode=False)
    except CharRNNError as e:
        if os.environ.get("RANK", "0") == "0":  # under torchrun every rank meets the same error: rank 0 says it
            err.print(f"[bold red]error:[/] {escape(str(e))}")
        sys.exit(1)
    except _usage_error_types() as e:
        ctx = getattr(e, "ctx", None)
        command = ctx.command_path if ctx is not None else "charrnn"
        err.print(f"[bold red]error:[/] {escape(e.format_message())} (see `{command} --help`)")
        sys.exit(getattr(e, "exit_code", 2))
    except (typer.Abort, KeyboardInterrupt):
        err.print("[yellow]interrupted[/]")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
