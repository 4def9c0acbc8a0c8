"""Structured pruning: remove whole hidden units, giving a smaller dense model of the same format.

Removing unit j of layer k takes out, in every gate block, row j of W_ih_lk, W_hh_lk, b_ih_lk and
b_hh_lk (the cell registry's `unit_rows`), column j of W_hh_lk, and column j of whatever reads the
layer's output: W_ih_l(k+1), or head.weight for the top layer. An LSTM unit takes its cell state
along. The layers may end up with different sizes; `hidden_sizes` in the metadata lists them.

Importance of a unit (higher = keep), chosen with `criterion`:
  activation:  std(h_j) * ||outgoing columns of j||_2 on calibration text: the size of the signal
               that removing the unit takes from the units it feeds, after the unit's mean output
               is folded into their biases (see `remove_units`), which the std (not the RMS) reflects.
  reconstruction: greedy selection. Over calibration text, take the unit from which a linear map best
               rebuilds what the layer sends forward (y = W h, W the next layer's W_ih or the head),
               then the unit that best improves that least-squares fit given the first, and so on
               (`reconstruction_order`). Unlike a per-unit score it sees redundancy: of two units that
               carry the same signal it keeps one, and the refit below hands it the other's weights.
  magnitude:   L2 norm of every weight attached to the unit (its rows in and its columns out).
With calibration text, a removed unit's mean output mu_j is folded into the biases downstream:
b += W_out[:, j] * mu_j, so a unit that mostly carried a constant costs nothing to remove; and then
every matrix that reads a pruned layer is refit by least squares so that the kept units give its
readers what all units gave them (`refit_readers`; mean folding is its constant-only special case).

No criterion wins everywhere, so the default is the cell's own (`prune_criterion` in the cell
registry): `reconstruction` for a GRU; `activation` for an LSTM, whose units' cell state carries memory
that their output h, all `reconstruction` looks at, need not show; `activation` for a vanilla RNN.
The runs behind these choices, and the variants of what `reconstruction` rebuilds: docs/experiments.md.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from compact_lm.cells import get_cell
from compact_lm.errors import CompactLMError, Interrupted, SettingError
from compact_lm.model import Model
from compact_lm.network import input_table, run_layers, zero_state

CRITERIA = ("activation", "reconstruction", "magnitude")
# Fine-tuning a pruned model: its own optimizer settings and data pipeline, except these. A pruned model
# is far from where its optimizer settings were tuned: it wants a large step right away, and one that
# decays fully in the short run; distillation from the unpruned model helps. The runs that chose these
# values (learning rate, warm-up, decay, distillation weight, dropout, and the variants not adopted):
# docs/experiments.md, "Fine-tuning a pruned model".
FINETUNE_DROPOUT = 0.0
FINETUNE_LR = 4e-2
FINETUNE_DISTILL = 0.5
FINETUNE_MIN_LR_RATIO = 0.0
FINETUNE_WARMUP_FRACTION = 0.02     # of the fine-tuning steps
# Streams per fine-tuning step, at least (as far as the corpus allows: finetune_batch): a budget of characters
# goes further in fewer, larger steps here
# (the batch-16 quality model, keep 0.5, 20 % of its training characters: 2.0755 val bpc in 520 steps of 64
# streams against 2.0962 in 2,080 of 16; docs/experiments.md, "Fine-tuning a pruned model")
FINETUNE_BATCH = 64
CALIBRATION_CHARS = 20_000


@dataclass
class UnitStatistics:
    """Every unit's output over calibration text: per layer the outputs [N, H], their mean and std."""

    outputs: list[np.ndarray]
    mean: list[np.ndarray]
    std: list[np.ndarray]


def unit_statistics(model: Model, ids: np.ndarray) -> UnitStatistics:
    """Run the calibration ids through the model (from the zero state) and summarise each unit."""
    ids = np.asarray(ids[:CALIBRATION_CHARS], dtype=np.int64)
    if len(ids) < 2:
        raise CompactLMError("calibration text needs at least 2 characters")
    state = zero_state(model.config, 1, model.params["head.bias"].dtype)
    outputs, _ = run_layers(model.params, model.config, ids[:, None], state, input_table(model.params))
    flat = [o[:, 0, :].astype(np.float64) for o in outputs]
    return UnitStatistics(flat, [f.mean(axis=0) for f in flat], [f.std(axis=0) for f in flat])


