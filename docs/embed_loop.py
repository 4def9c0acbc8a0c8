"""The next characters after a prefix, from a compact-lm step graph with numpy + onnxruntime only.

    python docs/embed_loop.py MODEL.onnx "Alice was beginning to get ver" [k]

Everything comes from the file's metadata_props; the result equals `compact-lm complete MODEL --next`.
"""
import json, math, sys, unicodedata

import numpy as np
import onnxruntime as ort

# NFC over the text (a letter and the marks after it compose, as in training); lowercase code point by code point
NORMALIZE = {"NFC": lambda text: unicodedata.normalize("NFC", text),
             "lowercase": lambda text: "".join(char.lower() for char in text)}


def load(path: str) -> tuple[ort.InferenceSession, dict]:
    """The session and its metadata: every value JSON except kind, cell, dtype and graph."""
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    props = session.get_modelmeta().custom_metadata_map
    meta = {key: text if key in ("kind", "cell", "dtype", "graph") else json.loads(text) for key, text in props.items()}
    if meta.get("graph") != "step":
        raise ValueError(f"{path} is not a compact-lm step graph")
    return session, meta


def next_chars(session: ort.InferenceSession, meta: dict, prefix: str, k: int = 3) -> list[tuple[str, float]]:
    """The k most likely next characters after `prefix` (never <unk>) and their probabilities, most likely first."""
    vocab, unk = meta["vocab"], meta["unk_id"]
    ids = {char: i for i, char in enumerate(vocab) if i != unk}
    # files from before start_text / normalization were fed the same way: "\n", then NFC and lowercase as flagged
    steps = meta.get("normalization", {}).get("steps") or ["NFC"] * meta["nfc"] + ["lowercase"] * meta["lowercase"]
    text = meta.get("start_text", "\n") + prefix
    for step in steps:
        text = NORMALIZE[step](text)
    pairs = [(i, o) for ins, outs in zip(meta["state_inputs"], meta["state_outputs"]) for i, o in zip(ins, outs)]
    hidden = [h for names, h in zip(meta["state_inputs"], meta["hidden_sizes"]) for _ in names]
    feed = {name: np.zeros((1, h), np.float32) for (name, _), h in zip(pairs, hidden)}   # zero state
    for char in text:
        feed["tokens"] = np.array([ids.get(char, unk)], np.int64)
        log_probs, *states = session.run(["log_probs", *(o for _, o in pairs)], feed)
        feed.update((i, state) for (i, _), state in zip(pairs, states))
    order = [i for i in np.argsort(-log_probs[0], kind="stable").tolist() if i != unk][:k]
    return [(vocab[i], math.exp(float(log_probs[0, i]))) for i in order]


if __name__ == "__main__":
    session, meta = load(sys.argv[1])
    for char, prob in next_chars(session, meta, sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 5):
        print(f"{prob:7.2%}  {char!r}")
