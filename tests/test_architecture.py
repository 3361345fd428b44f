"""Dependencies point one way: the core imports none of the built-in packages; only the CLI wires them."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "superbench"
OUTER = ("upstreams", "downstreams", "recipes", "leaderboard")
CLI = CORE / "cli"
STRING_IMPORT = re.compile(rf"^({'|'.join(OUTER)})([.:]\w|$)")


def imported_modules(path: Path) -> set[str]:
    """Every module an `import` or `from ... import` names anywhere in the file (top level or in a function)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
    return out


def string_imports(path: Path) -> set[str]:
    """String constants that name an outer module ("upstreams.hf", "recipes:X"): imports by another route."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in docstrings and STRING_IMPORT.match(n.value)}


def core_files() -> list[Path]:
    return [p for p in sorted(CORE.rglob("*.py")) if CLI not in p.parents and p.name != "__main__.py"]


def test_the_parser_sees_imports_at_any_depth(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import os\nfrom a.b import c\ndef f():\n    from leaderboard.store import X\n"
                     "    import upstreams.hf as h\nx = 'recipes:BUILTIN_TASKS'\n")
    assert imported_modules(probe) == {"os", "a.b", "leaderboard.store", "upstreams.hf"}
    assert string_imports(probe) == {"recipes:BUILTIN_TASKS"}


def test_core_imports_none_of_the_outer_packages():
    files = core_files()
    assert len(files) >= 15 and CORE / "runner.py" in files and CORE / "features" / "store.py" in files
    wrong = {f"{p.relative_to(ROOT)} imports {m}" for p in files for m in imported_modules(p)
             if m.split(".")[0] in OUTER or m.startswith("superbench.cli")}
    wrong |= {f"{p.relative_to(ROOT)} names {s!r}" for p in files for s in string_imports(p)}
    assert not wrong, "imports against the core -> outer direction:\n" + "\n".join(sorted(wrong))


def test_outer_packages_never_import_the_cli():
    files = [p for pkg in OUTER for p in sorted((ROOT / pkg).rglob("*.py"))]
    wrong = {f"{p.relative_to(ROOT)} imports {m}" for p in files for m in imported_modules(p)
             if m.startswith("superbench.cli")}
    assert files and not wrong, "\n".join(sorted(wrong))


def test_every_core_module_imports_with_the_outer_packages_blocked():
    """The same rule at run time: import every core module in a process where the outer packages cannot load."""
    modules = [".".join(p.relative_to(ROOT).with_suffix("").parts) for p in core_files()]
    modules = [m.removesuffix(".__init__") for m in modules]
    script = (
        "import importlib, sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {OUTER!r}:\n"
        "            raise ImportError(f'core imported {name}')\n"
        "sys.meta_path.insert(0, Block())\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        "print(len(sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


# --------------------------------------------------------------------------- no import circles

PROJECT = ("superbench",) + OUTER


def project_modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the project's packages (a package is its __init__.py)."""
    out = {}
    for pkg in PROJECT:
        for p in sorted((ROOT / pkg).rglob("*.py")):
            out[".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")] = p
    return out


