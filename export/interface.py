"""The documented inputs and outputs of every exported graph (names, dtypes, shapes).

step graph:     tokens int64 [batch]         -> log_probs float32 [batch, vocab]
sequence graph: tokens int64 [batch, time]   -> log_probs float32 [batch, time, vocab]
both, per layer k: state_l{k} float32 [batch, H_k] (LSTM also cell_l{k}) -> state_l{k}_out (cell_l{k}_out).
State inputs are per layer, not one stacked tensor, because pruned layers differ in size.
"""
from __future__ import annotations

import onnx

from compact_lm.cells import get_cell
from compact_lm.config import ModelConfig

from .graph import FLOAT, INT64, tensor

TOKENS = "tokens"
LOG_PROBS = "log_probs"
BATCH, TIME = "batch", "time"
_STATE_PREFIX = {"h": "state", "c": "cell"}


def state_names(config: ModelConfig) -> list[tuple[str, ...]]:
    """Input names of each layer's state: [("state_l0",), ...] or [("state_l0", "cell_l0"), ...]."""
    kinds = get_cell(config.cell).state_names
    return [tuple(f"{_STATE_PREFIX[kind]}_l{k}" for kind in kinds) for k in range(config.layers)]


def out_name(name: str) -> str:
    """Output name of a state input."""
    return f"{name}_out"


def io_names(config: ModelConfig) -> list[str]:
    """Every graph input and output name (what a builder reserves before adding nodes)."""
    states = [name for layer in state_names(config) for name in layer]
    return [TOKENS, LOG_PROBS, *states, *(out_name(name) for name in states)]


def graph_inputs(config: ModelConfig, sequence: bool) -> list[onnx.ValueInfoProto]:
    """tokens, then every layer's state inputs."""
    tokens = tensor(TOKENS, INT64, [BATCH, TIME] if sequence else [BATCH])
    states = [tensor(name, FLOAT, [BATCH, hidden])
              for names, hidden in zip(state_names(config), config.hidden_sizes) for name in names]
    return [tokens, *states]


def graph_outputs(config: ModelConfig, sequence: bool) -> list[onnx.ValueInfoProto]:
    """log_probs, then every layer's state outputs."""
    log_probs = tensor(LOG_PROBS, FLOAT, [BATCH, TIME, config.vocab_size] if sequence else [BATCH, config.vocab_size])
    states = [tensor(out_name(name), FLOAT, [BATCH, hidden])
              for names, hidden in zip(state_names(config), config.hidden_sizes) for name in names]
    return [log_probs, *states]
