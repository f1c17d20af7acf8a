"""The package's architecture, checked from the source so import cycles and upward imports cannot come back.

`pipeline/` is layered, bottom to top; a module imports its own group and lower layers, never a higher one:

    4  entry     pipeline/cli.py, pipeline/service/ (HTTP API), pipeline/bench/ (the bench command), pipeline/testing/ (fakes shipped for tests),
                 pipeline/cluster/ (a fleet's coordinator, fleet command and /api/cluster)
    3  runtime   pipeline/runtime/: wires the stages together
    2  stages of the data flow, five groups that never import one another:
       sources, align, detect, stages, sinks (pipeline/<group>/)
    1  config    pipeline/config/
    0  base      pipeline/__init__.py, types.py, errors.py, backoff.py, plugins.py, machine.py, mot.py, logs.py, masking.py,
                 fps_cap.py, files.py

Why: each stage can then be read, tested and replaced alone, only runtime knows how they fit, and an
import cycle cannot leave a module half-initialised. The checks parse whatever modules exist (the package
is being reorganised) and import none. The KNOWN_* allow-lists name today's violations with a reason each;
an entry that no longer violates fails too, so the lists only shrink.
"""
from __future__ import annotations

import ast
import functools
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[2]
MAX_LINES = 400
LAYER = {"base": 0, "config": 1, "sources": 2, "align": 2, "detect": 2, "stages": 2, "sinks": 2, "runtime": 3, "entry": 4}
GROUP = {  # a module belongs to the group of its longest listed prefix; pipeline/__init__.py is base
    "pipeline.types": "base", "pipeline.errors": "base", "pipeline.backoff": "base",
    "pipeline.plugins": "base", "pipeline.machine": "base", "pipeline.mot": "base", "pipeline.logs": "base", "pipeline.masking": "base",
    "pipeline.fps_cap": "base", "pipeline.files": "base",
    "pipeline.config": "config",
    "pipeline.sources": "sources", "pipeline.align": "align", "pipeline.detect": "detect",
    "pipeline.stages": "stages", "pipeline.sinks": "sinks", "pipeline.runtime": "runtime",
    "pipeline.cli": "entry", "pipeline.testing": "entry", "pipeline.service": "entry", "pipeline.bench": "entry",
    "pipeline.cluster": "entry",
}
NOT_SHIPPED = ("samples", "tests", "benchmarks")  # development trees the package must not need

# Known violations, each with a reason: "<file> -> <imported module>" (or "<file> unlayered"). Empty: keep them so.
KNOWN_LAYER_BREAKS: dict[str, str] = {}
KNOWN_CYCLES: dict[str, str] = {}
KNOWN_LONG_MODULES: dict[str, str] = {}
KNOWN_UNSHIPPED_IMPORTS: dict[str, str] = {}


class Module(NamedTuple):
    name: str  # dotted: pipeline.sources.worker; a package is named by its __init__.py
    path: str  # relative to the root, as reported: pipeline/sources/worker.py
    tree: ast.Module
    lines: int


class Violation(NamedTuple):
    key: str  # without line numbers, so allow-lists survive edits
    message: str


@functools.cache
def load_modules(root: Path) -> tuple[Module, ...]:
    """Every .py file under root/pipeline, parsed."""
    modules = []
    for file in sorted((root / "pipeline").rglob("*.py")):
        parts = file.relative_to(root).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        text = file.read_text(encoding="utf-8")
        modules.append(Module(name, file.relative_to(root).as_posix(), ast.parse(text), len(text.splitlines())))
    return tuple(modules)


def prefixes(name: str) -> list[str]:
    """pipeline.a.b -> [pipeline.a.b, pipeline.a, pipeline]: the module and the packages whose __init__ it runs."""
    parts = name.split(".")
    return [".".join(parts[:n]) for n in range(len(parts), 0, -1)]


def is_type_checking(node: ast.AST) -> bool:
    """`if TYPE_CHECKING:` or `if typing.TYPE_CHECKING:`, whose imports only a type checker runs."""
    test = node.test if isinstance(node, ast.If) else None
    return "TYPE_CHECKING" in (getattr(test, "id", None), getattr(test, "attr", None))


def import_nodes(nodes, into_functions: bool):
    """Import statements that run, skipping `if TYPE_CHECKING:` bodies and, unless asked, function bodies."""
    for node in nodes:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif is_type_checking(node):
            yield from import_nodes(node.orelse, into_functions)
        elif into_functions or not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from import_nodes(ast.iter_child_nodes(node), into_functions)


