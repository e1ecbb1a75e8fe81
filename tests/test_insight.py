"""eval --show and --html: each character's surprisal is its share of what eval sums (the totals agree to
1e-6), the page is standalone HTML with one element per shown character, long texts show their start
while the totals cover the whole text."""

from __future__ import annotations

import json
import math
from html.parser import HTMLParser

import numpy as np
import pytest
from conftest import make_text

from charrnn import checkpoint
from charrnn.evaluate import evaluate_checkpoint


class Spans(HTMLParser):
    """Counts the character spans of the page's text and anything that would need a network or scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.depth, self.chars, self.titles, self.external = 0, [], [], []
        self.in_text = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "div" and attrs.get("id") == "text":
            self.in_text = True
        elif self.in_text and tag == "span":
            self.titles.append(attrs.get("title", ""))
            self.chars.append("")
        if tag == "script" or any(str(v).startswith(("http:", "https:", "//")) for v in attrs.values()):
            self.external.append(tag)

    def handle_endtag(self, tag):
        if tag == "div" and self.in_text:
            self.in_text = False

    def handle_data(self, data):
        if self.in_text and self.chars:
            self.chars[-1] += data


def test_each_characters_surprisal_is_its_share_of_the_eval_total(tiny_run, tmp_path, run_cli):
    text = make_text(12_000, seed=5)  # several evaluation rows: the shares must follow evaluate's layout
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    report = evaluate_checkpoint(tiny_run.run_dir / "best.pt", tmp_path / "t.txt", "cpu", show=len(text))
    shown = report["shown"]
    assert len(shown["ids"]) == len(text) and not np.isnan(shown["nats"]).any()
    code, out, _ = run_cli("eval", tmp_path / "t.txt", "-c", tiny_run.run_dir, "--json")
    total = json.loads(out)
    assert code == 0 and total["chars"] == len(text) - 1
    whole = total["nats_per_char"] * total["chars"]
    assert math.isclose(shown["nats"].sum(), whole, rel_tol=1e-6)


def test_the_html_page_has_one_element_per_shown_character_and_needs_nothing_else(tiny_run, tmp_path, run_cli):
    text = "ROMEO:\nO, she doth teach the torches to burn bright!\n\tzqxj \u00e9\n" + make_text(4_000, seed=6)
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    code, _, err = run_cli(
        "eval", tmp_path / "t.txt", "-c", tiny_run.run_dir, "--html", tmp_path / "v.html", "--show-chars", 300
    )
    assert code == 0, err
    page = Spans()
    page.feed((tmp_path / "v.html").read_text(encoding="utf-8"))
    known = "".join(c for c in text if c in checkpoint.load(tiny_run.run_dir / "best.pt")["vocab"])
    assert len(page.chars) == 300 and "".join(page.chars) == known[:300]  # one span a character, in order
    assert page.external == []
    assert "nothing before it" in page.titles[0] and "p = " in page.titles[1] and "top: " in page.titles[1]


def test_show_in_the_terminal_with_a_legend_and_the_hardest_words(tiny_run, tmp_path, run_cli):
    text = make_text(5_000, seed=7) + "\nvkyvkyvkyvk\n"  # a word the model cannot have expected
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    code, out, err = run_cli("eval", tmp_path / "t.txt", "-c", tiny_run.run_dir, "--show", "--show-chars", 6000)
    assert code == 0, err
    assert "surprisal" in out and "> 8 bits" in out and "most surprising words" in out
    assert "vkyvkyvkyvk" in out.split("most surprising words")[1]
    code, out, _ = run_cli("eval", tmp_path / "t.txt", "-c", tiny_run.run_dir, "--show", "--show-chars", 1)
    assert code == 1


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1000,700",
]


@pytest.mark.slow
def test_the_page_renders_in_a_real_browser(tiny_run, tmp_path, run_cli):
    """Debian's Chromium, headless, takes a screenshot of the page: it must show the coloured text, not a
    blank page (install it with `apt-get install chromium`)."""
    import shutil
    import subprocess

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium)")
    image = pytest.importorskip("matplotlib.image")
    (tmp_path / "t.txt").write_text(make_text(3_000, seed=8), encoding="utf-8")
    code, _, err = run_cli("eval", tmp_path / "t.txt", "-c", tiny_run.run_dir, "--html", tmp_path / "v.html")
    assert code == 0, err
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            browser,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            (tmp_path / "v.html").as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    pixels = image.imread(shot)[..., :3]  # (H, W, 3) in [0, 1]
    assert pixels.std() > 0.05  # not blank
    for colour in ("#d9f2d0", "#fbeeb0"):  # surprisal bands 1-2 and 2-4 bits: the text really is coloured
        rgb = np.array([int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)])
        assert (np.abs(pixels - rgb).max(axis=-1) < 0.02).sum() > 200, colour