def _type_checking_only(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"
                                         or isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def runtime_imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The project modules `path` (module `name`) imports when it runs: at module level and inside functions
    alike (a deferred import closes a circle all the same, only later); `if TYPE_CHECKING:` blocks are
    annotations, never executed, and do not count. `from pkg import sub` names the submodule when it is one."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()

    def owner(dotted: str) -> str | None:
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    def visit(node: ast.AST) -> None:
        if _type_checking_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            targets = []
        out.update(m for m in map(owner, targets) if m is not None and m != name)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    return out


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One closed path (first module repeated at the end) per strongly connected group of modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    cycles = []
    for group in groups:  # the shortest way from the group's first module back to itself, inside the group
        start = min(group)
        paths = {w: [start, w] for w in graph[start] if w in group}
        while start not in paths:
            paths = {w: path + [w] for path in paths.values() for w in graph[path[-1]] if w in group
                     and w not in path[1:]} | paths
        cycles.append(paths[start])
    return cycles


def test_the_cycle_finder_names_each_circle_and_resolves_package_imports(tmp_path):
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert import_cycles({"a": {"b"}, "b": set(), "c": {"d"}, "d": {"c"}}) == [["c", "d", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    probe = pkg / "probe.py"
    probe.write_text("from typing import TYPE_CHECKING\nfrom pkg import sub, Thing\nfrom . import other\n"
                     "if TYPE_CHECKING:\n    from pkg.typed import T\n"
                     "def f():\n    import pkg.deferred.inner\n")
    modules = {m: probe for m in ("pkg", "pkg.probe", "pkg.sub", "pkg.other", "pkg.typed", "pkg.deferred")}
    assert runtime_imports(probe, "pkg.probe", modules) == {"pkg", "pkg.sub", "pkg.other", "pkg.deferred"}


def test_no_import_circles_among_the_project_modules():
    """A circle makes import order matter and hides which module depends on which; every import, deferred
    into a function or not, points one way."""
    modules = project_modules()
    assert "superbench.runner" in modules and "leaderboard.store" in modules and "recipes" in modules
    graph = {name: runtime_imports(path, name, modules) for name, path in modules.items()}
    assert "superbench.plan" in graph["superbench.runner"]
    cycles = import_cycles(graph)
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


# --------------------------------------------------------------------------- the core in rings

#: Every module of the project by ring; a module imports only modules of its own ring or of rings below it.
#: 0 contracts and data (the upstream and downstream contracts, tasks, recipes, manifests, records and run
#: keys, registries, io, paths, device, audio, metrics); 1 the engine (feature cache and extraction, the one
#: training loop, the run protocol and its estimates, executors, test dummies); 2 the satellites (built-in
#: upstreams, downstream kinds, task declarations and preparers, the leaderboard); 3 the command line.
CONTRACTS = {"audio", "audio_metrics", "device", "downstream", "exit_codes", "extras", "featurizer", "io", "manifest",
             "metrics", "options", "paths", "preparers", "provenance", "recipe", "record_units", "records", "registry",
             "run_key", "summary", "task_info", "tasks", "torchaudio_compat", "uncertainty", "upstream", "validate",
             "vc_metrics", ""}
ENGINE = {"artifacts", "executors", "features", "plan", "preflight", "runner", "sweep", "task_plan", "testing",
          "training", "trial_files", "trial_group"}
RING_NAMES = ("contracts", "engine", "satellites", "cli")


def ring_of(module: str) -> int:
    """The ring of a dotted module name of the project (see CONTRACTS / ENGINE)."""
    top, _, rest = module.partition(".")
    if top in OUTER:
        return 2
    if rest == "cli" or rest.startswith("cli.") or rest == "__main__":
        return 3
    if rest.split(".")[0] in ENGINE:
        return 1
    if rest.split(".")[0] in CONTRACTS:
        return 0
    raise KeyError(f"{module} is in no ring: add it to CONTRACTS or ENGINE in tests/test_architecture.py")


def test_every_core_module_has_a_ring_and_imports_only_its_own_or_lower_rings():
    modules = project_modules()
    rings = {name: ring_of(name) for name in modules}  # a new core module without a ring fails here
    assert rings["superbench.records"] == 0 and rings["superbench.runner"] == 1 and rings["leaderboard.check"] == 2
    assert rings["superbench.cli.run"] == 3
    wrong = sorted(f"{name} ({RING_NAMES[rings[name]]}) imports {target} ({RING_NAMES[rings[target]]})"
                   for name, path in modules.items() for target in runtime_imports(path, name, modules)
                   if rings[target] > rings[name])
    assert not wrong, "imports against the rings:\n" + "\n".join(wrong)


def test_ring_of_places_names():
    assert [ring_of(m) for m in ("superbench", "superbench.tasks", "superbench.training", "upstreams.hf",
                                 "superbench.cli", "superbench.cli.data")] == [0, 0, 1, 2, 3, 3]
    with pytest.raises(KeyError, match="superbench.newthing is in no ring"):
        ring_of("superbench.newthing")
