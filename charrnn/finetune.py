"""Starting a run from a trained model (`charrnn train NEW_TEXT --init CHECKPOINT`): the vocabulary grows by
the new text's characters, and the model grows with it so that at step 0 it predicts exactly as before.

The vocabulary stays sorted by code point (ids are positions in that order), so the old characters'
rows move to their places in the merged vocabulary and the new characters get fresh rows: small random
embeddings and an output row that gives them (next to) no probability until training teaches them.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from charrnn.errors import CharRNNError
from charrnn.model import CharRNN
from charrnn.vocab import Vocab

NEW_EMBED_STD = 0.01  # new characters start near the origin of the embedding space
# and with a logit this far below the least likely old character: e^-16 ~ 1e-7 of its probability each, so
# the old predictions move by well under 1e-6, yet Adam closes the gap in tens of steps (each step moves
# a logit by about lr x the summed magnitude of the hidden state)
NEW_LOGIT = -16.0


def merged_vocab(old: Vocab, text_chars: str) -> Vocab:
    """The old characters plus the new text's, sorted by code point as every vocabulary is."""
    return Vocab("".join(sorted(set(old.chars) | set(text_chars))))


@torch.no_grad()
def extend(model: CharRNN, old: Vocab, new: Vocab) -> CharRNN:
    """`model` (for `old`) as a model for `new` (a superset): the same predictions for the old characters
    at step 0, the new ones with about zero probability; everything but the vocabulary rows is copied."""
    if new == old:
        return model
    if not set(old.chars) <= set(new.chars):
        raise CharRNNError("the new vocabulary must hold every character of the model's own")
    if model.adaptive or model.cfg.tie_weights:
        raise CharRNNError(
            "--init with characters the model has never seen is not supported for a model with an adaptive "
            "softmax or tied weights; train on text of the model's own characters, or start a new run"
        )
    at = torch.as_tensor(new.encode(old.chars))  # (V_old,) where each old character sits in the new vocab
    grown = CharRNN(replace(model.cfg, vocab_size=len(new)))
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(("embed.", "head."))}
    grown.load_state_dict(state, strict=False)
    fresh = torch.ones(len(new), dtype=torch.bool)
    fresh[at] = False
    grown.embed.weight.normal_(0.0, NEW_EMBED_STD)
    grown.embed.weight[at] = model.embed.weight
    grown.head.weight.zero_()
    grown.head.weight[at] = model.head.weight
    grown.head.bias.fill_(NEW_LOGIT)
    grown.head.bias[at] = model.head.bias
    grown.head.bias[fresh] += model.head.bias.min()  # below the least likely old character, whatever the scale
    return grown


def id_map(corpus: Vocab, model: Vocab) -> np.ndarray | None:
    """Corpus id -> model id, (V_corpus,), when the model's vocabulary is a larger one; None when equal."""
    if corpus == model:
        return None
    if not set(corpus.chars) <= set(model.chars):
        raise CharRNNError("the corpus has characters the model does not know")
    return model.encode(corpus.chars)  # (V_corpus,) int64