def _forward_reader(model: Model, k: int) -> np.ndarray:
    """The matrix that carries layer k's output forward: the next layer's W_ih, or the head."""
    return model.params[f"rnn.weight_ih_l{k + 1}" if k + 1 < model.config.layers else "head.weight"]


def _outgoing(model: Model, k: int) -> list[np.ndarray]:
    """Matrices whose columns read layer k's output: W_hh_lk and the next W_ih or the head."""
    return [model.params[f"rnn.weight_hh_l{k}"], _forward_reader(model, k)]


def reconstruction_order(outputs: np.ndarray, reader: np.ndarray) -> np.ndarray:
    """Units in greedy order, each the one that best improves the least-squares rebuild of y = W h.

    W is `reader`, h the calibration outputs [N, H]; the rebuild is from the units chosen so far.

    With the centred covariance A = h_c^T h_c and B = A W^T, the residual after projecting onto the
    chosen set S is kept as A_r = A - A[:, S] A_SS^-1 A[S, :] and B_r = B - A[:, S] A_SS^-1 B[S, :];
    adding unit j lowers the error by ||B_r[j]||^2 / A_r[j, j], and then A_r -= a a^T / a_j and
    B_r -= a B_r[j] / a_j with a = A_r[:, j] (a rank-one Schur update). Units whose residual variance
    is below 1e-9 of the largest unit variance (constants, which the fit's constant term covers, and
    units that are a linear function of the chosen ones) add nothing that can be trusted over rounding
    and come last, in index order.
    """
    centred = outputs - outputs.mean(axis=0)
    residual = centred.T @ centred
    cross = residual @ reader.T.astype(np.float64)
    floor = 1e-9 * max(float(residual.diagonal().max()), 1e-300)
    order: list[int] = []
    remaining = np.ones(len(residual), dtype=bool)
    while remaining.any():
        variance = residual.diagonal().copy()
        usable = remaining & (variance > floor)
        if not usable.any():
            break
        gain = np.where(usable, (cross ** 2).sum(axis=1) / np.where(usable, variance, 1.0), -np.inf)
        j = int(np.argmax(gain))
        a = residual[:, j].copy()
        residual -= np.outer(a, a) / a[j]
        cross -= np.outer(a, cross[j]) / a[j]
        order.append(j)
        remaining[j] = False
    return np.concatenate([np.array(order, dtype=np.int64), np.flatnonzero(remaining)])


def resolve_criterion(model: Model, criterion: str | None) -> str:
    """`criterion` checked, or when None the model's cell's own (the cell registry's `prune_criterion`)."""
    if criterion is None:
        return get_cell(model.config.cell).prune_criterion
    if criterion not in CRITERIA:
        raise SettingError("criterion", "unknown criterion {name!r}; choose one of {choices}", name=criterion, choices=', '.join(CRITERIA))
    return criterion


def unit_scores(model: Model, criterion: str | None, stats: UnitStatistics | None) -> list[np.ndarray]:
    """Importance of every hidden unit of every layer (higher = keep); criterion None: the cell's own."""
    criterion = resolve_criterion(model, criterion)
    if criterion != "magnitude" and stats is None:
        raise SettingError("calibration", "the {name} criterion needs calibration text ({corpus} or {calibration})", name=criterion)
    cell = get_cell(model.config.cell)
    scores = []
    for k, hidden in enumerate(model.config.hidden_sizes):
        if criterion == "reconstruction":
            order = reconstruction_order(stats.outputs[k], _forward_reader(model, k))
            score = np.empty(hidden)
            score[order] = np.arange(hidden, 0, -1)       # first chosen = highest
            scores.append(score)
            continue
        out_sq = sum((w.astype(np.float64) ** 2).sum(axis=0) for w in _outgoing(model, k))
        if criterion == "magnitude":
            rows = [model.params[f"rnn.weight_ih_l{k}"], model.params[f"rnn.weight_hh_l{k}"]]
            in_sq = np.zeros(hidden)
            for gate in range(cell.gates):
                for w in rows:
                    in_sq += (w[gate * hidden:(gate + 1) * hidden].astype(np.float64) ** 2).sum(axis=1)
            scores.append(np.sqrt(in_sq + out_sq))
        else:
            scores.append(stats.std[k] * np.sqrt(out_sq))
    return scores


