"""Models that leave Python: `charrnn export` writes a checkpoint as an ONNX step model (character ids and
the hidden state in, logits and the new state out, any batch size) with its vocabulary in a JSON file
beside it, or as the safetensors weights file that charrnn's own torch-free sampler reads.

Every file is written to a temporary name and renamed when complete, so a failed export never leaves a
half-written file; what cannot be exported is refused before anything is written.
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from charrnn import checkpoint
from charrnn.atomic import replace_with
from charrnn.errors import CharRNNError
from charrnn.model import CharRNN

FORMATS = ("onnx", "safetensors")
ONNX_OPSET = 17


class StepModel(nn.Module):
    """One character per row: ids (B,) and the state (L, B, H) each -> logits (B, V) and the new state.
    An LSTM's state is h and c, a GRU's and a tanh RNN's h alone."""

    def __init__(self, model: CharRNN) -> None:
        super().__init__()
        self.model = model.eval()
        self.lstm = model.cfg.model == "lstm"

    def forward(self, ids: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.model.embed(ids.unsqueeze(1))  # (B, 1, E)
        out, new = self.model.rnn(x, tuple(state) if self.lstm else state[0])  # (B, 1, H)
        logits = self.model.head(out[:, 0])  # (B, V)
        return (logits, *new) if self.lstm else (logits, new)


def state_names(model: CharRNN) -> list[str]:
    return ["h", "c"] if model.cfg.model == "lstm" else ["h"]


def export(source: Path, fmt: str, out: Path) -> list[Path]:
    """Write `source` (a checkpoint) as `fmt` to `out`; returns the files written."""
    if fmt not in FORMATS:
        raise CharRNNError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    ckpt = checkpoint.load(source)
    model, vocab = checkpoint.build_model(ckpt, source)
    out = Path(out)
    if out.parent and not out.parent.exists():
        raise CharRNNError(f"the folder of --out {out} does not exist (create it, or choose another --out)")
    if fmt == "safetensors":  # the weights file the sampler keeps beside a checkpoint, written to `out`
        checkpoint.write_weights(ckpt, source, out)
        return [out]
    if importlib.util.find_spec("onnx") is None:
        raise CharRNNError("ONNX export needs the onnx package: pip install 'charrnn[export]'")
    if model.adaptive:
        raise CharRNNError(
            "a model with an adaptive softmax cannot be exported to ONNX (its output layer has no ONNX form "
            "here): export it with --format safetensors"
        )
    meta = out.with_suffix(".json")
    try:
        replace_with(out, lambda tmp: _write_onnx(model, tmp))
    except (RuntimeError, ValueError, TypeError) as e:  # what the exporter raises for what it cannot trace
        raise CharRNNError(f"could not export to {out}: {str(e).splitlines()[0][:200]}") from None
    description = {
        "format": "charrnn-onnx-step",
        "vocab": vocab.chars,
        "model_config": ckpt["model_config"],
        "inputs": ["ids", *state_names(model)],
        "outputs": ["logits", *[f"new_{n}" for n in state_names(model)]],
        "state_shape": ["layers", "batch", "hidden"],
        "layers": model.cfg.layers,
        "hidden": model.cfg.hidden,
    }
    replace_with(meta, lambda tmp: tmp.write_text(json.dumps(description, ensure_ascii=False, indent=1), "utf-8"))
    return [out, meta]


def _write_onnx(model: CharRNN, path: Path) -> None:
    cfg = model.cfg
    names = state_names(model)
    ids = torch.zeros(2, dtype=torch.long)  # (B,) a batch of 2 so that the batch axis is traced as one
    state = tuple(torch.zeros(cfg.layers, 2, cfg.hidden) for _ in names)  # (L, B, H) each
    axes = {"ids": {0: "batch"}, "logits": {0: "batch"}}
    axes |= {n: {1: "batch"} for n in names} | {f"new_{n}": {1: "batch"} for n in names}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and RNN-batch notices
        torch.onnx.export(
            StepModel(model),
            (ids, *state),
            str(path),
            input_names=["ids", *names],
            output_names=["logits", *[f"new_{n}" for n in names]],
            dynamic_axes=axes,
            opset_version=ONNX_OPSET,
            dynamo=False,  # the TorchScript exporter: no onnxscript needed, and it knows nn.LSTM/GRU/RNN
        )
