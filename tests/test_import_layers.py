"""The import graph of the distribution: no cycles, and the layers of the harness's flow.

What is parsed: every module of the distribution, read from the source with :mod:`ast`
(nothing is imported): ``harness/`` and the folders pyproject's ``package-dir`` maps into it
(``tasks/`` installs as ``harness.tasks``, ``detectors/`` as ``harness.detectors``).

What counts as an import of a project module: every ``import`` and ``from ... import``
statement naming one, wherever it is written:

* at module level;
* inside a function or method: a deferred import is still a dependency (it only runs later),
  so an import moved into a function cannot hide a cycle or a layer violation;
* under ``if TYPE_CHECKING:``: counted like any other import. An annotation-only import is a
  design dependency (the importer's API speaks the imported module's types); a cycle made of
  type-only edges is still a cycle of the design, and the way out is to move the shared type,
  not to hide the import.

``from package import name`` counts as an import of ``package.name`` when that is a module,
else of ``package`` (its ``__init__``); ``import a.b.c`` counts as an import of ``a.b.c`` only
(not of the packages ``a`` and ``a.b`` whose ``__init__`` Python runs first), the convention
of import-linter. Not seen: imports by string (``importlib.import_module``, the lazy names of
``harness.zoo`` (PEP 562), entry points). That is how the harness core reaches the built-in
plugins: through the ``harness`` entry points, never by an import.

The contracts:

* (a) the module graph has no cycle;
* (b) every module belongs to one group of :data:`LAYERS` and imports only modules of its own
  group and of the groups its row lists (the table is in the order of the flow: CLI -> plan
  -> run -> models / features / basin -> scoring -> records -> leaderboard; the built-in
  plugins sit on top and the core never imports them).

:data:`KNOWN_VIOLATIONS` lists today's exceptions, each an (importer, imported) edge with its
reason; both checks skip those edges, and an entry whose edge is gone (or allowed) fails the
test, so the list only shrinks. ``python tests/test_import_layers.py`` prints the graph by
group.
"""

from __future__ import annotations

import ast
import shutil
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Optional

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = None

import pytest

ROOT = Path(__file__).resolve().parents[1]


# -------------------------------------------------------------------------------------------
# the contracts


@dataclass(frozen=True)
class Layer:
    """A group of modules and the other groups they may import (their own is always allowed).

    modules: exact module names, or ``"pkg.*"`` for ``pkg`` and every module below it (an
    exact name wins over a pattern, a longer pattern over a shorter one)."""

    name: str
    modules: tuple[str, ...]
    may_import: tuple[str, ...]


CORE = ("ground", "models", "features", "basin", "api", "scoring", "records", "leaderboard", "plan", "run")

LAYERS = (
    # the package, the plugin contract and process-wide basics: imported by everything, import nothing above
    Layer("ground", ("harness", "harness.hookspecs", "harness.interfaces", "harness.plugins", "harness.cache",
                     "harness.runtime", "harness.layers"), ()),
    # model directories, the zoo's tiny models and their training, the cache of trained models
    Layer("models", ("harness.zoo.*",), ("ground",)),
    # what runs a model: hidden states and attributions, the item types, residual interventions
    Layer("features", ("harness.features.*",), ("ground", "models")),
    # the basin-volume engine: works on any torch model it is given, loads none
    Layer("basin", ("harness.basin.*",), ("ground", "features")),
    # the one module a third-party plugin imports; nothing in the core goes through it
    Layer("api", ("harness.api",), ("ground", "models", "features")),
    # numbers from scores: AUROC, intervals, pair accuracy
    Layer("scoring", ("harness.scoring",), ("ground",)),
    # result records on disk
    Layer("records", ("harness.records",), ("ground", "scoring")),
    # reads records, never runs a model: the leaderboard, the report helpers, the plots
    Layer("leaderboard", ("harness.leaderboard.*",), ("ground", "scoring", "records")),
    # all validation before the first job: task options, detector parameters, the memory estimate
    Layer("plan", ("harness.plan.*",),
          ("ground", "models", "features", "scoring", "records")),
    # jobs, executors, the runner: builds models and episodes, fits, scores, writes records
    Layer("run", ("harness.run.*",),
          ("ground", "models", "features", "basin", "scoring", "records", "plan")),
    # the command line: everything of the core
    Layer("cli", ("harness.cli",), CORE),
    # built-in plugins: what a task or detector needs of the core; never the run, the CLI or the
    # other kind of plugin (detectors score item types, not tasks)
    Layer("tasks", ("harness.tasks.*",),
          ("ground", "models", "features", "basin", "api", "scoring", "leaderboard", "plan")),
    Layer("detectors", ("harness.detectors.*",), ("ground", "models", "features", "basin", "api", "scoring", "plan")),
)

