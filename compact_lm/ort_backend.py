"""The onnxruntime backend: an exported `.onnx` behind the Backend protocol (imports numpy and onnxruntime only).

Everything needed to turn text into ids and back comes from the file's metadata_props (read through
`session.get_modelmeta().custom_metadata_map`, decoded and checked by compact_lm.onnx_format).

onnxruntime keeps no state between calls, so the recurrent state is an explicit input and output;
each call has a fixed cost of a few microseconds in Python, which dominates small models, so the
per-call work here is building one small feed dict and one `session.run`.
"""
from __future__ import annotations

import os
from itertools import chain
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .config import ModelConfig
from .errors import CompactLMError
from .onnx_format import LOG_PROBS, TOKENS, metadata_differences, metadata_of, read_onnx
from .vocab import Vocab

_INT64 = np.dtype(np.int64)


def session_options(threads: int = 1, optimize: bool = True) -> ort.SessionOptions:
    """CPU session options: `threads` intra-op threads, sequential execution, all graph optimizations or none,
    no memory arena."""
    options = ort.SessionOptions()
    # The arena is one allocator behind one mutex per session: two threads running a shared session's
    # sequence graph (a Scan allocates at every step) got 0.37-0.40x the throughput of a session each, less
    # than one thread alone; without it 0.90x, for +0.4 us (+2 %) per fp32 batch-1 step on one thread, 0 on int8
    # (GRU-256, 2 cores, onnxruntime 1.32; docs/serving.md).
    options.enable_cpu_mem_arena = False
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    options.log_severity_level = 3   # errors only: they reach the user as CompactLMError instead
    return options


def read_checked(path: str | os.PathLike) -> tuple[bytes, dict]:
    """The bytes of a compact-lm .onnx file and its decoded metadata, checked before onnxruntime sees them."""
    data = read_onnx(path)
    return data, metadata_of(path, data)


def open_session(path: str | os.PathLike, data: bytes, *, threads: int = 1, optimize: bool = True) -> ort.InferenceSession:
    """An onnxruntime CPU session of a compact-lm .onnx file's checked bytes (one-line errors)."""
    try:
        # from the bytes already checked, so the file cannot be swapped between the check and the load
        # enable_fallback=0: on failure onnxruntime would otherwise print a 4-line "EP Error" banner to
        # stdout and build the session a second time; the error reaches the user once, below, instead
        session = ort.InferenceSession(data, session_options(threads, optimize), providers=["CPUExecutionProvider"],
                                       enable_fallback=0)
    except Exception as error:   # onnxruntime raises its own exception types for a damaged or unsupported graph
        reason = " ".join(str(error).split())[:400]
        raise CompactLMError(f"onnxruntime {ort.__version__} could not open {path}: {reason}") from None
    return session


class OrtBackend:
    """An exported step graph (and optionally a sequence graph) run by onnxruntime on the CPU.

    A state is a list with one tuple per layer, (h,) or (h, c), each float32 [batch, hidden_k], as in
    NumpyBackend. `path` may be a step or a sequence graph; `sequence_path` adds a sequence graph for `run`.
    Thread-safe: every call builds its own feed and onnxruntime's `InferenceSession.run` takes concurrent
    calls, so one backend serves any number of threads at once.
    """

    def __init__(self, path: str | os.PathLike, *, threads: int = 1, optimize: bool = True,
                 sequence_path: str | os.PathLike | None = None):
        # Everything the metadata says is checked first: a file that is not a compact-lm export, or whose metadata is
        # damaged, is named as such whatever onnxruntime would make of it (as the JavaScript runtime does)
        data, meta = read_checked(path)
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
        session = open_session(path, data, threads=threads, optimize=optimize)
        _check_io(session, self)
        self._step = session if meta["graph"] == "step" else None
        self._sequence = session if meta["graph"] == "sequence" else None
        if sequence_path is not None:
            sequence_data, seq_meta = read_checked(sequence_path)
            if seq_meta["graph"] != "sequence":
                raise CompactLMError(f"{sequence_path} holds a {seq_meta['graph']} graph, not a sequence graph")
            differences = metadata_differences(meta, seq_meta)
            if differences:
                raise CompactLMError(f"{sequence_path} is not from the same model as {path}: {differences[0]}")
            self._sequence = open_session(sequence_path, sequence_data, threads=threads, optimize=optimize)
            _check_io(self._sequence, self)
        # per-layer positions of the state outputs in session.run's result (after log_probs)
        self._layer_slices, start = [], 1
        for layer in self._state_inputs:
            self._layer_slices.append(slice(start, start + len(layer)))
            start += len(layer)
        _probe(session, self, meta["graph"], self.path)
        if sequence_path is not None:
            _probe(self._sequence, self, "sequence", Path(sequence_path))

    @property
    def has_sequence_graph(self) -> bool:
        """Whether `run` uses a sequence graph (else it loops the step graph)."""
        return self._sequence is not None

    lexicon_from = None   # a function giving the lexicon, when the model that opened the file has decoded it

    @property
    def lexicon(self):
        """The file's lexicon (compact_lm/lexicon.py), or None; decoded on first use."""
        cached = self.__dict__.get("_lexicon")
        if cached is None:
            from .lexicon import model_lexicon
            decode = self.lexicon_from or (lambda: model_lexicon(self.metadata, str(self.path)))
            cached = self.__dict__["_lexicon"] = (decode(),)
        return cached[0]

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
        # a fresh dict per call (not one reused buffer) lets threads share the backend; it costs ~20 ns
        feed = dict(zip(self._state_names, chain.from_iterable(state)))
        feed[TOKENS] = (token_ids if type(token_ids) is np.ndarray and token_ids.dtype is _INT64
                        else np.asarray(token_ids, dtype=np.int64))
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


