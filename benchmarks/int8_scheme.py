"""Static vs dynamic activation quantization in the int8 scheme of compact_lm/int8.py: quality, speed, exactness.

    cd benchmarks && python int8_scheme.py --model M --text T [--chars 20000] [--calls 3000]

Quality: bpc of --model (fp32 .npz) on the first --chars characters of --text: (a) fp32; (b) the project's scheme
(tools/quantize.py, NumPy int8 path), every product input quantized statically, x_q = sat_u8(round(127 x) + 128);
(c) the same int8 weights, table, lookup activations and cell step, every product input quantized per step as ONNX
DynamicQuantizeLinear does: scale = (max(0, max x) - min(0, min x)) / 255, zp = sat_u8(round(-min / scale)),
x_q = sat_u8(round(x / scale) + zp), y = float(sum (x_q - zp) w_q) * (scale * s_w) + b (rounding half to even).
Checks of (c)'s step: with the static quantizer it gives (b); with identity instead (and float sigmoid/tanh), the
dequantized-float path within 1e-5 bpc. Exactness: graphs A, B (below) on the model's layer-1 W_hh vs NumPy.
Speed: onnxruntime, one thread, batch 1, one product [1, H] -> [1, 3H] (GRU), H = 128, 256, random 7-bit weights:
A QuantizeLinear(1/127, 128) -> MatMulInteger -> Cast -> Mul -> Add; B DynamicQuantizeLinear -> MatMulInteger -> Cast
-> Mul(x_scale * w_scale) -> Add; C float MatMul -> Add. Median of --calls warm calls, interleaved in blocks.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from common import blas_description
from compact_lm.tools.quantize import quantize_model
from onnx import TensorProto, helper, numpy_helper
from threadpoolctl import threadpool_limits

from compact_lm import int8
from compact_lm.cells import FLOAT_ACTIVATIONS, get_cell
from compact_lm import load
from compact_lm.network import log_softmax
from compact_lm.ort_backend import session_options

F32 = np.float32
ACT_SCALE, ACT_ZERO_POINT, Int8Product = int8.ACT_SCALE, int8.ACT_ZERO_POINT, int8.Int8Product


def static_quantizer(x: np.ndarray) -> tuple[np.ndarray, np.float32]:
    """The project's scheme: (x_q - 128, 1/127), x_q = saturate_uint8(round_half_even(x / ACT_SCALE) + 128)."""
    return np.clip(np.rint(x / ACT_SCALE), -ACT_ZERO_POINT, 255 - ACT_ZERO_POINT), ACT_SCALE


def dynamic_quantizer(x: np.ndarray) -> tuple[np.ndarray, np.float32]:
    """DynamicQuantizeLinear over the whole tensor, in float32: (x_q - zero point, scale)."""
    low, high = min(F32(0), x.min()), max(F32(0), x.max())
    scale = F32(1) if high == low else F32((high - low) / F32(255))
    zero_point = np.clip(np.rint(F32(0) - low / scale), 0, 255)
    return np.clip(np.rint(x / scale) + zero_point, 0, 255) - zero_point, scale


class Product:
    """y = float32(sum_k c[k] w_q[j, k]) * (scale * s_w[j]) + b[j] with (c, scale) = quantizer(x)."""

    def __init__(self, p: Int8Product, quantizer):
        self.quantizer, self.weight_scale, self.bias = quantizer, p.weight_scale, p.bias
        exact = p.weight_q.shape[1] * 255 * max(int(np.abs(p.weight_q.astype(np.int32)).max()), 1) < 2 ** 24
        self.weight_t = np.ascontiguousarray(p.weight_q.T.astype(F32 if exact else np.float64))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        centered, scale = self.quantizer(x.astype(F32, copy=False))
        acc = (centered.astype(self.weight_t.dtype, copy=False) @ self.weight_t).astype(F32)
        return acc * (F32(scale) * self.weight_scale) + self.bias


