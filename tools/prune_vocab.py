"""Drop rare characters from a model's vocabulary: their embedding rows and output rows go, and they read as <unk>.

A character-level model's vocabulary is every character of its training text, rare ones included
(a stray '$' or '&'). Each costs a row of the embedding (E floats), of the input table of the
exported graph (G*H) and of the head (H + 1). Dropping character c, read as <unk> from then on:
  - input side: <unk>'s embedding becomes the count-weighted mean of the embeddings it now stands
    for (its own and the dropped characters'), e_unk = sum_c n_c e_c / sum_c n_c;
  - output side: <unk> should get the probability all of them had, i.e. the logit
    z_unk(h) = log sum_c exp(w_c . h + b_c). That is not linear in h; (w_unk, b_unk) is its least-
    squares fit over the model's outputs h on calibration text, exact when the rows w_c are equal.
    From fewer than MIN_POSITIONS_PER_WEIGHT positions per fitted weight (H + 1) the fit would follow
    the text, so then w_unk is the count-weighted mean row and b_unk = log sum_c exp(b_c) (also exact
    when the rows are equal).
Every other character keeps its rows, so its logit is unchanged.
"""
from __future__ import annotations

import numpy as np

from compact_lm.errors import SettingError
from compact_lm.lexicon import Lexicon
from compact_lm.model import Model
from compact_lm.vocab import UNK_ID, Vocab

from .prune import MIN_POSITIONS_PER_WEIGHT, _least_squares, unit_statistics


def character_counts(model: Model, ids: np.ndarray) -> np.ndarray:
    """How often each token id of the model's vocabulary occurs in `ids`."""
    return np.bincount(np.asarray(ids, dtype=np.int64), minlength=model.vocab.size)


def drop_rare_characters(model: Model, counts: np.ndarray, min_count: int,
                         calibration_ids: np.ndarray) -> tuple[Model, list[str]]:
    """A model without the characters seen fewer than `min_count` times (per `counts`), and the list of them."""
    if min_count < 0:
        raise SettingError("min_char_count", "{min_char_count} must be >= 0, got {min_count}", min_count=min_count)
    tokens = model.vocab.tokens
    dropped = [i for i in range(1, len(tokens)) if counts[i] < min_count]
    if not dropped:
        return model, []
    kept = [UNK_ID] + [i for i in range(1, len(tokens)) if counts[i] >= min_count]
    if len(kept) == 1:
        raise SettingError("min_char_count", "{min_char_count} {min_count} would drop every character of the vocabulary", min_count=min_count)
    merged = [UNK_ID, *dropped]              # what <unk> stands for from now on
    params = {n: np.array(v, copy=True) for n, v in model.params.items()}
    weights = counts[merged].astype(np.float64)
    if weights.sum() > 0:
        embedding = model.params["embedding.weight"][merged].astype(np.float64)
        params["embedding.weight"][UNK_ID] = weights @ embedding / weights.sum()
    rows = model.params["head.weight"][merged].astype(np.float64)
    biases = model.params["head.bias"][merged].astype(np.float64)
    if len(calibration_ids) >= MIN_POSITIONS_PER_WEIGHT * (rows.shape[1] + 1):
        hidden = unit_statistics(model, calibration_ids).outputs[-1]
        params["head.weight"][UNK_ID], params["head.bias"][UNK_ID] = (
            part[0] for part in _least_squares(hidden, _log_sum_exp(hidden @ rows.T + biases)[:, None]))
    else:
        share = weights / weights.sum() if weights.sum() > 0 else np.full(len(merged), 1.0 / len(merged))
        params["head.weight"][UNK_ID] = share @ rows
        params["head.bias"][UNK_ID] = _log_sum_exp(biases[None])[0]
    for name in ("embedding.weight", "head.weight", "head.bias"):
        params[name] = np.ascontiguousarray(params[name][kept])
    vocab = Vocab(tuple(tokens[i] for i in kept[1:]), nfc=model.vocab.nfc, lowercase=model.vocab.lowercase)
    config = type(model.config)(cell=model.config.cell, vocab_size=vocab.size, embed_size=model.config.embed_size,
                                hidden_sizes=model.config.hidden_sizes)
    info = {k: v for k, v in model.info.items() if k != "metrics"}
    if model.lexicon is not None:   # a word holding a dropped character can no longer be spelled
        gone = {tokens[i] for i in dropped}
        info["lexicon"] = Lexicon(w for w in model.lexicon.words if gone.isdisjoint(w)).to_json()
    return Model(config, vocab, params, info), [tokens[i] for i in dropped]


def _log_sum_exp(logits: np.ndarray) -> np.ndarray:
    """log sum_j exp(logits[:, j]), without overflow."""
    top = logits.max(axis=1, keepdims=True)
    return (top + np.log(np.exp(logits - top).sum(axis=1, keepdims=True)))[:, 0]