def _probe(session: ort.InferenceSession, backend: OrtBackend, graph: str, path: Path) -> None:
    """Run the graph for two steps on every token from the zero state (batch = vocabulary size): the
    outputs must have the shapes the metadata describes and be finite.

    A graph can be well-formed yet not the one its metadata describes (a damaged attribute, e.g. a
    Gather axis, changes output shapes) or hold damaged weights (NaN/inf); ONNX files carry no checksum.
    Two steps from every token reach every table row and, through a non-zero state, the recurrent
    weights, so such a file is refused here instead of failing or returning NaN later. Costs two or three
    session runs at load. `path` names the file in the error.

    The very first run is at batch 1, the shape of typing: onnxruntime plans its memory from a session's
    first run, and a session whose first run had batch V ran every later batch-1 step slower (measured on
    the int8 GRU-256 step graph: 20.1 vs 15.9 us; fp32 19.3 vs 18.2 us).
    """
    every = np.arange(backend.vocab_size, dtype=np.int64)
    if graph == "sequence":
        every = np.stack([every, np.roll(every, 1)], axis=1)   # [V, 2]: two steps in one run
    _probe_run(session, backend, graph, every[:1], 1, path)
    _probe_run(session, backend, graph, every, 2 if graph == "step" else 1, path)


def _probe_run(session: ort.InferenceSession, backend: OrtBackend, graph: str, tokens: np.ndarray, steps: int,
               path: Path) -> None:
    """`steps` runs on tokens [B] (step graph) or [B, T] (sequence graph) from the zero state, checked as above."""
    quiet = ort.RunOptions()
    quiet.log_severity_level = 4   # a failing probe is reported once as CompactLMError, not also logged
    batch, vocab = len(tokens), backend.vocab_size
    want_log_probs = (batch, vocab) if graph == "step" else (batch, tokens.shape[1], vocab)
    want_states = [(batch, hidden) for names, hidden in zip(backend._state_inputs, backend.config.hidden_sizes)
                   for _ in names]
    state = backend.initial_state(batch)
    for _ in range(steps):
        feed = {TOKENS: tokens, **dict(zip(backend._state_names, chain.from_iterable(state)))}
        try:
            outputs = session.run(backend._outputs, feed, quiet)
        except Exception as error:   # onnxruntime's own exception types (shape or type errors in the graph)
            reason = " ".join(str(error).split())[:200]
            raise CompactLMError(f"{path}: the graph fails to run (damaged?): {reason}") from None
        shapes = [tuple(np.shape(o)) for o in outputs]
        if shapes != [want_log_probs, *want_states]:
            raise CompactLMError(f"{path}: the graph's outputs have shapes {shapes}, its metadata "
                                 f"describes {[want_log_probs, *want_states]} (damaged graph?)")
        if not all(np.isfinite(o).all() for o in outputs):
            raise CompactLMError(f"{path}: the graph produces NaN or infinite values (damaged weights?)")
        state = backend._regroup(outputs)


def _check_io(session: ort.InferenceSession, backend: OrtBackend) -> None:
    """The session's inputs and outputs are the ones the metadata describes (names, state widths, vocab)."""
    try:
        inputs = {i.name: i.shape for i in session.get_inputs()}
        outputs = {o.name: o.shape for o in session.get_outputs()}
    except UnicodeDecodeError:
        raise CompactLMError(f"{backend.path}: graph input/output names are not valid UTF-8 (damaged?)") from None
    expected_in = {TOKENS, *backend._state_names}
    if set(inputs) != expected_in or set(outputs) != set(backend._outputs):
        raise CompactLMError(f"{backend.path}: graph inputs/outputs do not match its compact-lm metadata")
    for names, hidden in zip(backend._state_inputs, backend.config.hidden_sizes):
        for name in names:
            if inputs[name][-1] != hidden:
                raise CompactLMError(f"{backend.path}: input {name} has width {inputs[name][-1]}, metadata says {hidden}")
    if outputs[LOG_PROBS][-1] != backend.vocab_size:
        raise CompactLMError(f"{backend.path}: log_probs has width {outputs[LOG_PROBS][-1]}, metadata says {backend.vocab_size}")

