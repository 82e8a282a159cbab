"""The house rules of docs/architecture.md: no module imports upward, no module is over 400 lines,
and importing the package loads no ONNX Runtime, TensorRT or CUDA library."""

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "resq_export"
MAX_LINES = 400


def _layers() -> dict[str, int]:
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = re.search(r"```layers\n(.*?)```", text, re.S).group(1)
    layers = {}
    for line in block.strip().splitlines():
        number, rest = line.split(" ", 1)
        for name in rest.split(":", 1)[1].split():
            layers[name] = int(number)
    return layers


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        body = ast.parse(path.read_text()).body
        if path.name == "__init__.py" and path.parent != PACKAGE and all(isinstance(n, ast.Expr) for n in body):
            continue  # a package marker with at most a docstring
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(p for p in parts if p != "__init__") or "__init__"
        yield name, path


def _layer_of(module: str, layers: dict[str, int]) -> int:
    """The entry naming the module, or its package (the longest prefix)."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in layers:
            return layers[".".join(parts[:n])]
    raise AssertionError(f"resq_export.{module} is in no layer of docs/architecture.md")


def _imports(name: str, path: Path):
    package = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".")
    if name == "__init__":
        package = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - (node.level - 1)]
            target = base + (node.module.split(".") if node.module else [])
            if not target:
                yield "__init__", node.lineno
                continue
            target_name = ".".join(target)
            sub = [f"{target_name}.{a.name}" for a in node.names]
            # "from . import x" / "from .quantize import pipeline": the submodule when there is one
            yield from ((s, node.lineno) for s in sub if (PACKAGE / Path(*s.split("."))).with_suffix(".py").exists())
            if not any((PACKAGE / Path(*s.split("."))).with_suffix(".py").exists() for s in sub):
                yield target_name, node.lineno
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("resq_export"):
            yield node.module.removeprefix("resq_export").lstrip(".") or "__init__", node.lineno


def test_no_module_imports_upward():
    layers = _layers()
    problems = []
    for name, path in _modules():
        own = _layer_of(name, layers)
        for target, line in _imports(name, path):
            if _layer_of(target, layers) > own:
                problems.append(f"{path.relative_to(ROOT)}:{line} (layer {own}) imports {target} "
                                f"(layer {_layer_of(target, layers)})")
    assert not problems, "\n".join(problems)


def test_layer_table_names_real_modules():
    for name in _layers():
        path = PACKAGE / Path(*name.split("."))
        assert name == "__init__" or path.is_dir() or path.with_suffix(".py").is_file(), name


def test_no_module_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for _, p in _modules() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_importing_the_package_loads_no_runtime():
    """Every module of resq_export imported: no onnxruntime, tensorrt or CUDA library is loaded (they
    are imported where they are used), so `resq-export --help` and the quantiser start anywhere."""
    program = """
import importlib, pkgutil, sys
import resq_export
for m in pkgutil.walk_packages(resq_export.__path__, "resq_export."):
    importlib.import_module(m.name)
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"onnxruntime", "tensorrt", "tensorrt_rtx", "pycuda", "cupy"})
maps = open("/proc/self/maps").read()
libs = sorted({lib for lib in ("libcuda.so", "libcudart", "libnvinfer", "libtensorrt", "libresq_kernels",
                               "libresq_plugins", "libonnxruntime") if lib in maps})
print(heavy, libs)
"""
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[] []", out.stdout + out.stderr


def test_no_import_cycles():
    graph = {name: {t for t, _ in _imports(name, path)} for name, path in _modules()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        if state.get(node) == 1:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(node):] + [node]))
        if state.get(node) == 2:
            return
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            visit(target, path + [node])
        state[node] = 2

    for name in sorted(graph):
        visit(name, [])
