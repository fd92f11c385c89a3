"""The package's structure: imports run one way, no module reaches into another's private
names, and functions stay short enough to read at once.

Every import counts, the ones inside functions too (they are how a cycle hides: Python
only trips over it at the call that closes the loop)."""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PKG = REPO / "fyexport"
MAX_FUNCTION_LINES = 80


def _modules() -> dict:
    """{dotted module name: path} of every module in the package."""
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        parts = list(p.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _imports(name: str, path: Path, modules: dict) -> list:
    """[(imported fyexport module, names taken from it, line)] of every import in the file."""
    is_pkg = path.name == "__init__.py"
    package = name.split(".") if is_pkg else name.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == "fyexport"]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            if target.split(".")[0] != "fyexport":
                continue
            plain = []
            for a in node.names:
                sub = f"{target}.{a.name}"
                if sub in modules:
                    found.append((sub, [], node.lineno))
                else:
                    plain.append(a.name)
            if plain or not node.names:
                found.append((target, plain, node.lineno))
    return [(m, names, line) for m, names, line in found if m in modules and m != name]


def _graph() -> dict:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict) -> list:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in {m for m, _, _ in graph[v]}:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_function_level_imports_included():
    assert _cycles(_graph()) == []


def test_cycle_detector_finds_a_cycle():
    graph = {"a": [("b", [], 1)], "b": [("c", [], 1)], "c": [("a", [], 3)], "d": [("a", [], 1)]}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_no_module_imports_another_modules_private_names():
    bad = [f"{name}:{line} imports {n} from {m}" for name, edges in _graph().items() for m, names, line in edges
           for n in names if n.startswith("_") and not n.startswith("__")]
    assert bad == []


def test_imports_run_downhill():
    """Nothing imports the CLI (but ``python -m fyexport``); only the CLI imports the build; the TensorRT layer never
    imports the benchmark; the low floors (core: errors, log, artifacts, machine; ONNX facts; image reading and
    selection) import nothing above them."""
    graph = _graph()
    low = {m for m in graph if m.startswith("fyexport.core")} | {"fyexport.onnx.facts", "fyexport.data.images",
                                                                  "fyexport.data.selection"}
    bad = []
    for name, edges in graph.items():
        for m, _, line in edges:
            imports_cli = m.startswith("fyexport.cli") and not name.startswith(("fyexport.__main__", "fyexport.cli"))
            imports_build = m == "fyexport.pipeline.build" and not name.startswith("fyexport.cli")
            if imports_cli or imports_build:
                bad.append(f"{name}:{line} imports {m}")
            if name.startswith("fyexport.trt") and m.startswith("fyexport.bench"):
                bad.append(f"{name}:{line} imports {m}")
            if name in low and m not in low | {"fyexport"}:
                bad.append(f"{name}:{line} (a low floor) imports {m}")
    assert bad == []


def test_the_top_holds_few_loose_modules_and_every_subpackage_has_tests():
    """Folders say what lives in them: at most 6 modules loose at the top (besides __init__ and
    __main__), and each subpackage has tests (tests/test_<package>*.py or tests/<package>/)."""
    loose = [p.name for p in PKG.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    assert len(loose) <= 6, loose
    tests = REPO / "tests"
    untested = [d.name for d in PKG.iterdir() if (d / "__init__.py").is_file()
                and not (list(tests.glob(f"test_{d.name}*.py")) or (tests / d.name).is_dir())]
    assert untested == []


def test_functions_are_short():
    long = []
    for p in sorted(PKG.rglob("*.py")):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{p.relative_to(REPO)}:{node.lineno} {node.name} ({n} lines)")
    assert long == []
