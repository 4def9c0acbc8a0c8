"""Before training: can any candidate of the search space fit the byte budget?

A shipped file's bytes depend on its shapes, not on its trained values: the same arrays, and metadata that
training only adds to (metrics, steps, pruning history). So an untrained model of a candidate's shapes,
exported, gives a lower bound of the trained candidate's file. The smallest candidate of every cell and
precision is the one with the fewest layers, the smallest sizes and the smallest keep fraction: if even
those exceed the budget, the search is refused before it starts.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from compact_lm.config import TrainConfig
from compact_lm.errors import SettingError

SHOWN = 3   # smallest candidates the refusal lists


def lower_bound_bytes(train_config: TrainConfig, vocab, keep: float, precision: str, lexicon: dict | None = None) -> int:
    """The .onnx bytes of an untrained model of this architecture, pruned to `keep`, in `precision`, carrying
    `lexicon` (the metadata value every model trained on the corpus carries: compact_lm/lexicon.py)."""
    from compact_lm.export import build_model
    from compact_lm.model import Model
    from compact_lm.network import init_params
    from .prune import target_sizes
    from .quantize import quantize_model
    from .search_candidates import deterministic_info
    shape = train_config.model_config(vocab.size)
    shape = dataclasses.replace(shape, hidden_sizes=target_sizes(shape.hidden_sizes, keep=keep))
    # the metadata a shipped candidate carries at least: its train_config with the corpus as file names
    model = Model(shape, vocab, init_params(shape, np.random.default_rng(0), np.float32),
                  deterministic_info({"steps": 0, "train_config": train_config.to_json(),
                                      **({"lexicon": lexicon} if lexicon is not None else {})}))
    if precision == "int8":
        model = quantize_model(model)
    return len(build_model(model).SerializeToString())


def oversized(model, keeps, precisions, max_bytes: int | None) -> dict[tuple[float, str], int]:
    """{(keep, precision): lower bound of its file's bytes} of the candidates that cannot fit `max_bytes`: the
    bound is an untrained model of the same shapes, exported, so they need not be made."""
    if max_bytes is None:
        return {}
    config = TrainConfig.from_json(model.info["train_config"])
    lexicon = model.info.get("lexicon")
    bounds = {(float(k), p): lower_bound_bytes(config, model.vocab, k, p, lexicon) for k in keeps for p in precisions}
    return {key: size for key, size in bounds.items() if size > max_bytes}


def can_fit(config, train_config: TrainConfig, vocab, lexicon: dict | None = None) -> bool:
    """Whether some candidate of this architecture (its smallest keep fraction, either precision) can fit."""
    keep = min(config.space.keeps)
    return any(lower_bound_bytes(train_config, vocab, keep, p, lexicon) <= config.max_bytes for p in config.space.precisions)


def smallest_candidates(config, configs: list[TrainConfig], vocab, lexicon: dict | None = None) -> list[tuple[int, str]]:
    """(lower bound of bytes, description) of the smallest candidate of each cell and precision, smallest first."""
    space = config.space
    keep = min(space.keeps)
    rows = []
    for cell in space.cells:
        of_cell = [c for c in configs if c.cell == cell] or [dataclasses.replace(configs[0], cell=cell)]
        corner = dataclasses.replace(of_cell[0], layers=min(space.layers), embed=min(space.embed),
                                     hidden=min(space.hidden), dropout=min(space.dropout))
        for precision in space.precisions:
            bound = lower_bound_bytes(corner, vocab, keep, precision, lexicon)
            rows.append((bound, f"{cell} L{corner.layers} E{corner.embed} H{corner.hidden} keep {keep:g} {precision}"))
    return sorted(rows)


def check_byte_budget(config, configs: list[TrainConfig], vocab, lexicon: dict | None = None) -> None:
    """Refuse in one line, listing the smallest candidates, if none of the space can fit config.max_bytes."""
    rows = smallest_candidates(config, configs, vocab, lexicon)
    if rows[0][0] > config.max_bytes:
        listed = ", ".join(f"{name} (at least {size:,} bytes)" for size, name in rows[:SHOWN])
        raise SettingError("max_bytes", "no candidate of the search space fits {max_bytes} {budget}: the smallest are "
                           "{listed}; raise {max_bytes} or add smaller sizes or keep fractions to the space",
                           budget=f"{config.max_bytes:,}", listed=listed)
