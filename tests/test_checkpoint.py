"""Checkpoints: identical logits after a round trip, atomic writes, finding the right run."""

import os
import time

import torch

from charrnn import checkpoint, weights
from charrnn.config import ModelConfig, to_dict
from charrnn.model import CharRNN
from charrnn.vocab import Vocab


def make(tmp_path, name="run", cell="gru"):
    torch.manual_seed(1)
    vocab = Vocab.from_text("hello world\n")
    cfg = ModelConfig(model=cell, vocab_size=len(vocab), embed=8, hidden=12, layers=2)
    model = CharRNN(cfg).eval()
    run = tmp_path / name
    run.mkdir(parents=True, exist_ok=True)
    checkpoint.save({"model": model.state_dict(), "model_config": to_dict(cfg), "vocab": vocab.chars}, run / "best.pt")
    return model, run / "best.pt"


def test_round_trip_gives_identical_logits(tmp_path):
    model, path = make(tmp_path)
    raw = torch.load(path, weights_only=True)  # plain data: loads with weights_only
    assert raw["format"] == "charrnn" and raw["version"] == checkpoint.FORMAT_VERSION
    loaded, vocab = checkpoint.build_model(checkpoint.load(path), path)
    ids = torch.randint(0, len(vocab), (2, 30))
    assert torch.equal(loaded.eval()(ids)[0], model(ids)[0])


def test_a_save_that_dies_midway_leaves_the_old_checkpoint_whole(tmp_path, monkeypatch):
    """The disk fills half-way through writing: the previous checkpoint must still be there, byte for byte
    (a plain torch.save over the target would leave half a file), and no temporary file is left behind."""
    import io

    import pytest

    from charrnn.errors import CharRNNError

    _, path = make(tmp_path)
    before = path.read_bytes()
    real_save = torch.save

    def dies_midway(obj, f, *args, **kwargs):
        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        half = buf.getvalue()[: len(buf.getvalue()) // 2]
        if isinstance(f, (str, os.PathLike)):
            with open(f, "wb") as out:
                out.write(half)
        else:
            f.write(half)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(CharRNNError, match="could not write checkpoint .*No space left.*previous checkpoint is kept"):
        checkpoint.save({"model": {}, "model_config": {}, "vocab": "ab"}, path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(path.parent)) == ["best.pt", "best.safetensors"]  # no temporary file left
    assert weights.for_checkpoint(path) is not None  # the weights file still belongs to the old checkpoint


def test_save_replaces_atomically_and_leaves_no_temp_files(tmp_path):
    _, path = make(tmp_path)
    before = path.read_bytes()
    checkpoint.save({"model": {}, "model_config": {}, "vocab": "ab"}, path)
    assert path.read_bytes() != before
    assert sorted(os.listdir(path.parent)) == ["best.pt", "best.safetensors"]


def test_resolve_folder_file_and_newest_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, old = make(tmp_path / "checkpoints", "old")
    time.sleep(0.02)
    _, new = make(tmp_path / "checkpoints", "new")
    os.utime(old, (time.time() - 100, time.time() - 100))
    assert checkpoint.resolve(None).resolve() == new.resolve()
    assert checkpoint.resolve(old.parent) == old
    assert checkpoint.resolve(str(old)) == old


def test_info_shows_the_corpus_path_only_where_that_file_is(tiny_run, tmp_path):
    """A model trained elsewhere (the bundled one) records a path from someone else's disk: show its name."""
    best = tiny_run.run_dir / "best.pt"
    assert checkpoint.describe(best)["corpus"].startswith(f"{tiny_run.corpus} (")
    ckpt = checkpoint.load(best)
    ckpt["corpus"]["path"] = "/home/someone/else/tiny.txt"
    checkpoint.save({k: v for k, v in ckpt.items() if k not in ("format", "version")}, tmp_path / "moved.pt")
    assert checkpoint.describe(tmp_path / "moved.pt")["corpus"].startswith("tiny.txt (")
