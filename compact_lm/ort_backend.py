"""The onnxruntime backend: an exported `.onnx` behind the Backend protocol (imports numpy and onnxruntime only).

Everything needed to turn text into ids and back comes from the file's metadata_props (read through
`session.get_modelmeta().custom_metadata_map`). Values are strings: `kind`, `cell`, `dtype` and
`graph` verbatim, every other key a JSON document (numbers, booleans, lists, objects).

onnxruntime keeps no state between calls, so the recurrent state is an explicit input and output;
each call has a fixed cost of a few microseconds in Python, which dominates small models, so the
per-call work here is one dict update and one `session.run`.
"""
from __future__ import annotations

import json
import os
from itertools import chain
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .config import ModelConfig
from .errors import CompactLMError
from .vocab import Vocab

ONNX_KIND = "compact-lm-onnx"
ONNX_FORMAT_VERSION = 1
STRING_KEYS = frozenset({"kind", "cell", "dtype", "graph"})   # stored verbatim; all other values are JSON
KEYS_KEY = "metadata_keys"   # the list of every key written, so an entry lost from a cut-off file is noticed
TOKENS, LOG_PROBS = "tokens", "log_probs"
GRAPH_KINDS = ("step", "sequence")
_INT64 = np.dtype(np.int64)


def decode_metadata(props: dict[str, str]) -> dict:
    """metadata_props strings -> values (JSON-decoded except STRING_KEYS); raises ValueError if damaged."""
    meta = {}
    for key, text in props.items():
        meta[key] = text if key in STRING_KEYS else json.loads(text)
    listed = meta.get(KEYS_KEY)
    if not isinstance(listed, list):
        raise ValueError(f"no {KEYS_KEY!r} entry")
    missing = [key for key in listed if key not in meta]
    if missing:
        raise ValueError(f"missing keys {missing}")
    return meta