def remove_units(model: Model, keep: list[np.ndarray], means: list[np.ndarray] | None = None) -> Model:
    """A new model with only the `keep` units of each layer; fold removed units' means into biases."""
    config = model.config
    cell = get_cell(config.cell)
    params = {n: np.array(v, copy=True) for n, v in model.params.items()}
    for k, hidden in enumerate(config.hidden_sizes):
        units = np.sort(np.asarray(keep[k], dtype=np.int64))
        if len(units) < 1 or len(np.unique(units)) != len(units) or units[0] < 0 or units[-1] >= hidden:
            raise CompactLMError(f"layer {k}: cannot keep units {units.tolist()[:8]}... of {hidden}")
        removed = np.setdiff1d(np.arange(hidden), units)
        reader_w = f"rnn.weight_ih_l{k + 1}" if k + 1 < config.layers else "head.weight"
        reader_b = f"rnn.bias_ih_l{k + 1}" if k + 1 < config.layers else "head.bias"
        if means is not None and len(removed):
            mu = means[k][removed]
            # the removed units' average contribution stays, as bias: b += W[:, removed] mu
            params[f"rnn.bias_hh_l{k}"] += (params[f"rnn.weight_hh_l{k}"][:, removed] @ mu).astype(params[reader_b].dtype)
            params[reader_b] += (params[reader_w][:, removed] @ mu).astype(params[reader_b].dtype)
        rows = cell.unit_rows(hidden, units)
        for name in (f"rnn.weight_ih_l{k}", f"rnn.bias_ih_l{k}", f"rnn.bias_hh_l{k}"):
            params[name] = np.ascontiguousarray(params[name][rows])
        params[f"rnn.weight_hh_l{k}"] = np.ascontiguousarray(params[f"rnn.weight_hh_l{k}"][rows][:, units])
        params[reader_w] = np.ascontiguousarray(params[reader_w][:, units])
    sizes = tuple(len(k) for k in keep)
    new_config = type(config)(cell=config.cell, vocab_size=config.vocab_size, embed_size=config.embed_size,
                              hidden_sizes=sizes)
    info = {k: v for k, v in model.info.items() if k != "metrics"}   # the old metrics no longer hold
    return Model(new_config, model.vocab, params, info)


MIN_POSITIONS_PER_WEIGHT = 10


