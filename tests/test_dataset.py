"""Several files as one corpus: folders and globs expand in sorted order, what is not text is skipped with a
notice (never silently), each file gives its own validation split, and a resume refuses a changed file by
name."""

from __future__ import annotations

import pytest
from conftest import make_text

from charrnn import checkpoint, dataset
from charrnn import loop as train_mod
from charrnn.errors import CharRNNError

MODEL = dict(model="gru", hidden=24, embed=8, layers=1, dropout=0.0)
TRAIN = dict(batch_size=4, seq_len=16, eval_every=10, device="cpu", precision="fp32", seed=5, val_frac=0.1)


@pytest.fixture
def folder(tmp_path):
    """Two text files, one in a subfolder, plus one binary, one Latin-1, one empty and two hidden ones."""
    root = tmp_path / "texts"
    (root / "sub").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "a.txt").write_text(make_text(6_000, seed=1), encoding="utf-8")
    (root / "sub" / "b.md").write_text("# Notes\n" + make_text(3_000, seed=2).upper(), encoding="utf-8")
    (root / "c.bin").write_bytes(bytes(range(256)) * 8)
    (root / "d.txt").write_bytes("caf\u00e9 au lait\n".encode("latin-1") * 50)
    (root / "e.txt").write_bytes(b"")
    (root / ".hidden.txt").write_text("secret\n", encoding="utf-8")
    (root / ".git" / "config").write_text("[core]\n", encoding="utf-8")
    return root


def test_a_folder_reads_its_text_files_in_order_and_names_every_file_it_skips(folder):
    data = dataset.load([folder], val_frac=0.1)
    assert [f.path for f in data.files] == [str((folder / "a.txt").resolve()), str((folder / "sub" / "b.md").resolve())]
    notices = "\n".join(data.notices)
    assert len(data.notices) == 5
    for name, why in [
        ("c.bin", "looks binary"),
        ("d.txt", "not valid UTF-8"),
        ("e.txt", "empty"),
        (".hidden.txt", "hidden"),
        (".git/config", "hidden"),
    ]:
        assert any(name in line and why in line for line in data.notices), (name, notices)


def test_each_file_is_validated_on_its_own_last_part(folder):
    a = (folder / "a.txt").read_text(encoding="utf-8")
    b = (folder / "sub" / "b.md").read_text(encoding="utf-8")
    data = dataset.load([folder], val_frac=0.1)
    cut_a, cut_b = len(a) - int(len(a) * 0.1), len(b) - int(len(b) * 0.1)
    # the default separator is a blank line: one newline after a part that ends with one, else two
    sep = lambda part: "\n" if part.endswith("\n") else "\n\n"  # noqa: E731
    assert data.vocab.decode(data.val) == a[cut_a:] + sep(a[cut_a:]) + b[cut_b:]
    assert data.vocab.decode(data.train) == a[:cut_a] + sep(a[:cut_a]) + b[:cut_b]
    mine = dataset.load([folder / "a.txt", folder / "sub" / "b.md"], val_frac=0.1, separator="<|file|>")
    assert mine.vocab.decode(mine.val) == a[cut_a:] + "<|file|>" + b[cut_b:]


def test_globs_expand_here_and_a_file_named_outright_must_be_text(folder):
    data = dataset.load([str(folder / "**" / "*.md"), str(folder / "a.txt")], val_frac=0.1)
    assert [f.path.rsplit("/", 1)[1] for f in data.files] == ["a.txt", "b.md"]  # named files first, then globs
    with pytest.raises(CharRNNError, match="no file matches"):
        dataset.load([str(folder / "*.csv")], val_frac=0.1)
    with pytest.raises(CharRNNError, match="d.txt is not valid UTF-8"):
        dataset.load([folder / "a.txt", folder / "d.txt"], val_frac=0.1)
    empty = folder / "nothing"
    empty.mkdir()
    (empty / "x.bin").write_bytes(b"\0\0")
    with pytest.raises(CharRNNError, match="no UTF-8 text files in"):
        dataset.load([empty], val_frac=0.1)


def test_a_folder_trains_with_the_notices_and_resume_refuses_a_changed_file_by_name(folder, tmp_path):
    notices = []
    result = train_mod.train(
        [folder],
        MODEL,
        {**TRAIN, "steps": 12},
        out=tmp_path / "run",
        report=lambda e: e.kind == "info" and notices.append(e.message),
    )
    assert result.step == 12 and result.best_val is not None
    assert sum("skipped" in n for n in notices) == 5
    ckpt = checkpoint.load(tmp_path / "run" / "last.pt")
    assert [f["path"].rsplit("/", 1)[1] for f in ckpt["files"]] == ["a.txt", "b.md"]
    assert all(len(f["sha256"]) == 64 and f["size"] > 0 for f in ckpt["files"])
    assert checkpoint.describe(tmp_path / "run" / "last.pt")["corpus"].startswith("2 files, ")
    assert train_mod.train(None, {}, {"steps": 16}, out=tmp_path / "run", resume=True).step == 16  # same files
    b = folder / "sub" / "b.md"
    b.write_text(b.read_text(encoding="utf-8") + "MORE\n", encoding="utf-8")
    with pytest.raises(CharRNNError, match=r"b\.md has changed since the run .*bytes then"):
        train_mod.train(None, {}, {"steps": 20}, out=tmp_path / "run", resume=True)
    (folder / "sub" / "b.md").unlink()
    with pytest.raises(CharRNNError, match=r"b\.md is missing from the text being resumed"):
        train_mod.train([folder], {}, {"steps": 20}, out=tmp_path / "run", resume=True)


def test_eval_scores_the_validation_of_every_file(folder, tmp_path, run_cli):
    from charrnn.evaluate import evaluate, evaluate_checkpoint

    train_mod.train([folder], MODEL, {**TRAIN, "steps": 10}, out=tmp_path / "run")
    report = evaluate_checkpoint(tmp_path / "run" / "best.pt")
    model, _ = checkpoint.build_model(checkpoint.load(tmp_path / "run" / "best.pt"))
    data = dataset.load([folder], val_frac=0.1)
    assert report["chars"] == len(data.val) - 1
    assert report["nats_per_char"] == pytest.approx(evaluate(model, data.val, "cpu").nats_per_char, abs=1e-6)
    assert "2 files" in report["text"]