# (importer, imported) -> why it is there and what removes it; see the module docstring
KNOWN_VIOLATIONS: dict[tuple[str, str], str] = {}


# -------------------------------------------------------------------------------------------
# reading the graph


@dataclass(frozen=True)
class Import:
    """One import statement's dependency: where it is and in what context."""

    importer: str
    imported: str
    path: Path
    line: int
    where: str  # "module level", "in a function", "under TYPE_CHECKING"

    def describe(self) -> str:
        try:
            path = self.path.relative_to(ROOT)
        except ValueError:
            path = self.path
        return f"{path}:{self.line} ({self.where})"


Graph = dict[str, dict[str, list[Import]]]  # importer -> imported -> the statements


def source_roots(root: Path = ROOT) -> dict[str, Path]:
    """Top-level import name -> folder, from pyproject: ``harness`` and its package-dir mapping."""
    if tomllib is not None:
        config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
        roots = {name: root / folder for name, folder in config.get("package-dir", {}).items()}
        packages = config["packages"]
    else:  # pragma: no cover - Python 3.10 without tomllib: the mapping as pyproject has it
        roots = {"harness.tasks": root / "tasks", "harness.detectors": root / "detectors"}
        packages = ["harness"]
    for package in packages:
        if not any(package == name or package.startswith(name + ".") for name in roots):
            top = package.split(".")[0]
            roots.setdefault(top, root / top)
    return roots


def module_files(roots: Mapping[str, Path]) -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, is a package) for every ``.py`` file under the roots."""
    modules: dict[str, tuple[Path, bool]] = {}
    for name, folder in roots.items():
        for path in sorted(folder.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            parts = list(path.relative_to(folder).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            modules[".".join([name, *parts])] = (path, is_package)
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _Imports(ast.NodeVisitor):
    """Every import statement of a module with its context (innermost wins)."""

    def __init__(self) -> None:
        self.found: list[tuple[ast.stmt, str]] = []
        self._where = ["module level"]

    def _inside(self, label: str, nodes: Iterable[ast.AST]) -> None:
        self._where.append(label)
        for node in nodes:
            self.visit(node)
        self._where.pop()

    def visit_FunctionDef(self, node: ast.AST) -> None:
        self._inside("in a function", ast.iter_child_nodes(node))

    visit_AsyncFunctionDef = visit_FunctionDef
    visit_Lambda = visit_FunctionDef

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            self._inside("under TYPE_CHECKING", node.body)
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.found.append((node, self._where[-1]))

    visit_ImportFrom = visit_Import


def build_graph(roots: Optional[Mapping[str, Path]] = None) -> Graph:
    """The project's import graph: every module (a node even when it imports nothing) -> the
    project modules it imports, with the statements that do."""
    modules = module_files(roots if roots is not None else source_roots())
    tops = {name.split(".")[0] for name in modules}

    def resolve(name: str) -> Optional[str]:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: Graph = {name: {} for name in modules}
    for importer, (path, is_package) in modules.items():
        collector = _Imports()
        collector.visit(ast.parse(path.read_text(), filename=str(path)))
        package = importer if is_package else importer.rpartition(".")[0]
        for node, where in collector.found:
            targets: list[Optional[str]] = []
            if isinstance(node, ast.Import):
                targets = [resolve(alias.name) for alias in node.names if alias.name.split(".")[0] in tops]
            else:
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                if source.split(".")[0] not in tops:
                    continue
                for alias in node.names:
                    submodule = f"{source}.{alias.name}"
                    targets.append(submodule if submodule in modules else resolve(source))
            for target in targets:
                if target is not None and target != importer:
                    graph[importer].setdefault(target, []).append(Import(importer, target, path, node.lineno, where))
    return graph


# -------------------------------------------------------------------------------------------
# the checks


def _adjacency(edges: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
    graph = {node: sorted(set(targets)) for node, targets in edges.items()}
    for targets in list(graph.values()):
        for target in targets:
            graph.setdefault(target, [])
    return graph


def strongly_connected(edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node, each sorted, in sorted order
    (Tarjan's algorithm, iterative: no recursion limit)."""
    graph = _adjacency(edges)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            for j in range(i, len(graph[node])):
                target = graph[node][j]
                if target not in index:
                    work += [(node, j + 1), (target, 0)]
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
                if work:  # back in the parent: the child's low link counts for it
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
    return sorted(components)


