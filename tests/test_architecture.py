"""The design stays visible: stages import only the stages below them (the import-linter
contract in pyproject.toml), no two modules import each other (directly or through others,
imports inside functions and under TYPE_CHECKING included), and modules stay small enough to
read in one sitting. docs/architecture.md draws the layers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "caloquant"
MAX_LINES = 450
# cli.py is the one module allowed to be long (one command per function)
LONG_ALLOWED = "cli.py"


def test_layers_contract_is_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    p = subprocess.run(
        [str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert p.returncode == 0 and "1 kept, 0 broken" in p.stdout, p.stdout[-3000:] + p.stderr[-2000:]


def _cycles(graph: grimp.ImportGraph, skip: set[str]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative: the module
    graph is small, but a recursion limit should not decide a test)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph.modules - skip):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root) - skip)))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append(
                        (w, iter(sorted(graph.find_modules_directly_imported_by(w) - skip)))
                    )
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
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
    return out


LAZY_PACKAGES = ("precision", "distributed", "train", "bench", "data", "sim")


def test_no_import_cycles() -> None:
    """The root package is the one exception: its lazy façade (``cq.load``...) imports
    ``caloquant.api`` on first use, and every module is inside it."""
    graph = grimp.build_graph("caloquant", include_external_packages=False)
    assert _cycles(graph, {"caloquant"}) == []


def test_the_cycle_finder_can_fail() -> None:
    graph = grimp.ImportGraph()
    for m in ("p", "p.a", "p.b", "p.c"):
        graph.add_module(m)
    graph.add_import(importer="p.a", imported="p.b")
    graph.add_import(importer="p.b", imported="p.c")
    assert _cycles(graph, {"p"}) == []
    graph.add_import(importer="p.c", imported="p.a")
    assert _cycles(graph, {"p"}) == [["p.a", "p.b", "p.c"]]


def test_modules_stay_readable() -> None:
    sizes = {str(p.relative_to(SRC)): len(p.read_text().splitlines()) for p in SRC.rglob("*.py")}
    too_long = {k: n for k, n in sizes.items() if k != LONG_ALLOWED and n > MAX_LINES}
    assert not too_long, f"split by concern (limit {MAX_LINES} lines): {too_long}"


def test_ruff_passes_with_the_project_line_length() -> None:
    """pyflakes, pycodestyle (lines of at most ``line-length`` = 100) and import order, as
    configured in pyproject.toml, on the package, the tests and the benchmarks."""
    ruff = Path(sys.executable).with_name("ruff")
    p = subprocess.run(
        [str(ruff), "check", "--no-cache", "--output-format", "concise"]
        + ["src", "tests", "benchmarks"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]


@pytest.mark.parametrize("package", ["caloquant", *(f"caloquant.{p}" for p in LAZY_PACKAGES)])
def test_every_public_name_of_a_lazy_package_resolves(package: str) -> None:
    """The lazy façades (lazy_loader): each name in ``__all__`` resolves in a fresh process.
    A stage package lists its names once, in ``__init__.pyi`` (``attach_stub``): the names its
    ``__init__.py`` imports eagerly must be in that list too, or type checkers and ``__all__``
    would miss them."""
    import ast

    code = (
        f"import importlib; m = importlib.import_module({package!r})\n"
        "missing = [n for n in m.__all__ if getattr(m, n, None) is None]\n"
        "assert not missing, missing\n"
        "print(' '.join(m.__all__))\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", code], check=True, timeout=300, capture_output=True, text=True
    )
    if package == "caloquant":
        return
    init = REPO / "src" / Path(*package.split(".")) / "__init__.py"
    eager = {
        a.asname or a.name
        for node in ast.parse(init.read_text()).body
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(package + ".")
        for a in node.names
    }
    assert eager and eager <= set(p.stdout.split()), eager - set(p.stdout.split())
    assert init.with_suffix(".pyi").is_file()
