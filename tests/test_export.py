"""charrnn export: an ONNX step model that onnxruntime runs to charrnn's own logits over 100 steps at any
batch size, with the vocabulary beside it; the safetensors weights file; a clear refusal, and no file,
for what cannot be exported."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from charrnn import checkpoint, weights
from charrnn.config import ModelConfig, to_dict
from charrnn.model import CharRNN
from charrnn.vocab import Vocab

ort = pytest.importorskip("onnxruntime")  # the test extra installs it

VOCAB = Vocab.from_text("abcdefgh ijklmnop\n.,")


def save_model(tmp_path, kind: str, **cfg) -> tuple[CharRNN, object]:
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(model=kind, vocab_size=len(VOCAB), layers=2, hidden=24, embed=8, **cfg)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)  # a "trained" model, not the initial one
    path = tmp_path / f"{kind}.pt"
    checkpoint.save({"model": model.state_dict(), "model_config": to_dict(model.cfg), "vocab": VOCAB.chars}, path)
    return model, path


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_the_onnx_step_model_matches_charrnn_over_100_steps_at_any_batch(kind, tmp_path, run_cli):
    model, path = save_model(tmp_path, kind)
    code, _, err = run_cli("export", path, "--format", "onnx", "--out", tmp_path / "m.onnx")
    assert code == 0, err
    meta = json.loads((tmp_path / "m.json").read_text(encoding="utf-8"))
    assert meta["vocab"] == VOCAB.chars and meta["inputs"][0] == "ids"
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        ids = torch.randint(0, len(VOCAB), (batch, 100))  # (B, T)
        with torch.no_grad():
            want, _ = model(ids)  # (B, T, V) the whole sequence in one call
        state = {n: np.zeros((2, batch, 24), np.float32) for n in meta["inputs"][1:]}
        for t in range(100):
            logits, *new = session.run(None, {"ids": ids[:, t].numpy(), **state})
            np.testing.assert_allclose(logits, want[:, t].numpy(), atol=1e-4, rtol=1e-4)
            state = dict(zip(meta["inputs"][1:], new))


def test_the_readme_onnx_sampler_runs_with_onnxruntime_alone(tmp_path, run_cli):
    _, path = save_model(tmp_path, "gru")
    assert run_cli("export", path, "--out", tmp_path / "model.onnx")[0] == 0
    readme = (checkpoint.BUNDLED.parent.parent.parent / "README.md").read_text(encoding="utf-8")
    code = readme.split("<!-- onnx-sampler -->")[1].split("```python")[1].split("```")[0]
    namespace: dict = {}
    exec(
        compile(
            code.replace('"model.onnx"', repr(str(tmp_path / "model.onnx"))).replace(
                '"model.json"', repr(str(tmp_path / "model.json"))
            ),
            "README",
            "exec",
        ),
        namespace,
    )  # noqa: S102
    assert len(namespace["text"]) == 200 and set(namespace["text"]) <= set(VOCAB.chars)


def test_safetensors_export_is_the_weights_file(tmp_path, run_cli):
    model, path = save_model(tmp_path, "lstm")
    code, _, err = run_cli("export", path, "--format", "safetensors", "--out", tmp_path / "w.safetensors")
    assert code == 0, err
    found = weights.read(tmp_path / "w.safetensors")
    assert found.vocab.chars == VOCAB.chars and found.cfg == model.cfg
    for key, tensor in model.state_dict().items():
        np.testing.assert_array_equal(found.tensors[key], tensor.numpy())


def test_what_cannot_be_exported_is_refused_and_nothing_is_written(tmp_path, run_cli):
    big = Vocab("".join(chr(0x4E00 + i) for i in range(1200)))
    model = CharRNN(ModelConfig(model="gru", vocab_size=len(big), layers=1, hidden=16, embed=8, cutoffs=(500,)))
    path = tmp_path / "adaptive.pt"
    checkpoint.save({"model": model.state_dict(), "model_config": to_dict(model.cfg), "vocab": big.chars}, path)
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = run_cli("export", path, "--out", tmp_path / "a.onnx")
    assert code == 1 and out == "" and "adaptive softmax cannot be exported to ONNX" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    code, _, err = run_cli("export", path, "--format", "tflite")
    assert code == 1 and "--format must be one of onnx, safetensors" in err
    _, lstm = save_model(tmp_path, "lstm")
    shutil.rmtree(tmp_path / "nowhere", ignore_errors=True)
    code, _, err = run_cli("export", lstm, "--out", tmp_path / "nowhere" / "m.onnx")
    assert code == 1 and "does not exist" in err


def test_onnx_export_without_its_extra_names_the_extra(tmp_path, run_cli, monkeypatch):
    import importlib.util

    _, path = save_model(tmp_path, "gru")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))
    code, out, err = run_cli("export", path, "--out", tmp_path / "m.onnx")
    assert code == 1 and "pip install 'charrnn[export]'" in err and not (tmp_path / "m.onnx").exists()