def find_cycles(edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """One cycle ``[a, b, ..., a]`` per strongly connected component of more than one node: a
    shortest cycle through the component's first node in sorted order."""
    graph = _adjacency(edges)
    cycles = []
    for component in strongly_connected(graph):
        members, first = set(component), component[0]
        previous: dict[str, str] = {}
        queue = deque([first])
        while queue:  # breadth first from ``first`` until an edge leads back to it
            node = queue.popleft()
            if first in graph[node]:
                path = [node]
                while path[-1] != first:
                    path.append(previous[path[-1]])
                cycles.append([*reversed(path), first])
                break
            for target in graph[node]:
                if target in members and target not in previous and target != first:
                    previous[target] = node
                    queue.append(target)
    return cycles


def group_of(module: str, layers: Iterable[Layer] = LAYERS) -> Optional[str]:
    """The group a module belongs to (None: none; an exact name wins, then the longest pattern)."""
    best: Optional[tuple[int, str]] = None
    for layer in layers:
        for pattern in layer.modules:
            if pattern == module:
                return layer.name
            if pattern.endswith(".*"):
                prefix = pattern[:-2]
                if module == prefix or module.startswith(prefix + "."):
                    if best is None or len(prefix) > best[0]:
                        best = (len(prefix), layer.name)
    return best[1] if best else None


def allowed(importer: str, imported: str, layers: Iterable[Layer] = LAYERS) -> bool:
    layers = tuple(layers)
    source, target = group_of(importer, layers), group_of(imported, layers)
    may = {layer.name: layer.may_import for layer in layers}
    return source == target or target in may.get(source, ())


def layer_violations(graph: Graph, layers: Iterable[Layer] = LAYERS,
                     known: Mapping[tuple[str, str], str] = KNOWN_VIOLATIONS) -> list[str]:
    layers = tuple(layers)
    may = {layer.name: layer.may_import for layer in layers}
    problems = []
    for importer in sorted(graph):
        for imported, statements in sorted(graph[importer].items()):
            if (importer, imported) in known or allowed(importer, imported, layers):
                continue
            source, target = group_of(importer, layers), group_of(imported, layers)
            problems.append(f"{importer} ({source}) imports {imported} ({target}) at "
                            f"{', '.join(s.describe() for s in statements)}; {source} may import only "
                            f"{', '.join(may.get(source, ())) or 'its own group'}")
    return problems


def cycle_report(graph: Graph, known: Mapping[tuple[str, str], str] = KNOWN_VIOLATIONS) -> list[str]:
    edges = {importer: [t for t in targets if (importer, t) not in known] for importer, targets in graph.items()}
    lines = []
    for cycle in find_cycles(edges):
        steps = [f"{a} -> {b} ({graph[a][b][0].describe()})" for a, b in zip(cycle, cycle[1:])]
        lines.append(" -> ".join(cycle) + "\n    " + "\n    ".join(steps))
    return lines


# -------------------------------------------------------------------------------------------
# the tests on the repository


@pytest.fixture(scope="module")
def graph() -> Graph:
    return build_graph()


def test_the_graph_covers_harness_and_the_built_in_plugins(graph):
    assert {"harness", "harness.cli", "harness.zoo.store", "harness.basin.perturb", "harness.tasks.poser.task",
            "harness.detectors.basin"} <= set(graph)
    # a deferred import and a TYPE_CHECKING one are both edges
    assert any(s.where == "in a function" for targets in graph.values() for ss in targets.values() for s in ss)
    assert any(s.where == "under TYPE_CHECKING" for targets in graph.values() for ss in targets.values() for s in ss)


def test_every_module_belongs_to_a_group(graph):
    missing = [module for module in sorted(graph) if group_of(module) is None]
    assert not missing, f"modules in no group of LAYERS (tests/test_import_layers.py); add each to the group of its " \
                        f"place in the flow: {missing}"


def test_the_group_table_is_layered():
    names = [layer.name for layer in LAYERS]
    assert len(set(names)) == len(names)
    for layer in LAYERS:
        assert set(layer.may_import) <= set(names) - {layer.name}, layer
        if layer.name in CORE:
            assert not set(layer.may_import) & {"tasks", "detectors"}, f"{layer.name}: the core never imports plugins"
    order = {name: i for i, name in enumerate(names)}
    for layer in LAYERS:  # every group imports only groups listed before it: the table is a DAG
        assert all(order[other] < order[layer.name] for other in layer.may_import), layer


def test_no_import_cycles(graph):
    cycles = cycle_report(graph)
    assert not cycles, "import cycles (function-level and TYPE_CHECKING imports count; move the shared code to " \
                       "a module both sides import):\n" + "\n".join(cycles)


def test_every_import_respects_the_layers(graph):
    problems = layer_violations(graph)
    assert not problems, "imports across the layers of LAYERS (tests/test_import_layers.py):\n" + "\n".join(problems)


def test_every_known_violation_is_still_there(graph):
    """An entry is stale once its import is gone, or allowed by the layers and on no cycle."""
    on_cycle = {module: i for i, component in enumerate(strongly_connected(graph)) for module in component}

    def needed(importer: str, imported: str) -> bool:
        if imported not in graph.get(importer, {}):
            return False
        same_cycle = importer in on_cycle and on_cycle[importer] == on_cycle.get(imported)
        return not allowed(importer, imported) or same_cycle

    stale = [edge for edge in KNOWN_VIOLATIONS if not needed(*edge)]
    assert not stale, f"fixed, so remove them from KNOWN_VIOLATIONS (tests/test_import_layers.py): {stale}"


# -------------------------------------------------------------------------------------------
# the checks catch what they should


def test_the_cycle_finder_on_small_graphs():
    assert find_cycles({"a": ["b"], "b": ["c"], "c": []}) == []
    assert find_cycles({"a": ["b"], "b": ["c"], "c": ["a"]}) == [["a", "b", "c", "a"]]
    # two components; the shortest way back, not the first one found
    cycles = find_cycles({"a": ["b", "x"], "b": ["c"], "c": ["d"], "d": ["a"], "x": ["a"], "p": ["q"], "q": ["p"],
                          "r": ["p"]})
    assert cycles == [["a", "x", "a"], ["p", "q", "p"]]
    deep = {f"m{i}": [f"m{i + 1}"] for i in range(5000)}  # no recursion limit
    assert find_cycles(deep) == []
    deep["m5000"] = ["m0"]
    assert len(find_cycles(deep)[0]) == 5002


def test_the_layer_check_on_a_small_table():
    layers = (Layer("low", ("p.base", "p.util.*"), ()), Layer("high", ("p.top",), ("low",)))
    assert group_of("p.util", layers) == "low" and group_of("p.util.x.y", layers) == "low"
    assert group_of("p.other", layers) is None
    graph = {"p.top": {"p.base": []}, "p.base": {"p.util.x": []}, "p.util.x": {}}
    assert layer_violations(graph, layers, {}) == []
    graph["p.base"]["p.top"] = [Import("p.base", "p.top", Path("p/base.py"), 3, "in a function")]
    problems = layer_violations(graph, layers, {})
    assert len(problems) == 1 and problems[0].startswith("p.base (low) imports p.top (high) at p/base.py:3 (in a function)")
    assert layer_violations(graph, layers, {("p.base", "p.top"): "known"}) == []


def test_a_new_deferred_or_type_only_import_in_a_scratch_copy_is_caught(tmp_path):
    """The repository copied, three bad imports added to the copy: each is reported."""
    roots = {}
    for name, folder in source_roots().items():
        roots[name] = tmp_path / folder.relative_to(ROOT)
        shutil.copytree(folder, roots[name], ignore=shutil.ignore_patterns("__pycache__"))
    with open(roots["harness"] / "cache.py", "a") as f:  # ground -> run, and a cycle (runner imports cache)
        f.write("\n\ndef _scratch():\n    from harness.run.runner import run\n")
    with open(roots["harness"] / "zoo" / "store.py", "a") as f:  # models -> plan, type-only
        f.write("\nif TYPE_CHECKING:\n    from harness.plan.memory import Need\n")
    with open(roots["harness"] / "features" / "extractor.py", "a") as f:  # the core importing a built-in plugin
        f.write("\nfrom harness.detectors.statistics import Mahalanobis\n")
    graph = build_graph(roots)
    problems = "\n".join(layer_violations(graph))
    assert "harness.cache (ground) imports harness.run.runner (run)" in problems and "(in a function)" in problems
    assert "harness.zoo.store (models) imports harness.plan.memory (plan)" in problems
    assert "under TYPE_CHECKING" in problems
    assert "harness.features.extractor (features) imports harness.detectors.statistics (detectors)" in problems
    cycles = "\n".join(cycle_report(graph))
    assert "harness.cache -> harness.run.runner" in cycles and "harness.run.runner -> harness.cache" in cycles


def test_relative_imports_and_packages_resolve(tmp_path):
    package = tmp_path / "p"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from . import b\nfrom .sub import thing\nimport p.sub.c as c\nimport os\n")
    (package / "b.py").write_text("from p.sub.c import name\nfrom p import missing\n")
    (package / "sub" / "__init__.py").write_text("from .c import name\nfrom .. import a\n")
    (package / "sub" / "c.py").write_text("def f():\n    from ..b import x\n")
    graph = build_graph({"p": package})
    assert {m: sorted(t) for m, t in graph.items()} == {
        "p": [], "p.a": ["p.b", "p.sub", "p.sub.c"], "p.b": ["p", "p.sub.c"], "p.sub": ["p.a", "p.sub.c"],
        "p.sub.c": ["p.b"]}
    assert graph["p.sub.c"]["p.b"][0].where == "in a function"


def _print_graph() -> None:  # pragma: no cover - a tool for people
    graph = build_graph()
    for layer in LAYERS:
        members = sorted(m for m in graph if group_of(m) == layer.name)
        print(f"== {layer.name} (may import: {', '.join(layer.may_import) or '-'})")
        for module in members:
            targets = [t + (" [known]" if (module, t) in KNOWN_VIOLATIONS else "" if allowed(module, t) else " [!]")
                       for t in sorted(graph[module])]
            print(f"   {module} -> {', '.join(targets) or '-'}")
    unplaced = sorted(m for m in graph if group_of(m) is None)
    if unplaced:
        print("== in no group:", ", ".join(unplaced))
    for line in cycle_report(graph, {}):
        print("cycle:", line)


if __name__ == "__main__":  # pragma: no cover
    _print_graph()
    sys.exit(0)
