"""Property-based fuzzing of the loaders: byte flips and truncations of valid small model files.

Every damaged file either loads correctly (and then scores a short text with finite numbers, or refuses
with CompactLMError) or is refused with a CompactLMError; any other exception, a crash or a hang fails.
Flip positions are drawn anywhere in the file or near its structure (zip headers, .npy headers, the
start of the protobuf), where a flip gets past the zip CRCs and reaches the parsers.
"""
import math
import signal
from contextlib import contextmanager

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from compact_lm.errors import CompactLMError
from compact_lm.export import export_model
from compact_lm import load
from compact_lm.metrics import evaluate_ids
from compact_lm.ort_backend import OrtBackend
from compact_lm.tools.quantize import quantize_model
from conftest import random_model

TEXT = "the lazy dog jumps"
SECONDS_PER_EXAMPLE = 10   # a load that takes longer than this is a hang
FUZZ = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> dict[str, bytes]:
    """The bytes of a valid float .npz, int8 .npz and step-graph .onnx of one small model."""
    folder = tmp_path_factory.mktemp("fuzz_originals")
    model = random_model("lstm", (6, 5), embed=4, seed=1)
    model.save(folder / "float.npz")
    quantize_model(model).save(folder / "int8.npz")
    export_model(model, folder / "step.onnx")
    return {name: (folder / name).read_bytes() for name in ("float.npz", "int8.npz", "step.onnx")}


def _landmarks(data: bytes) -> list[int]:
    """Offsets where the file's structure lives: zip local/central/end records, .npy magics, offset 0."""
    marks = {0}
    for signature in (b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06", b"\x93NUMPY"):
        start = data.find(signature)
        while start != -1:
            marks.add(start)
            start = data.find(signature, start + 1)
    return sorted(marks)


@st.composite
def damage(draw, data: bytes) -> bytes:
    """`data` with 1-4 byte flips (anywhere or within 128 bytes after a landmark), a truncation, or both."""
    out = bytearray(data)
    marks = _landmarks(data)
    kind = draw(st.sampled_from(["flip", "truncate", "flip+truncate"]))
    if "flip" in kind:
        for _ in range(draw(st.integers(1, 4))):
            if draw(st.booleans()):
                position = draw(st.integers(0, len(out) - 1))
            else:
                position = min(len(out) - 1, draw(st.sampled_from(marks)) + draw(st.integers(0, 127)))
            out[position] ^= draw(st.integers(1, 255))
    if "truncate" in kind:
        del out[draw(st.integers(0, len(out) - 1)):]
    return bytes(out)


@contextmanager
def _time_limit(seconds: int):
    """Fail (TimeoutError) instead of hanging if the body runs longer than `seconds`."""
    def expire(signum, frame):
        raise TimeoutError(f"loading took more than {seconds} s")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _check_npz(path) -> None:
    with _time_limit(SECONDS_PER_EXAMPLE):
        try:
            model = load(path)
        except CompactLMError as error:
            assert "\n" not in str(error) and str(path) in str(error), str(error)
            return
        try:
            nats = model.evaluate(TEXT).nats
        except CompactLMError:
            return
    assert math.isfinite(nats)


@pytest.mark.parametrize("name", ["float.npz", "int8.npz"])
@FUZZ
@given(draw=st.data())
def test_damaged_npz_loads_or_gives_a_one_line_error(originals, tmp_path, draw, name):
    path = tmp_path / name
    path.write_bytes(draw.draw(damage(originals[name]), label="file"))
    _check_npz(path)


@FUZZ
@given(draw=st.data())
def test_damaged_onnx_loads_or_gives_a_one_line_error(originals, tmp_path, draw):
    path = tmp_path / "step.onnx"
    path.write_bytes(draw.draw(damage(originals["step.onnx"]), label="file"))
    with _time_limit(SECONDS_PER_EXAMPLE):
        try:
            backend = OrtBackend(path)
        except CompactLMError as error:
            assert "\n" not in str(error) and str(path) in str(error), str(error)
            return
        try:
            nats = evaluate_ids(backend, backend.vocab.encode(TEXT)).nats
        except CompactLMError:
            return
    assert math.isfinite(nats)


def test_the_undamaged_files_load_and_score(originals, tmp_path):
    """The fuzzing starts from files that work (else every example would be a trivial refusal)."""
    for name in ("float.npz", "int8.npz"):
        (tmp_path / name).write_bytes(originals[name])
        assert math.isfinite(load(tmp_path / name).evaluate(TEXT).nats)
    (tmp_path / "step.onnx").write_bytes(originals["step.onnx"])
    backend = OrtBackend(tmp_path / "step.onnx")
    assert math.isfinite(evaluate_ids(backend, backend.vocab.encode(TEXT)).nats)
