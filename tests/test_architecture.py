"""The floor plan: one opener, no import circles, and commands that load only what they run."""
import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PARTS = {"compact_lm": ROOT / "compact_lm", "compact_lm.export": ROOT / "export", "compact_lm.tools": ROOT / "tools"}


def _modules() -> dict[str, Path]:
    return {f"{package}.{path.stem}" if path.stem != "__init__" else package: path
            for package, folder in PARTS.items() for path in folder.glob("*.py")}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules `name` imports, at import time or later in a function body."""
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            for alias in node.names:
                target = f"{base}.{alias.name}"
                found.add(target if target in known else base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in known and m != name}


def test_no_import_circles():
    modules = _modules()
    graph = {name: _imports(name, path, set(modules)) for name, path in modules.items()}
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                pytest.fail("import circle: " + " -> ".join(trail[trail.index(target):] + [target]))
            if target not in state:
                visit(target, trail + [target])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_only_the_model_modules_ask_which_kind_a_model_is():
    asking = re.compile(r"isinstance\(.*\b(Model|QuantizedModel|OnnxModel)\b")
    model_modules = {"model.py", "quantized.py", "onnx_model.py", "model_file.py", "opener.py"}
    offenders = [f"{path.relative_to(ROOT)}:{number}" for folder in PARTS.values() for path in folder.glob("*.py")
                 if path.name not in model_modules
                 for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if asking.search(line)]
    assert offenders == []


PROBE = """
import json, sys
from compact_lm.cli import main
code = main(sys.argv[1:])
heavy = sorted(m for m in sys.modules if m in ("onnx", "compact_lm.tools", "compact_lm.export", "torch")
               or m.startswith(("compact_lm.tools.", "compact_lm.export.")))
print(json.dumps({"code": code, "heavy": heavy}), file=sys.stderr)
"""


@pytest.mark.parametrize("command", [["complete", "{model}", "Alice was beg", "--next"],
                                     ["complete", "{onnx}", "Alice was beg"],
                                     ["eval", "{model}", "--text", "{text}"],
                                     ["eval-complete", "{model}", "--text", "{text}", "--limit", "200"]])
def test_runtime_commands_load_neither_tools_nor_export_nor_onnx(command, tiny_model_path, tiny_onnx_path, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("Alice was beginning to get very tired of sitting by her sister\n", encoding="utf-8")
    argv = [a.format(model=tiny_model_path, onnx=tiny_onnx_path, text=text) for a in command]
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, cwd=tmp_path)
    report = json.loads(done.stderr.strip().splitlines()[-1])
    assert report == {"code": 0, "heavy": []}, done.stderr


def test_repl_loads_neither_tools_nor_export_nor_onnx(tiny_model_path, tmp_path):
    probe = PROBE.replace("code = main", "sys.stdin = __import__('io').StringIO('Alice\\n'); code = main")
    done = subprocess.run([sys.executable, "-c", probe, "repl", str(tiny_model_path)], capture_output=True,
                          text=True, cwd=tmp_path)
    assert json.loads(done.stderr.strip().splitlines()[-1]) == {"code": 0, "heavy": []}, done.stderr


def test_the_autocomplete_runtime_imports_numpy_and_onnxruntime_only():
    code = ("import sys; import compact_lm.autocomplete, compact_lm.ort_backend; "
            "print(sorted({m.split('.')[0] for m in sys.modules}))")
    loaded = set(json.loads(subprocess.run([sys.executable, "-c", code.replace("print(", "import json; print(json.dumps(")
                                            + ")"], capture_output=True, text=True, check=True).stdout))
    assert {"numpy", "onnxruntime"} <= loaded
    assert not loaded & {"onnx", "tqdm", "threadpoolctl", "torch", "matplotlib", "google"}


def test_export_imports_no_onnxruntime():
    code = "import sys, compact_lm.export; print('onnxruntime' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_verify_imports_no_onnx(tiny_model_path, tiny_onnx_path, tmp_path):
    done = subprocess.run([sys.executable, "-c", PROBE, "verify", str(tiny_model_path), str(tiny_onnx_path)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert json.loads(done.stderr.strip().splitlines()[-1]) == {"code": 0, "heavy": []}, done.stderr