def session_options(threads: int = 1, optimize: bool = True) -> ort.SessionOptions:
    """CPU session options: `threads` intra-op threads, sequential execution, all graph optimizations or none."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    options.log_severity_level = 3   # errors only: they reach the user as CompactLMError instead
    return options


def open_session(path: str | os.PathLike, *, threads: int = 1, optimize: bool = True) -> tuple[ort.InferenceSession, dict]:
    """An onnxruntime CPU session of a compact-lm .onnx file and its decoded metadata (one-line errors)."""
    path = Path(path)
    if not path.exists():
        raise CompactLMError(f"ONNX file {path} does not exist")
    if path.is_dir():
        raise CompactLMError(f"ONNX file {path} is a folder, not a file")
    try:
        session = ort.InferenceSession(str(path), session_options(threads, optimize), providers=["CPUExecutionProvider"])
    except Exception as error:   # onnxruntime raises its own exception types for bad protobuf, graph, file
        reason = " ".join(str(error).split())[:200]
        raise CompactLMError(f"{path} is not a valid ONNX model (truncated or corrupted?): {reason}") from None
    props = session.get_modelmeta().custom_metadata_map
    if props.get("kind") != ONNX_KIND:
        raise CompactLMError(f"{path} is an ONNX model without compact-lm metadata (not a compact-lm export, or cut off)")
    try:
        meta = decode_metadata(props)
    except ValueError as error:
        raise CompactLMError(f"{path} has damaged compact-lm metadata (truncated file?): {error}") from None
    if meta.get("format_version") != ONNX_FORMAT_VERSION:
        raise CompactLMError(f"{path} has ONNX format version {meta.get('format_version')!r}; "
                             f"this compact-lm reads version {ONNX_FORMAT_VERSION}")
    if meta.get("graph") not in GRAPH_KINDS:
        raise CompactLMError(f"{path} has an unknown graph kind {meta.get('graph')!r}")
    return session, meta


class OrtBackend:
    """An exported step graph (and optionally a sequence graph) run by onnxruntime on the CPU.

    A state is a list with one tuple per layer, (h,) or (h, c), each float32 [batch, hidden_k], as in
    NumpyBackend. `path` may be a step or a sequence graph; `sequence_path` adds a sequence graph for `run`.
    `step` reuses one feed dict, so a backend object serves one thread at a time.
    """

    def __init__(self, path: str | os.PathLike, *, threads: int = 1, optimize: bool = True,
                 sequence_path: str | os.PathLike | None = None):
        session, meta = open_session(path, threads=threads, optimize=optimize)
        self.path, self.metadata = Path(path), meta
        try:
            self.config = ModelConfig.from_json(meta)
            self.vocab = Vocab.from_json(meta)
            self._state_inputs = [tuple(str(name) for name in layer) for layer in meta["state_inputs"]]
            state_outputs = [str(name) for layer in meta["state_outputs"] for name in layer]
        except (KeyError, TypeError, ValueError, CompactLMError) as error:
            raise CompactLMError(f"{path} has invalid compact-lm metadata: {error}") from None
        self.vocab_size = self.config.vocab_size
        self._state_names = [name for layer in self._state_inputs for name in layer]   # flat, feed order
        self._outputs = [LOG_PROBS, *state_outputs]
        _check_io(session, self)
        self._step = session if meta["graph"] == "step" else None
        self._sequence = session if meta["graph"] == "sequence" else None
        if sequence_path is not None:
            sequence, seq_meta = open_session(sequence_path, threads=threads, optimize=optimize)
            if seq_meta["graph"] != "sequence":
                raise CompactLMError(f"{sequence_path} holds a {seq_meta['graph']} graph, not a sequence graph")
            differences = metadata_differences(meta, seq_meta)
            if differences:
                raise CompactLMError(f"{sequence_path} is not from the same model as {path}: {differences[0]}")
            _check_io(sequence, self)
            self._sequence = sequence
        # per-layer positions of the state outputs in session.run's result (after log_probs)
        self._layer_slices, start = [], 1
        for layer in self._state_inputs:
            self._layer_slices.append(slice(start, start + len(layer)))
            start += len(layer)
        self._feed: dict[str, np.ndarray] = {}   # reused by every step call

    @property
    def has_sequence_graph(self) -> bool:
        """Whether `run` uses a sequence graph (else it loops the step graph)."""
        return self._sequence is not None

    def initial_state(self, batch: int) -> list:
        """Zero state for `batch` streams."""
        return [tuple(np.zeros((batch, hidden), dtype=np.float32) for _ in names)
                for names, hidden in zip(self._state_inputs, self.config.hidden_sizes)]

    def _regroup(self, outputs: list) -> list:
        return [tuple(outputs[s]) for s in self._layer_slices]

    def step(self, token_ids: np.ndarray, state: list) -> tuple[np.ndarray, list]:
        """Log-probabilities [B, V] of the next character after token_ids [B], and the new state."""
        if self._step is None:
            log_probs, state = self.run(np.asarray(token_ids, dtype=np.int64)[:, None], state)
            return log_probs[:, 0], state
        feed = self._feed
        feed[TOKENS] = (token_ids if type(token_ids) is np.ndarray and token_ids.dtype is _INT64
                        else np.asarray(token_ids, dtype=np.int64))
        feed.update(zip(self._state_names, chain.from_iterable(state)))
        outputs = self._step.run(self._outputs, feed)
        return outputs[0], self._regroup(outputs)

    def run(self, token_ids: np.ndarray, state: list) -> tuple[np.ndarray, list]:
        """Log-probabilities [B, T, V] after each of token_ids [B, T], and the final state."""
        ids = np.ascontiguousarray(token_ids, dtype=np.int64)
        batch, steps = ids.shape
        if self._sequence is not None and steps > 0:
            feed = {TOKENS: ids, **dict(zip(self._state_names, chain.from_iterable(state)))}
            outputs = self._sequence.run(self._outputs, feed)
            return outputs[0], self._regroup(outputs)
        log_probs = np.empty((batch, steps, self.vocab_size), dtype=np.float32)
        ids_time_major = np.ascontiguousarray(ids.T)
        for t in range(steps):
            log_probs[:, t], state = self.step(ids_time_major[t], state)
        return log_probs, state


def _check_io(session: ort.InferenceSession, backend: OrtBackend) -> None:
    """The session's inputs and outputs are the ones the metadata describes (names, state widths, vocab)."""
    inputs = {i.name: i.shape for i in session.get_inputs()}
    outputs = {o.name: o.shape for o in session.get_outputs()}
    expected_in = {TOKENS, *backend._state_names}
    if set(inputs) != expected_in or set(outputs) != set(backend._outputs):
        raise CompactLMError(f"{backend.path}: graph inputs/outputs do not match its compact-lm metadata")
    for names, hidden in zip(backend._state_inputs, backend.config.hidden_sizes):
        for name in names:
            if inputs[name][-1] != hidden:
                raise CompactLMError(f"{backend.path}: input {name} has width {inputs[name][-1]}, metadata says {hidden}")
    if outputs[LOG_PROBS][-1] != backend.vocab_size:
        raise CompactLMError(f"{backend.path}: log_probs has width {outputs[LOG_PROBS][-1]}, metadata says {backend.vocab_size}")


def metadata_differences(a: dict, b: dict) -> list[str]:
    """What differs in the model-defining metadata of two files: cell, sizes, vocabulary, normalization, int8 or not."""
    differences = []
    for key in ("cell", "embed_size", "hidden_sizes", "vocab_size", "vocab", "nfc", "lowercase", "quantized"):
        if a.get(key) != b.get(key):
            shown = "entries differ" if key == "vocab" else f"{a.get(key)!r} vs {b.get(key)!r}"
            differences.append(f"{key}: {shown}")
    return differences
