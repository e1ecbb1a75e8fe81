"""Drawing what insight.py computes: the surprisal view in the terminal (rich) and as one standalone HTML
page (no network, no scripts: hovering a character shows its probability and the model's top guesses
through the browser's own tooltip). No tensor math here.
"""

from __future__ import annotations

import html
import math

import numpy as np
from rich.console import Group
from rich.table import Table
from rich.text import Text

from charrnn.insight import CharView, hardest_words

# Surprisal bands in bits (a character the model gave p = 1/2 costs 1 bit, p = 1/256 costs 8), with a
# terminal colour and a page colour each: from what the model was sure of to what it never expected.
BANDS = [
    (1.0, "grey70", "#f4f4f4", "< 1 bit"),
    (2.0, "green", "#d9f2d0", "1-2"),
    (4.0, "yellow", "#fbeeb0", "2-4"),
    (6.0, "dark_orange", "#fbd3a0", "4-6"),
    (8.0, "red", "#f7a8a0", "6-8"),
    (math.inf, "bold magenta", "#e58fe0", "> 8 bits"),
]


def band(bits: float) -> int:
    if np.isnan(bits):
        return 0
    return next(i for i, (limit, *_rest) in enumerate(BANDS) if bits < limit)


def _visible(c: str) -> str:
    return {"\n": "\u21b5\n", "\t": "\u2192\t"}.get(c, c)


def terminal(view: CharView, title: str) -> Group:
    """The coloured text, a legend, and the ten most surprising words."""
    body = Text()
    for c, bits in zip(view.text, view.bits):
        body.append(_visible(c) if c in "\n\t" else c, style=BANDS[band(bits)][1])
    legend = Text("surprisal: ")
    for _, style, _, label in BANDS:
        legend.append(f" {label} ", style=f"reverse {style}")
        legend.append(" ")
    per_char = view.total_nats / view.total_chars / math.log(2)
    legend.append(f"   whole text: {view.total_chars:,} characters, {per_char:.3f} bits/char")
    table = Table(title="most surprising words (bits, summed over the word)", show_header=True)
    table.add_column("bits", justify="right")
    table.add_column("word")
    table.add_column("what the model expected at its hardest character")
    for start, end, bits in hardest_words(view):
        worst = start + int(np.nanargmax(view.bits[start:end]))
        guesses = ", ".join(f"{c!r} {p:.2f}" for c, p in view.top[worst][:3])
        table.add_row(f"{bits:.1f}", view.text[start:end], f"at {view.text[worst]!r}: {guesses}")
    return Group(Text(title, style="bold"), body, Text(""), legend, table)


def page(view: CharView, title: str) -> str:
    """One standalone HTML page: one <span> per shown character, coloured by its band, with a tooltip."""
    css = "\n".join(f".b{i} {{ background: {colour}; }}" for i, (_, _, colour, _) in enumerate(BANDS))
    legend = " ".join(f'<span class="b{i}">{html.escape(label)}</span>' for i, (*_x, label) in enumerate(BANDS))
    spans = []
    for i, (c, bits) in enumerate(zip(view.text, view.bits)):
        if np.isnan(bits):
            tip = "the first character: nothing before it to predict it"
        else:
            guesses = ", ".join(f"{g!r} {p:.3f}" for g, p in view.top[i])
            tip = f"{c!r}: p = {2.0**-bits:.4f} ({bits:.2f} bits); top: {guesses}"
        spans.append(f'<span class="b{band(bits)}" title="{html.escape(tip, quote=True)}">{html.escape(c)}</span>')
    per_char = view.total_nats / view.total_chars / math.log(2)
    words = "".join(
        f"<li>{bits:.1f} bits: <code>{html.escape(view.text[s:e])}</code></li>" for s, e, bits in hardest_words(view)
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
#text {{ font-family: monospace; font-size: 15px; line-height: 1.5; white-space: pre-wrap; }}
#text span:hover {{ outline: 1px solid #333; }}
.legend span {{ padding: 0 0.4em; font-family: monospace; }}
{css}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="legend">surprisal (-log2 p of each character): {legend}</p>
<p>Whole text: {view.total_chars:,} characters scored, {per_char:.4f} bits/char. Hover a character for its
probability and the model's top guesses. Showing the first {len(view.text):,} characters.</p>
<div id="text">{"".join(spans)}</div>
<h2>Most surprising words</h2><ol>{words}</ol>
</body></html>
"""


# ---- one hidden unit along the text: blue where it is negative, red where positive -----------------------

DIVERGING = [  # (terminal style, page colour) from -1 to +1
    ("white on blue", "#3b6fd8"),
    ("black on bright_blue", "#8fb0ee"),
    ("black on cyan", "#d3e0f8"),
    ("default", "#ffffff"),
    ("black on yellow", "#f8d9d3"),
    ("black on bright_red", "#ee9a8f"),
    ("white on red", "#d84a3b"),
]


def _level(v: float, scale: float) -> int:
    x = max(-1.0, min(1.0, v / scale)) if scale > 0 else 0.0
    return int(round((x + 1) / 2 * (len(DIVERGING) - 1)))


def cell_text(text: str, values: np.ndarray) -> Text:
    scale = float(np.abs(values).max()) or 1.0
    out = Text()
    for c, v in zip(text, values):
        out.append(_visible(c) if c in "\n\t" else c, style=DIVERGING[_level(float(v), scale)][0])
    return out


def cell_terminal(text: str, values: np.ndarray, title: str) -> Group:
    scale = float(np.abs(values).max()) or 1.0
    legend = Text("unit value: ")
    for i, (style, _) in enumerate(DIVERGING):
        legend.append(f" {-scale + 2 * scale * i / (len(DIVERGING) - 1):+.2f} ", style=style)
    return Group(Text(title, style="bold"), cell_text(text, values), Text(""), legend)


def cell_page(text: str, values: np.ndarray, title: str) -> str:
    """The unit's value along the text as one standalone page: one <span> per character, value on hover."""
    scale = float(np.abs(values).max()) or 1.0
    css = "\n".join(f".v{i} {{ background: {colour}; }}" for i, (_, colour) in enumerate(DIVERGING))
    spans = "".join(
        f'<span class="v{_level(float(v), scale)}" title="{float(v):+.4f}">{html.escape(c)}</span>'
        for c, v in zip(text, values)
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
#text {{ font-family: monospace; font-size: 15px; line-height: 1.5; white-space: pre-wrap; }}
{css}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Blue: negative, red: positive (scaled to the largest magnitude shown, {scale:.3f}). Hover a character
for the unit's value after reading it.</p>
<div id="text">{spans}</div>
</body></html>
"""