def _least_squares(inputs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(W [out, in], b [out]) minimising ||inputs W^T + b - targets||^2 (minimum-norm solution)."""
    design = np.hstack([inputs, np.ones((len(inputs), 1))])
    solution = np.linalg.lstsq(design, targets, rcond=None)[0]
    return solution[:-1].T, solution[-1]


def refit_readers(model: Model, pruned: Model, keep: list[np.ndarray], outputs: list[np.ndarray]) -> Model:
    """Refit, by least squares over the original's calibration outputs, every matrix that reads a pruned layer.

    For layer k with kept units U and the original's outputs h [N, H_k] (h_prev: the same, one step earlier):
        W_hh'[kept rows], b_hh'[kept rows] = argmin || h_prev[:, U] W'^T + b' - (h_prev W_hh[kept rows]^T + b_hh[kept rows]) ||
    and likewise the next layer's W_ih (its kept rows) or the head from h itself. The kept units then give
    the readers what all units gave them, as far as a linear map of theirs can; the mean folding of
    `remove_units` is the special case of a map from nothing but the constant (what the refit gains:
    docs/experiments.md).

    Only layers that lost units are refit, and only from at least MIN_POSITIONS_PER_WEIGHT calibration
    positions per fitted weight of a row (|U| + 1): from fewer, the fit follows that text rather than
    the model, and mean folding stays.
    """
    cell = get_cell(model.config.cell)
    params = {n: np.array(v, copy=True) for n, v in pruned.params.items()}
    sizes = model.config.hidden_sizes
    for k, (hidden, units) in enumerate(zip(sizes, keep)):
        units = np.sort(np.asarray(units, dtype=np.int64))
        h = outputs[k]
        if len(units) == hidden or len(h) < MIN_POSITIONS_PER_WEIGHT * (len(units) + 1):
            continue
        h_prev = np.vstack([np.zeros((1, hidden)), h[:-1]])
        rows = cell.unit_rows(hidden, units)
        w_hh, b_hh = model.params[f"rnn.weight_hh_l{k}"][rows], model.params[f"rnn.bias_hh_l{k}"][rows]
        fitted = _least_squares(h_prev[:, units], h_prev @ w_hh.T.astype(np.float64) + b_hh)
        params[f"rnn.weight_hh_l{k}"], params[f"rnn.bias_hh_l{k}"] = fitted
        if k + 1 < len(sizes):
            next_rows = cell.unit_rows(sizes[k + 1], np.sort(np.asarray(keep[k + 1], dtype=np.int64)))
            names = (f"rnn.weight_ih_l{k + 1}", f"rnn.bias_ih_l{k + 1}")
            w, b = model.params[names[0]][next_rows], model.params[names[1]][next_rows]
        else:
            names = ("head.weight", "head.bias")
            w, b = model.params[names[0]], model.params[names[1]]
        params[names[0]], params[names[1]] = _least_squares(h[:, units], h @ w.T.astype(np.float64) + b)
    dtype = model.params["head.bias"].dtype
    params = {n: np.ascontiguousarray(v, dtype=dtype) for n, v in params.items()}
    return Model(pruned.config, pruned.vocab, params, pruned.info)


def target_sizes(hidden_sizes: tuple[int, ...], *, keep: float | None = None,
                 hidden: list[int] | None = None) -> tuple[int, ...]:
    """Per-layer sizes after pruning, from a keep fraction or explicit sizes (one, or one per layer)."""
    if (keep is None) == (hidden is None):
        raise SettingError("keep", "give exactly one of {keep} and {hidden}")
    if keep is not None:
        if not 0 < keep <= 1:
            raise SettingError("keep", "{keep} must be in (0, 1], got {got}", got=keep)
        return tuple(max(1, int(round(h * keep))) for h in hidden_sizes)
    sizes = list(hidden) * len(hidden_sizes) if len(hidden) == 1 else list(hidden)
    if len(sizes) != len(hidden_sizes):
        raise SettingError("hidden", "{hidden} needs one size or one per layer ({layers}), got {given}", layers=len(hidden_sizes), given=len(hidden))
    for k, (want, have) in enumerate(zip(sizes, hidden_sizes)):
        if not 1 <= want <= have:
            raise SettingError("hidden", "{hidden} {want} for layer {k}: must be between 1 and the model's {have}", want=want, k=k, have=have)
    return tuple(sizes)


def prune_once(model: Model, sizes: tuple[int, ...], *, criterion: str | None = None,
               calibration_ids: np.ndarray | None = None) -> Model:
    """One round: score units, keep the best `sizes[k]` of each layer; with calibration text, refit the readers."""
    stats = unit_statistics(model, calibration_ids) if calibration_ids is not None else None
    scores = unit_scores(model, criterion, stats)
    # stable ranking: ties go to the lower index, so the result is deterministic
    keep = [np.sort(np.argsort(-s, kind="stable")[:n]) for s, n in zip(scores, sizes)]
    pruned = remove_units(model, keep, stats.mean if stats is not None else None)
    return refit_readers(model, pruned, keep, stats.outputs) if stats is not None else pruned


def finetune_config(model: Model, steps: int, *, corpus: tuple[str, ...] | None = None, train_chars: int | None = None,
                    **overrides):
    """The model's own training config (data pipeline, optimizer), with a budget of `steps` and the
    fine-tuning settings above (dropout, learning rate and its schedule, distillation, finetune_batch's streams),
    which `overrides` may replace. `train_chars`: the length of the training split, if the caller has it (else the
    corpus is read to know it)."""
    from compact_lm.config import TrainConfig
    saved = dict(model.info.get("train_config") or {})
    if not saved and not corpus:
        raise SettingError("corpus", "the model carries no training config: give {corpus} for fine-tuning")
    saved.update(dropout=FINETUNE_DROPOUT, lr=FINETUNE_LR, distill=FINETUNE_DISTILL, min_lr_ratio=FINETUNE_MIN_LR_RATIO,
                 teacher=None, init=None)
    saved.update(_budget(saved, steps))
    if corpus:
        saved["corpus"] = list(corpus)
    saved.update(overrides)
    config = TrainConfig.from_json(saved)
    if "batch" not in overrides:
        if train_chars is None:
            from compact_lm.trainer import prepare_corpus
            train_chars = len(prepare_corpus(config, model.vocab).train)
        config = replace(config, batch=finetune_batch(config.batch, config.seq_len, train_chars))
    return config


def finetune_batch(batch: int, seq_len: int, train_chars: int) -> int:
    """Streams per fine-tuning step: the model's own `batch`, raised to FINETUNE_BATCH as far as a training split of
    `train_chars` characters gives every stream a window of `seq_len` (a short corpus keeps fewer)."""
    fits = (train_chars - seq_len) // seq_len   # the most streams with one window each (data.StreamBatcher)
    return max(batch, min(FINETUNE_BATCH, fits))


def finetune_budget(train_steps: int, train_batch: int, fraction: float, finetune_streams: int) -> int:
    """Fine-tuning steps of `finetune_streams` streams that read `fraction` of the characters that `train_steps`
    steps of `train_batch` streams read (the same window length): at least 1, but none for a fraction of 0."""
    if fraction <= 0:
        return 0
    return max(1, int(round(fraction * train_steps * train_batch / finetune_streams)))


def _budget(settings: dict, steps: int) -> dict:
    """A fine-tuning budget of `steps`: evaluate about 4 times, warm up for FINETUNE_WARMUP_FRACTION of it."""
    return {"steps": steps, "epochs": None, "minutes": None,
            "eval_every": max(1, min(settings.get("eval_every", 200), steps // 4 or 1)),
            "warmup_steps": int(round(FINETUNE_WARMUP_FRACTION * steps))}


def finetune(model: Model, config, out_dir, *, teacher: Model | None = None, progress: bool = False) -> Model:
    """Train `model` further with the trainer (same optimizer and data pipeline), distilling from `teacher`
    when config.distill > 0; returns the best by val bpc."""
    from compact_lm.trainer import Trainer
    return Trainer(config, out_dir, init_model=model, teacher=teacher, progress=progress).run().model


def calibration_ids_from_corpus(model: Model, config) -> np.ndarray:
    """The last CALIBRATION_CHARS characters of the training split (never validation text)."""
    from compact_lm.trainer import prepare_corpus
    return prepare_corpus(config, model.vocab).train[-CALIBRATION_CHARS:]


def round_sizes(hidden_sizes: tuple[int, ...], sizes: tuple[int, ...], rounds: int) -> list[tuple[int, ...]]:
    """The hidden sizes after each of `rounds` rounds, a geometric schedule: after round r, H_k (goal / H_k)^(r / rounds)
    rounded; a one-line SettingError when some round would remove no unit (and fine-tune for nothing)."""
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise SettingError("rounds", "{rounds} must be >= 1, got {got}", got=rounds)
    start, goal = np.array(hidden_sizes, dtype=np.float64), np.array(sizes, dtype=np.float64)
    schedule = [tuple(int(round(x)) for x in start * (goal / start) ** (r / rounds)) for r in range(1, rounds + 1)]
    for before, after in zip([tuple(hidden_sizes), *schedule], schedule):
        if before == after and rounds > 1:
            raise SettingError("rounds", "{rounds} {got}: a round would remove no unit going from {start} to {goal} "
                               "units (give fewer rounds)", got=rounds, start=list(hidden_sizes), goal=list(sizes))
    return schedule


def prune_model(model: Model, sizes: tuple[int, ...], *, criterion: str | None = None, rounds: int = 1,
                finetune_steps: int = 0, train_config=None, calibration_ids: np.ndarray | None = None,
                work_dir=None, progress: bool = False, log=None, val_ids: np.ndarray | None = None,
                unpruned_val_bpc: float | None = None) -> Model:
    """Prune to `sizes` in `rounds` equal geometric steps, fine-tuning after each (finetune_steps in all).

    Each fine-tuning run works in a temporary folder (inside `work_dir` if given), removed afterwards.
    With fine-tuning, `log` gets the unpruned model's val bpc (`unpruned_val_bpc` if the caller has it)
    and each round's right after pruning and after fine-tuning, which info["pruning"] keeps too; the
    validation split comes from `train_config` unless the caller passes it as `val_ids`.
    """
    import tempfile
    from pathlib import Path
    criterion = resolve_criterion(model, criterion)
    if finetune_steps < 0:
        raise SettingError("finetune_steps", "{finetune_steps} must be >= 0, got {got}", got=finetune_steps)
    schedule = round_sizes(model.config.hidden_sizes, sizes, rounds)
    history = list(model.info.get("pruning", []))
    if finetune_steps:
        from compact_lm.trainer import prepare_corpus
        if train_config is None:
            raise CompactLMError("fine-tuning needs a training config (see finetune_config)")
        if val_ids is None:
            val_ids = prepare_corpus(train_config, model.vocab).val
        if log:
            unpruned = unpruned_val_bpc if unpruned_val_bpc is not None else model.evaluate_ids(val_ids).bpc
            log(f"unpruned: hidden {list(model.config.hidden_sizes)}, val {unpruned:.4f} bpc")
    current = model
    for r, step_sizes in enumerate(schedule, start=1):
        current = prune_once(current, step_sizes, criterion=criterion, calibration_ids=calibration_ids)
        entry = {"round": r, "hidden_sizes": list(step_sizes), "criterion": criterion}
        steps = finetune_steps // rounds + (finetune_steps % rounds if r == rounds else 0)
        if steps:
            before = current.evaluate_ids(val_ids)
            entry["val_bpc_before_finetune"] = before.bpc
            settings = train_config.to_json()
            config = train_config.__class__.from_json({**settings, **_budget(settings, steps)})
            if work_dir is not None:
                Path(work_dir).mkdir(parents=True, exist_ok=True)
            try:
                with tempfile.TemporaryDirectory(prefix="compact-lm-finetune-", dir=work_dir) as folder:
                    tuned = finetune(current, config, Path(folder) / "run", teacher=model, progress=progress)
            except Interrupted:   # the trainer's "state saved ... --resume" is about a folder that is now gone
                raise Interrupted(f"interrupted while fine-tuning round {r}: no pruned model was written; run the "
                                  "command again to start over") from None
            except OSError as error:   # the temporary folder could not be made
                raise CompactLMError(f"cannot write in {work_dir or tempfile.gettempdir()}: "
                                     f"{error.strerror or error}") from None
            entry["finetune_steps"] = steps
            entry["val_bpc_after_finetune"] = tuned.info.get("metrics", {}).get("val", {}).get("bpc")
            # the trainer keeps its best checkpoint, but never the model it started from: keep that one if
            # no checkpoint beats it (a very short run at a large learning rate can end worse)
            after = entry["val_bpc_after_finetune"]
            if after is None or after <= entry["val_bpc_before_finetune"]:
                current = tuned
            else:
                entry["kept_the_pruned_model"] = True
                current.info["metrics"] = {"val": before.to_json()}   # as a fine-tuned model's: what callers read
        if log:
            log(f"round {r}/{rounds}: hidden {list(step_sizes)}" +
                (f", val {entry['val_bpc_before_finetune']:.4f} bpc after pruning, "
                 f"{entry['val_bpc_after_finetune']:.4f} after {steps} fine-tuning steps" if steps else "") +
                ("; kept the model before fine-tuning" if entry.get("kept_the_pruned_model") else ""))
        history.append(entry)
    current.info["pruning"] = history
    # the source's words, whichever text fine-tuning read (its trainer saves that text's)
    current.info.pop("lexicon", None)
    if model.info.get("lexicon") is not None:
        current.info["lexicon"] = model.info["lexicon"]
    return current
