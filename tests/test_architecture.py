"""Dependencies point one way: the core imports none of the built-in packages; only the CLI wires them."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

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
    assert len(files) >= 15 and CORE / "runner.py" in files and CORE / "cache.py" in files
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