def run_text(qmodel, ids: np.ndarray, quantizer, act, keep: int = 0) -> tuple[float, list[np.ndarray]]:
    """bpc of ids[1:] from the zero state, one step per character; the first `keep` layer-1 product inputs."""
    a, layers = qmodel.arrays, qmodel.config.layers
    cell, embed = get_cell(qmodel.config.cell), qmodel.products().embed

    def product(weight: str, bias: str) -> Product:
        return Product(Int8Product(a[f"{weight}.q"], a[f"{weight}.scale"], a[bias]), quantizer)
    inputs = {k: product(f"rnn.weight_ih_l{k}", f"rnn.bias_ih_l{k}") for k in range(1, layers)}
    recurrent = [product(f"rnn.weight_hh_l{k}", f"rnn.bias_hh_l{k}") for k in range(layers)]
    head = product("head.weight", "head.bias")
    state = [cell.zero_state(1, hidden) for hidden in qmodel.config.hidden_sizes]
    kept, total = [], 0.0
    for t in range(len(ids) - 1):
        xg = embed(ids[t:t + 1])
        if t < keep:
            kept.append(state[0][0])
        new_state = []
        for k in range(layers):
            if k:
                xg = inputs[k](new_state[-1][0])
            new_state.append(cell.step(xg, recurrent[k](state[k][0]), state[k], act))
        state = new_state
        total -= float(log_softmax(head(state[-1][0]))[0, ids[t + 1]])
    return total / (len(ids) - 1) / np.log(2), kept


