"""The Python API: `charrnn.load` for a trained model that samples, streams and scores, and `charrnn.train`
for training from a script. The command line calls these same functions.

    import charrnn
    model = charrnn.load()                       # the newest run under ./checkpoints, else the bundled model
    print(model.sample(200, temp=0.8, prime="ROMEO:", seed=1))
    print(model.score("To be, or not to be").bits_per_char)
    result = charrnn.train("my_text.txt", minutes=1, init="bundled")
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from charrnn.config import ModelConfig, SampleConfig, TrainConfig
from charrnn.errors import CharRNNError

if TYPE_CHECKING:  # torch is imported only when a model is used
    from charrnn.evaluate import EvalResult
    from charrnn.loop import TrainResult
    from charrnn.model import CharRNN
    from charrnn.weights import Weights


class Model:
    """A trained model, ready to sample and score.

    On a CPU it samples with the numpy loop of fastrnn.py from the torch-free weights file beside the
    checkpoint (weights.py), so loading it and sampling import no torch; a checkpoint without one gets it
    written on first use. The torch model is built only for what needs it: another device, an adaptive
    softmax, beam search, scoring.
    """

    def __init__(self, path: Path, device: str = "cpu") -> None:
        from charrnn import weights

        self.path, self.device = Path(path), device
        self._net: Any = None
        found = None
        if device == "cpu":
            found = weights.read(self.path) if self.path.suffix == weights.SUFFIX else weights.for_checkpoint(self.path)
        if found is None:
            found = self._from_checkpoint()
        self.cfg, self.vocab, self._weights = found.cfg, found.vocab, found.tensors
        self.info: dict[str, Any] = {
            "path": str(self.path),
            "model": self.cfg.model,
            "layers": self.cfg.layers,
            "hidden": self.cfg.hidden,
            "embed": self.cfg.embed,
            "shape": f"{self.cfg.model} {self.cfg.layers}x{self.cfg.hidden}",
            "vocab": self.vocab.chars,
            **found.info,
            "files": [Path(f["path"]).name for f in found.info.get("corpus_files", [])],
        }
        self._scorer: Any = None  # a FastRNN for mean_nats, built once: rearranging the weights is the cost

    def _from_checkpoint(self) -> Weights:
        """Load the .pt through torch, and leave the weights file beside it for next time (when the folder
        is writable: a model in a read-only place still samples, only slower to start)."""
        from charrnn import checkpoint, weights
        from charrnn.devices import pick_device
        from charrnn.sample import numpy_weights

        ckpt = checkpoint.load(self.path)
        self._net, vocab = checkpoint.build_model(ckpt, self.path)
        self._net.to(pick_device(self.device)).eval()
        if self.device == "cpu":
            try:
                checkpoint.write_weights(ckpt, self.path)
            except (CharRNNError, OSError):
                pass
        return weights.Weights(numpy_weights(self._net), self._net.cfg, vocab, self.path, weights.info_of(ckpt), "")

    @property
    def net(self) -> CharRNN:
        """The torch model, built on first use (beam search, scoring, a GPU)."""
        if self._net is None:
            import torch

            from charrnn.devices import pick_device
            from charrnn.model import CharRNN

            net = CharRNN(self.cfg)
            net.load_state_dict({k: torch.from_numpy(v) for k, v in self._weights.items()})
            self._net = net.to(pick_device(self.device)).eval()
        return self._net

    @property
    def _numpy(self) -> bool:
        """Whether sampling runs on the torch-free numpy loop (a CPU and a full softmax)."""
        return self.device == "cpu" and not self.cfg.cutoffs

    def __repr__(self) -> str:
        return f"charrnn.Model({self.info['shape']}, {len(self.vocab)} characters, {self.path})"

    def _pieces(self, cfg: SampleConfig, stop: Sequence[str], keep_stop: bool) -> Iterator[tuple[int, str]]:
        from charrnn import fastrnn
        from charrnn.steer import steered, stopped

        if self._numpy:
            rnn = fastrnn.FastRNN(self.cfg, self._weights)
            return stopped(fastrnn.generate(rnn, self.vocab, cfg), cfg.num, stop, keep_stop)
        return steered(self.net, self.vocab, cfg, stop, keep_stop)

    def _config(
        self, length: int, temp: float, prime: str | None, num: int, seed: int | None, **extra: Any
    ) -> SampleConfig:
        flags = {"prime": prime} if prime is not None else {}
        return SampleConfig(length=length, temp=temp, num=num, seed=seed, **flags, **extra)

    def stream(
        self,
        length: int = SampleConfig.length,
        temp: float = SampleConfig.temp,
        prime: str | None = None,
        seed: int | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        stop: Sequence[str] = (),
        keep_stop: bool = False,
    ) -> Iterator[str]:
        """One sample's text as it is generated (the prime not included); ends at `length` characters or
        where it first writes a `stop` string. Characters of the prime the model does not know are skipped."""
        cfg = self._config(length, temp, prime, 1, seed, top_k=top_k, top_p=top_p)
        for _, piece in self._pieces(cfg, stop, keep_stop):
            yield piece

    @overload
    def sample(
        self,
        length: int = ...,
        temp: float = ...,
        prime: str | None = ...,
        num: None = ...,
        seed: int | None = ...,
        top_k: int | None = ...,
        top_p: float | None = ...,
        stop: Sequence[str] = ...,
        keep_stop: bool = ...,
    ) -> str: ...
    @overload
    def sample(
        self,
        length: int = ...,
        temp: float = ...,
        prime: str | None = ...,
        num: int = ...,
        seed: int | None = ...,
        top_k: int | None = ...,
        top_p: float | None = ...,
        stop: Sequence[str] = ...,
        keep_stop: bool = ...,
    ) -> list[str]: ...

    def sample(
        self,
        length: int = SampleConfig.length,
        temp: float = SampleConfig.temp,
        prime: str | None = None,
        num: int | None = None,
        seed: int | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        stop: Sequence[str] = (),
        keep_stop: bool = False,
    ) -> str | list[str]:
        """Generated text (the prime not included): one string, or a list of `num` independent samples
        generated together as one batch. The same seed gives the same text, as `charrnn sample --seed`."""
        cfg = self._config(length, temp, prime, num or 1, seed, top_k=top_k, top_p=top_p)
        texts = [""] * cfg.num
        for i, piece in self._pieces(cfg, stop, keep_stop):
            texts[i] += piece
        return texts if num is not None else texts[0]

    def beam(
        self,
        length: int,
        width: int = 5,
        prime: str | None = None,
        num: int = 1,
        stop: Sequence[str] = (),
        keep_stop: bool = False,
    ) -> list[tuple[str, float]]:
        """The `num` likeliest continuations a beam of `width` finds: (text, mean log-probability per char)."""
        from charrnn.steer import beam_search

        prime = SampleConfig.prime if prime is None else prime
        return beam_search(self.net, self.vocab, prime, width, length, stop, keep_stop, num)

    def mean_nats(self, text: str) -> float | None:
        """Mean nats/char of `text` from a cold state (None under 2 known characters): what `--format jsonl`
        reports for a sample; on the numpy loop when sampling runs there."""
        from charrnn import fastrnn
        from charrnn.steer import nats_per_char

        ids = self.vocab.encode(text, unknown="skip")
        if len(ids) < 2:
            return None
        if self._numpy:
            self._scorer = self._scorer or fastrnn.FastRNN(self.cfg, self._weights)
            return fastrnn.mean_nats(self._scorer, ids)
        return nats_per_char(self.net, self.vocab, text)

    def score(self, text: str) -> EvalResult:
        """How well the model predicts `text`: `.nats_per_char`, `.bits_per_char`, `.perplexity`, `.chars`
        (every character after the first, from a cold state; characters the model does not know are
        skipped). The same figures as `charrnn eval` on a file holding exactly this text."""
        from charrnn.evaluate import evaluate

        ids = self.vocab.encode(text, unknown="skip")
        if len(ids) < 2:
            raise CharRNNError("score needs at least 2 characters the model knows")
        return evaluate(self.net, ids, next(self.net.parameters()).device)


def load(path_or_run: str | os.PathLike | None = None, device: str = "cpu") -> Model:
    """A checkpoint (.pt) or weights file (.safetensors), a run folder (its best.pt), `bundled`, or None:
    the newest run under ./checkpoints, else the model bundled with charrnn."""
    from charrnn import locate

    return Model(locate.resolve(path_or_run), device)


MODEL_FLAGS = {f.name for f in fields(ModelConfig)} - {"vocab_size"}
TRAIN_FLAGS = {f.name for f in fields(TrainConfig)}


def split_flags(flags: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Keyword flags (the command line's, underscored) into model and training flags; None means not given."""
    unknown = set(flags) - MODEL_FLAGS - TRAIN_FLAGS
    if unknown:
        raise CharRNNError(f"unknown training option {sorted(unknown)[0]!r} (see `charrnn train --help`)")
    given = {k: v for k, v in flags.items() if v is not None}
    return (
        {k: v for k, v in given.items() if k in MODEL_FLAGS},
        {k: v for k, v in given.items() if k in TRAIN_FLAGS},
    )


def train(
    corpus: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    *,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    init: str | os.PathLike | None = None,
    report: Callable[[Any], Any] | None = None,
    eval_at_seconds: Sequence[float] = (),
    **flags: Any,
) -> TrainResult:
    """Train a model on one text file or several (files, folders, globs), as `charrnn train` does, with its
    options as keywords (`minutes=5`, `hidden=256`, `val_frac=0.1`, ...). `init`: a checkpoint, run folder
    or "bundled" to fine-tune from. `report` receives every TrainEvent. Returns the TrainResult
    (run_dir, step, elapsed, best_val, ...); load the model with `charrnn.load(result.run_dir)`."""
    from charrnn.loop import train as run

    model_flags, train_flags = split_flags(flags)
    return run(corpus, model_flags, train_flags, out, resume, report, init, eval_at_seconds)
