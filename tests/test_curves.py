"""charrnn plot: draws train and validation loss from metrics.jsonl (one run or several, against steps or
minutes, nats or bits), fails cleanly on an empty log, skips a torn line with a notice, and names the
[plot] extra when a picture is asked for without matplotlib."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from charrnn import curves
from charrnn.errors import CharRNNError


def write_metrics(folder, rows, torn: str = ""):
    folder.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in rows) + torn
    (folder / "metrics.jsonl").write_text(text, encoding="utf-8")
    return folder


ROWS = [
    {"step": 100, "elapsed": 30.0, "train_loss": 2.5, "val_loss": 2.6},
    {"step": 200, "elapsed": 60.0, "train_loss": 2.0, "val_loss": 2.1},
    {"step": 300, "elapsed": 90.0, "train_loss": 1.8, "val_loss": None},
]


def test_reads_rows_and_skips_a_torn_line_with_a_notice(tmp_path):
    notices = []
    run = write_metrics(tmp_path / "run", ROWS, torn='{"step": 400, "elap')
    curve = curves.read(run, warn=notices.append)
    assert curve.name == "run" and curve.steps == [100, 200, 300] and curve.minutes == [0.5, 1.0, 1.5]
    assert curve.val == [2.6, 2.1, None] and len(notices) == 1 and "line 4 is torn" in notices[0]
    xs, series = curves._series(curve, "minutes", bits=True)
    assert xs == [0.5, 1.0, 1.5] and series[1][1] == [0.5, 1.0]  # the val series skips the missing point
    assert series[1][2][0] == pytest.approx(2.6 / math.log(2))


@pytest.mark.parametrize("content", ["", "\n", '{"step": 1, "ela'])
def test_an_empty_or_wholly_torn_log_is_one_clear_error(tmp_path, run_cli, content):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text(content, encoding="utf-8")
    with pytest.raises(CharRNNError, match="has no metrics rows yet"):
        curves.read(tmp_path / "run")
    code, out, err = run_cli("plot", tmp_path / "run")
    assert code == 1 and out == "" and "no metrics rows" in err and "Traceback" not in err
    code, _, err = run_cli("plot", tmp_path / "nothing-here")
    assert code == 1 and "no metrics.jsonl in" in err


def test_plot_draws_several_runs_in_the_terminal(tmp_path, run_cli):
    a = write_metrics(tmp_path / "small", ROWS)
    b = write_metrics(tmp_path / "big", [dict(r, val_loss=(r["val_loss"] or 2.0) - 0.3) for r in ROWS])
    code, out, err = run_cli("plot", a, b, "--x", "minutes", "--bits")
    assert code == 0, err
    assert "small val" in out and "big train" in out and "bits/char" in out and "minutes" in out
    code, _, err = run_cli("plot", a, "--x", "hours")
    assert code == 1 and "--x must be steps or minutes" in err


def test_plot_defaults_to_the_newest_run_and_train_names_the_command(tiny_run, tmp_path, run_cli, monkeypatch):
    assert "charrnn plot checkpoints/tiny" in tiny_run.err  # the summary names the command that draws it
    shutil.copytree(tiny_run.run_dir, tmp_path / "checkpoints" / "tiny")
    code, out, err = run_cli("plot")
    assert code == 0 and "tiny val" in out, err


def test_a_picture_without_matplotlib_names_the_extra(tmp_path, run_cli, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    run = write_metrics(tmp_path / "run", ROWS)
    code, out, err = run_cli("plot", run, "--out", tmp_path / "curve.png")
    assert code == 1 and "pip install 'charrnn[plot]'" in err and not (tmp_path / "curve.png").exists()
    code, _, err = run_cli("plot", run, "--out", tmp_path / "curve.gif")
    assert code == 1 and "give a .png, .svg or .pdf" in err


def test_a_picture_with_matplotlib(tmp_path, run_cli):
    pytest.importorskip("matplotlib")
    run = write_metrics(tmp_path / "run", ROWS)
    code, _, err = run_cli("plot", run, "--out", tmp_path / "curve.svg")
    assert code == 0, err
    assert (tmp_path / "curve.svg").read_text(encoding="utf-8").lstrip().startswith("<?xml")