def product_graph(kind: str, w_q: np.ndarray, w_scale: np.ndarray, bias: np.ndarray) -> bytes:
    """Opset-17 graph y = product(x) of x [1, in]: 'static' (A), 'dynamic' (B) or 'float' (C)."""
    out, inputs = w_q.shape
    init = {"b": bias.astype(F32), "w_q": np.ascontiguousarray(w_q.T)}
    node = helper.make_node
    if kind == "static":
        init.update(s=np.array(ACT_SCALE, F32), zp=np.array(ACT_ZERO_POINT, np.uint8),
                    col=(ACT_SCALE * w_scale).astype(F32))
        nodes = [node("QuantizeLinear", ["x", "s", "zp"], ["x_q"]),
                 node("MatMulInteger", ["x_q", "w_q", "zp"], ["acc"])]
    elif kind == "dynamic":
        init["w_s"] = w_scale.astype(F32)
        nodes = [node("DynamicQuantizeLinear", ["x"], ["x_q", "x_s", "x_zp"]),
                 node("MatMulInteger", ["x_q", "w_q", "x_zp"], ["acc"]), node("Mul", ["x_s", "w_s"], ["col"])]
    else:
        init = {"b": init["b"], "w": np.ascontiguousarray(int8.dequantize_rows(w_q, w_scale).T)}
        nodes = [node("MatMul", ["x", "w"], ["scaled"])]
    if kind != "float":
        nodes += [node("Cast", ["acc"], ["acc_f"], to=TensorProto.FLOAT), node("Mul", ["acc_f", "col"], ["scaled"])]
    nodes.append(node("Add", ["scaled", "b"], ["y"]))
    graph = helper.make_graph(nodes, kind, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, inputs])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, out])],
                              [numpy_helper.from_array(v, k) for k, v in init.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def session(graph: bytes, optimize: bool = True, optimized: Path | None = None) -> ort.InferenceSession:
    """The project's session_options(1): one intra-op and one inter-op thread, all graph optimizations or none."""
    options = session_options(1, optimize)
    if optimized:
        options.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def time_sessions(sessions: dict, x: np.ndarray, calls: int, block: int) -> dict[str, float]:
    """Median microseconds per session.run: 300 warm-up calls each, then `calls` calls in blocks taken in turn."""
    feed, times = {"x": x}, {name: [] for name in sessions}
    for runner in sessions.values():
        for _ in range(300):
            runner.run(["y"], feed)
    clock = time.perf_counter
    for _ in range(max(1, calls // block)):
        for name, runner in sessions.items():
            out, run = times[name], runner.run
            for _ in range(block):
                start = clock()
                run(["y"], feed)
                out.append(clock() - start)
    return {name: statistics.median(t) * 1e6 for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="fp32 model .npz")
    parser.add_argument("--text", required=True, help="UTF-8 validation text")
    parser.add_argument("--chars", type=int, default=20000, help="characters of --text to score (default 20000)")
    parser.add_argument("--calls", type=int, default=3000, help="timed calls per graph (default 3000)")
    parser.add_argument("--block", type=int, default=500, help="calls per turn (default 500)")
    args = parser.parse_args()
    with threadpool_limits(limits=1):
        print(f"numpy {np.__version__}, onnxruntime {ort.__version__}, onnx {onnx.__version__}; {blas_description()}")
        model = load(args.model)
        qmodel = quantize_model(model)
        ids = model.vocab.encode(Path(args.text).read_text(encoding="utf-8")[:args.chars])
        print(f"\nquality: {model.config.cell} E={model.config.embed_size} H={list(model.config.hidden_sizes)}, "
              f"{qmodel.weight_bits}-bit weights, {len(ids) - 1} scored characters of {args.text}")
        fp32 = model.evaluate_ids(ids).bpc
        static = qmodel.evaluate_ids(ids).bpc
        dequantized = qmodel.evaluate_ids(ids, arithmetic="float").bpc
        mine_static, _ = run_text(qmodel, ids, static_quantizer, int8.TABLE_ACTIVATIONS)
        mine_identity, _ = run_text(qmodel, ids, lambda x: (x, F32(1)), FLOAT_ACTIVATIONS)  # identity
        dynamic, states = run_text(qmodel, ids, dynamic_quantizer, int8.TABLE_ACTIVATIONS, keep=2000)
        print(f"  (a) fp32                                    {fp32:.5f} bpc")
        print(f"  (b) int8, static activations (project)      {static:.5f} bpc  ({static - fp32:+.5f} vs fp32)")
        print(f"  (c) int8, dynamic activations per step      {dynamic:.5f} bpc  ({dynamic - fp32:+.5f} vs fp32)")
        print(f"  check: this script's step, static quantizer  {mine_static:.5f} bpc, |delta| vs (b) "
              f"{abs(mine_static - static):.1e}")
        identity_delta = abs(mine_identity - dequantized)
        checks_pass = identity_delta < 1e-5 and mine_static == static
        print(f"  check: identity quantizer, float sigmoid/tanh {mine_identity:.5f} bpc vs dequantized-float path "
              f"{dequantized:.5f}: |delta| {identity_delta:.1e} ({'ok' if identity_delta < 1e-5 else 'FAILED'})")

        print(f"\nexactness: ONNX product vs NumPy product on layer-1 W_hh, {len(states)} hidden states of the text")
        a = qmodel.arrays
        w_q, w_s, b = a["rnn.weight_hh_l0.q"], a["rnn.weight_hh_l0.scale"], a["rnn.bias_hh_l0"]
        for kind, numpy_product in {"static": Int8Product(w_q, w_s, b),
                                    "dynamic": Product(Int8Product(w_q, w_s, b), dynamic_quantizer)}.items():
            for optimize in (True, False):
                runner = session(product_graph(kind, w_q, w_s, b), optimize)
                deltas = [np.abs(runner.run(["y"], {"x": h})[0] - numpy_product(h)) for h in states]
                print(f"  {kind:<8} graph optimizations {'on ' if optimize else 'off'}: "
                      f"{sum(int(np.count_nonzero(d)) for d in deltas)} of {sum(d.size for d in deltas)} outputs "
                      f"differ, max |delta| {max(float(d.max()) for d in deltas):.1e}")

        print(f"\nspeed: one product [1, H] -> [1, 3H], one thread, median of {args.calls} calls (us)")
        print(f"  {'H':>4} {'A static':>9} {'B dynamic':>10} {'C float':>8} {'B/A':>6} {'A/C':>6}")
        rng = np.random.default_rng(0)
        with tempfile.TemporaryDirectory(prefix="int8_scheme_") as folder:
            for hidden in (128, 256):
                w_q, w_s = int8.quantize_rows(rng.normal(0, hidden ** -0.5, (3 * hidden, hidden)), qmodel.weight_bits)
                b = rng.normal(0, 0.1, 3 * hidden).astype(F32)
                paths = {k: Path(folder) / f"{k}{hidden}.onnx" for k in ("static", "dynamic", "float")}
                sessions = {k: session(product_graph(k, w_q, w_s, b), True, p) for k, p in paths.items()}
                x = np.tanh(rng.normal(0, 1, (1, hidden))).astype(F32)
                us = time_sessions(sessions, x, args.calls, args.block)
                print(f"  {hidden:>4} {us['static']:>9.2f} {us['dynamic']:>10.2f} {us['float']:>8.2f} "
                      f"{us['dynamic'] / us['static']:>6.2f} {us['static'] / us['float']:>6.2f}")
            print("  nodes after onnxruntime's optimizations: " + "; ".join(
                f"{k} {' -> '.join(n.op_type for n in onnx.load(str(p)).graph.node)}" for k, p in paths.items()))

    if not checks_pass:
        raise SystemExit("a check of this script's step FAILED: its figures do not hold")


if __name__ == "__main__":
    main()