def imported(module: Module, node: ast.Import | ast.ImportFrom, known: set[str]) -> list[str]:
    """The modules one statement imports: `from pkg import name` is pkg.name when that is a submodule."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # from . import x, from ..runtime import queues
        parts = module.name.split(".")
        package = parts if module.path.endswith("__init__.py") else parts[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]


def imports(root: Path, into_functions: bool):
    """(module, line, imported module) for every import in the package."""
    modules = load_modules(root)
    known = {name for m in modules for name in prefixes(m.name)}  # namespace packages (no __init__) too
    for module in modules:
        for node in import_nodes(module.tree.body, into_functions):
            for target in imported(module, node, known):
                yield module, node.lineno, target


def group_of(name: str) -> str | None:
    """The group of the longest GROUP prefix; the bare package root only for pipeline/__init__.py itself."""
    return "base" if name == "pipeline" else next((GROUP[p] for p in prefixes(name)[:-1] if p in GROUP), None)


def layer_breaks(root: Path) -> list[Violation]:
    """Rule 1: imports (lazy ones too) of a higher layer or of another layer-2 group; modules in no layer."""
    found = [Violation(f"{m.path} unlayered", f"{m.path}: in no layer; put it in a layer (GROUP in {Path(__file__).name})")
             for m in load_modules(root) if group_of(m.name) is None]
    for module, line, target in imports(root, into_functions=True):
        mine, theirs = group_of(module.name), group_of(target)
        if mine and theirs and theirs != mine and LAYER[theirs] >= LAYER[mine]:
            rule = f"{mine} (layer {LAYER[mine]}) may not import {theirs} (layer {LAYER[theirs]})"
            found.append(Violation(f"{module.path} -> {target}", f"{module.path}:{line} imports {target}: {rule}"))
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> modules its top-level imports run: the target and the __init__ of each package above it,
    except packages above the importer itself (already running) unless imported by name."""
    graph: dict[str, set[str]] = {m.name: set() for m in load_modules(root)}
    for module, _, target in imports(root, into_functions=False):
        for name in prefixes(target):
            if name in graph and name != module.name and (name == target or not module.name.startswith(name + ".")):
                graph[module.name].add(name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[Violation]:
    """Rule 2: every simple cycle once, as a chain from its alphabetically first module."""
    found = []

    def walk(start: str, path: list[str]) -> None:
        for nxt in sorted(graph[path[-1]]):
            if nxt == start:
                chain = " -> ".join([*path, start])
                found.append(Violation(chain, f"import cycle: {chain}"))
            elif nxt > start and nxt not in path:
                walk(start, [*path, nxt])

    for start in sorted(graph):
        walk(start, [start])
    return found


def long_modules(root: Path) -> list[Violation]:
    """Rule 3: modules over MAX_LINES lines."""
    return [Violation(m.path, f"{m.path}: {m.lines} lines, over the {MAX_LINES}-line limit; split it")
            for m in load_modules(root) if m.lines > MAX_LINES]


def unshipped_imports(root: Path) -> list[Violation]:
    """Rule 4: imports (lazy ones too) of the development trees that are not part of the package."""
    return [Violation(f"{m.path} -> {target}", f"{m.path}:{line} imports {target}: pipeline may not import {target.split('.')[0]}")
            for m, line, target in imports(root, into_functions=True) if target.split(".")[0] in NOT_SHIPPED]


def problems(found: list[Violation], known: dict[str, str]) -> list[str]:
    """Violations not in the allow-list, and allow-list entries that no longer violate."""
    keys = {v.key for v in found}
    stale = [f"stale allow-list entry {k!r} ({why}): it no longer violates; remove it" for k, why in known.items() if k not in keys]
    return [v.message for v in found if v.key not in known] + stale


def test_no_module_imports_a_higher_layer_or_another_stage_group():
    assert not (found := problems(layer_breaks(REPO), KNOWN_LAYER_BREAKS)), "\n".join(found)


def test_pipeline_modules_import_each_other_without_cycles():
    assert not (found := problems(cycles(import_graph(REPO)), KNOWN_CYCLES)), "\n".join(found)


def test_no_module_is_longer_than_400_lines():
    assert not (found := problems(long_modules(REPO), KNOWN_LONG_MODULES)), "\n".join(found)


def test_pipeline_never_imports_samples_tests_or_benchmarks():
    assert not (found := problems(unshipped_imports(REPO), KNOWN_UNSHIPPED_IMPORTS)), "\n".join(found)


def test_checker_reports_each_rule_on_a_package_that_breaks_it(tmp_path):
    files = {
        "pipeline/__init__.py": "",
        "pipeline/extra.py": "",  # in no layer
        "pipeline/runtime/queues.py": "",
        "pipeline/sources/worker.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pipeline import sinks\n"
                                      "def start():\n    from ..runtime import queues\n",  # lazy and relative: still upward
        "pipeline/sinks/__init__.py": "from pipeline.sinks.jsonl import JsonlSink\n",
        "pipeline/sinks/jsonl.py": "from pipeline.sinks.rows import row\nimport samples.world\n",
        "pipeline/sinks/rows.py": "from pipeline.sinks import JsonlSink\n",  # needs sinks/__init__, which needs rows
        "pipeline/stages/alerts/rules.py": "from pipeline.stages.analytics.common import new_event\n",
        "pipeline/stages/analytics/__init__.py": "from pipeline.stages.analytics.stage import AnalyticsStage\n",
        "pipeline/stages/analytics/stage.py": "from pipeline.stages.alerts.rules import RuleEngine\n",
        "pipeline/detect/big.py": "x = 1\n" * 401,
    }
    for relative, text in files.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text, encoding="utf-8")
    assert [v.message for v in layer_breaks(tmp_path)] == [
        "pipeline/extra.py: in no layer; put it in a layer (GROUP in test_layers.py)",
        "pipeline/sources/worker.py:5 imports pipeline.runtime.queues: sources (layer 2) may not import runtime (layer 3)",
    ]
    assert [v.key for v in cycles(import_graph(tmp_path))] == [
        "pipeline.sinks -> pipeline.sinks.jsonl -> pipeline.sinks.rows -> pipeline.sinks",
        "pipeline.stages.alerts.rules -> pipeline.stages.analytics -> pipeline.stages.analytics.stage -> pipeline.stages.alerts.rules",
    ]
    assert [v.key for v in long_modules(tmp_path)] == ["pipeline/detect/big.py"]
    assert [v.message for v in unshipped_imports(tmp_path)] == [
        "pipeline/sinks/jsonl.py:2 imports samples.world: pipeline may not import samples"]
    assert problems([], {"pipeline/gone.py": "split"}) == [
        "stale allow-list entry 'pipeline/gone.py' (split): it no longer violates; remove it"]
