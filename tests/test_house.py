"""The house's structure (DESIGN.md, "Layers (an arrow only points down)"), read from the
source with ``ast``: no import cycles, no new arrow up the layers, no new import of a
holomed module inside a function, and a command line that starts without torch.

An arrow is an import of a holomed module by another, at module level or inside a
function; imports under ``if TYPE_CHECKING:`` are not arrows (they never run).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import holomed

ROOT = Path(holomed.__file__).parent

# Each module's layer: the longest prefix below that names it; a higher layer is nearer
# the user, and a module imports only from its own layer or the layers below it.
LAYERS: dict[str, float] = {
    # faces: the command line, the HTML report, the server
    "holomed.cli": 10,
    "holomed.clierrors": 10,
    "holomed.predictions": 10,
    "holomed.report": 10,
    "holomed.serve": 10,
    "holomed.generative.cli": 10,
    "holomed.generative.align_cli": 10,
    # the harness: selection, comparison, robustness, trust; the fit executor
    "holomed.evaluation": 9,
    # analyses of candidates: subgroup fairness, generation, alignment, report drafts
    "holomed.fairness": 8,
    "holomed.generative": 8,
    # candidates (the neural family and the classical ones) and the bundle
    "holomed.model": 7,
    "holomed.candidate": 7,
    "holomed.candidates": 7,
    "holomed.bundle": 7,
    # explanations: functions of a candidate, which they receive as an argument and
    # never import; every candidate's explain() calls them, so they sit below candidates
    "holomed.explain": 6.5,
    "holomed.training": 6,
    "holomed.network": 5.5,
    "holomed.fusion": 5,
    "holomed.encoders": 5,
    "holomed.tasks": 5,
    # cohort, patient-level splits, privacy at load; a run's provenance (the data's
    # model-card fields, read from the dataset registry)
    "holomed.cohort": 4,
    "holomed.privacy": 4,
    "holomed.provenance": 4,
    # sources of modality frames: public datasets (the synthetic one too), EHR tables
    "holomed.datasets": 3.5,
    "holomed.synthetic": 3.5,
    "holomed.ehr": 3.5,
    "holomed.modalities": 3,
    "holomed.io": 2,
    # contracts and pure functions: spec (with its ehr: and DICOMweb sections),
    # registry, errors, results records, scoring, survival outputs, threads, run files
    "holomed": 1,
}

# Arrows up the layers still in the code, each with why it is there. An arrow not listed
# fails the test; so does a listed arrow that is gone (take it off the list).
ALLOWED_UP: dict[tuple[str, str], str] = {}

# Modules that may import holomed modules inside functions, and why. Anywhere else an
# import of a holomed module sits at the top of the module.
LAZY_OK: dict[str, str] = {
    "holomed.cli": "each command imports what it runs: `holomed --help` starts without torch",
    "holomed.generative.cli": "a command registered at CLI start-up: kept off the start path",
    "holomed.generative.align_cli": "a command registered at CLI start-up: kept off the start",
    "holomed.serve.cli": "commands registered at CLI start-up: FastAPI kept off the start path",
    "holomed.serve": "PEP 562 export of create_app: holomed.serve.cli loads without FastAPI",
}

# Modules that import holomed modules by a name in a string (importlib), so that the
# graph above does not see the arrow: each is a registry or a lazy package export.
BY_NAME_OK: dict[str, str] = {
    "holomed": "PEP 562 exports of the public API: `import holomed` loads none of them",
    "holomed.encoders": "PEP 562 exports: importing one encoder module does not load torch",
    "holomed.encoders.base": "the encoder registry imports its built-in encoders on first use",
    "holomed.generative": "PEP 562 exports of the synthesis API",
    "holomed.scoring": "PEP 562 exports: scoring.strata (used by cohort) loads no sklearn",
    "holomed.registry": "the built-in registries the spec checks names and options against",
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _targets(module: str, node: ast.Import | ast.ImportFrom, package: bool) -> list[str]:
    """The holomed modules an import statement loads (a name imported from a package
    counts when it is a submodule)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in MODULES]
    base = node.module or ""
    if node.level:
        parts = module.split(".") if package else module.split(".")[:-1]
        parts = parts[: len(parts) - node.level + 1]
        base = ".".join(parts + ([node.module] if node.module else []))
    out = [base] if base in MODULES else []
    return out + [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(module: str) -> Iterator[tuple[str, int, bool]]:
    """(target module, line, inside a function) for each import of a holomed module."""
    path = MODULES[module]
    package = path.name == "__init__.py"

    def walk(node: ast.AST, in_function: bool) -> Iterator[tuple[str, int, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                for target in _targets(module, child, package):
                    if target != module:
                        yield target, child.lineno, in_function
            elif not _type_checking(child):
                inner = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
                yield from walk(child, in_function or inner)

    yield from walk(ast.parse(path.read_text(encoding="utf-8")), False)


IMPORTS = {m: list(_imports(m)) for m in MODULES}


def layer(module: str) -> float:
    prefix = max(
        (p for p in LAYERS if module == p or module.startswith(p + ".")), key=len, default=None
    )
    assert prefix is not None, f"{module}: no layer; add it to LAYERS"
    return LAYERS[prefix]


def test_the_scan_sees_the_package():
    assert {"holomed.cli", "holomed.spec", "holomed.model", "holomed.cohort"} <= set(MODULES)
    assert any(t == "holomed.spec" for t, _, _ in IMPORTS["holomed.cohort"])
    assert any(lazy for t, _, lazy in IMPORTS["holomed.cli"] if t == "holomed.spec")


def test_no_import_cycles():
    graph = {m: sorted({t for t, _, _ in IMPORTS[m]}) for m in MODULES}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in graph[m]:
            if state.get(t) == 1:
                cycles.append([*path[path.index(t) :], t])
            elif t not in state:
                visit(t, [*path, t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_arrows_point_down_the_layers():
    assert len(ALLOWED_UP) <= 3
    up: dict[tuple[str, str], int] = {}
    for m, imports in IMPORTS.items():
        for t, line, _ in imports:
            if layer(t) > layer(m):
                up.setdefault((m, t), line)
    new = [
        f"{m}:{line} (layer {layer(m)}) imports {t} (layer {layer(t)})"
        for (m, t), line in sorted(up.items())
        if (m, t) not in ALLOWED_UP
    ]
    assert not new, "arrows up the layers (DESIGN.md, Layers):\n" + "\n".join(new)
    gone = sorted(set(ALLOWED_UP) - set(up))
    assert not gone, f"these arrows are gone; take them off ALLOWED_UP: {gone}"


def test_holomed_imports_sit_at_module_level():
    lazy = [
        f"{m}:{line} imports {t} inside a function"
        for m, imports in sorted(IMPORTS.items())
        for t, line, in_function in imports
        if in_function and m not in LAZY_OK
    ]
    assert not lazy, "move these imports to the top of the module:\n" + "\n".join(lazy)
    unused = sorted(m for m in LAZY_OK if not any(f for _, _, f in IMPORTS.get(m, [])))
    assert not unused, f"no function-level imports left: take them off LAZY_OK: {unused}"


def _imports_by_name(module: str) -> bool:
    """Whether the module calls importlib.import_module or __import__ with anything but
    a literal name outside holomed."""
    for node in ast.walk(ast.parse(MODULES[module].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and ast.unparse(node.func).split(".")[-1] in (
            "import_module",
            "__import__",
        ):
            arg = node.args[0] if node.args else None
            literal = isinstance(arg, ast.Constant) and isinstance(arg.value, str)
            if not literal or arg.value.split(".")[0] == "holomed":
                return True
    return False


def test_imports_by_name_only_in_registries_and_lazy_exports():
    found = {m for m in MODULES if _imports_by_name(m)}
    assert found == set(BY_NAME_OK), (
        f"new: {sorted(found - set(BY_NAME_OK))}; gone: {sorted(set(BY_NAME_OK) - found)}"
    )


@pytest.mark.parametrize("module", ["holomed.cli", "holomed"])
def test_the_command_line_starts_without_torch(module):
    code = (
        f"import sys, {module}; "
        "print(sorted(m for m in ('torch', 'lightning', 'sklearn') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
