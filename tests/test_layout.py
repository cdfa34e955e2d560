"""The shape of the code: rooms depend on each other in one direction, the library has no Dagster
import, no module imports another's private names, long files say why, and ruff is clean."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "assets_pkg"
CORE = PKG / "core"

#: What each room of the library may import besides itself and the shared modules
#: (:data:`SHARED`).  The order is the direction of the data: images are read, checked and
#: stored; models learn from the store; ``plots`` draws arrays and imports no room.
ALLOWED = {
    "plots": set(),
    "ml": {"plots"},
    "imaging": set(),
    "qc": {"imaging"},
    "segmentation": {"imaging", "ml", "plots"},
    "store": {"imaging", "segmentation", "qc"},
    "localization": {"imaging", "store", "ml", "plots"},
}
#: Modules at the top of ``core`` that every room may import (they import no room).
SHARED = {"errors", "config", "presets", "data"}
#: Modules at the top of ``core`` that gather the rooms (nothing in a room imports them).
GATHERING = {"params"}

MAX_LINES = 600


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(absolute module, imported names, line) of every import in ``path``, lazy ones included."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    mod = _module_name(path)
    package = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                out.append((alias.name, [], node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [a.name for a in node.names]
            if not node.module:  # from . import x: x is a module
                for n in names:
                    out.append((f"{target}.{n}", [], node.lineno))
            else:
                out.append((target, names, node.lineno))
    return out


def _py_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def _room(module: str) -> str | None:
    parts = module.split(".")
    if parts[:2] != ["assets_pkg", "core"] or len(parts) < 3:
        return None
    return parts[2]


def _resolve(target: str, known: set[str]) -> str | None:
    """The project module an import refers to (a name imported from a package may be a module)."""
    while target and target not in known:
        target = target.rpartition(".")[0]
    return target or None


def test_core_never_imports_dagster():
    offenders = [f"{p.relative_to(REPO)}:{line}" for p in _py_files(CORE)
                 for target, _, line in _imports(p) if target.split(".")[0] in {"dagster", "dagster_webserver"}]
    assert not offenders, f"the library must not import Dagster: {offenders}"


def test_rooms_depend_in_one_direction():
    bad = []
    for p in _py_files(CORE):
        room = _room(_module_name(p))
        for target, _, line in _imports(p):
            other = _room(target)
            if other is None or other == room or other in SHARED:
                continue
            if room in SHARED and other not in SHARED:
                bad.append(f"{p.relative_to(REPO)}:{line}: shared module {room!r} imports the room {other!r}")
            elif room in GATHERING:
                continue
            elif other in GATHERING:
                bad.append(f"{p.relative_to(REPO)}:{line}: {room!r} imports the gathering module {target}")
            elif room not in ALLOWED:
                bad.append(f"{p.relative_to(REPO)}: room {room!r} is not in the layout table")
            elif other not in ALLOWED[room]:
                bad.append(f"{p.relative_to(REPO)}:{line} ({room}) imports {target} ({other})")
    assert not bad, "room dependencies against the layout:\n" + "\n".join(bad)


def test_no_import_cycles():
    files = _py_files(PKG)
    known = {_module_name(p) for p in files}
    graph: dict[str, set[str]] = {}
    for p in files:
        mod = _module_name(p)
        deps = graph.setdefault(mod, set())
        for target, names, _ in _imports(p):
            if not target.startswith("assets_pkg"):
                continue
            for cand in [f"{target}.{n}" for n in names] + [target]:
                r = _resolve(cand, known)
                if r and r != mod and not mod.startswith(r + "."):  # a package's own __init__ is no cycle
                    deps.add(r)
                    break
    # Tarjan's strongly connected components
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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
                cycles.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in list(graph):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_no_private_names_across_modules():
    files = _py_files(PKG) + _py_files(REPO / "benchmarks")
    bad = []
    for p in files:
        mod = _module_name(p)
        for target, names, line in _imports(p):
            if not target.startswith("assets_pkg") or target == mod:
                continue
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private:
                bad.append(f"{p.relative_to(REPO)}:{line} imports {private} from {target}")
    assert not bad, "\n".join(bad)


def test_long_modules_say_why():
    """A module over MAX_LINES lines states the reason in its docstring ("Why one module: ...")."""
    bad = []
    for p in _py_files(PKG):
        n = len(p.read_text(encoding="utf-8").splitlines())
        if n > MAX_LINES:
            doc = ast.get_docstring(ast.parse(p.read_text(encoding="utf-8"))) or ""
            if "Why one module" not in doc:
                bad.append(f"{p.relative_to(REPO)}: {n} lines")
    assert not bad, f"modules over {MAX_LINES} lines without a stated reason: {bad}"


def test_readme_layout_names_every_room():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = text[text.index("## Layout"):]
    rooms = [d.name for d in CORE.iterdir() if d.is_dir() and d.name != "__pycache__"]
    rooms += [d.name for d in (PKG / "defs").iterdir() if d.is_dir() and d.name != "__pycache__"]
    rooms += [d.name for d in (REPO / "tests").iterdir() if d.is_dir() and d.name != "__pycache__"]
    missing = [r for r in rooms if f"{r}/" not in block and f" {r}," not in block and f" {r})" not in block]
    assert not missing, f"README's Layout section does not name {missing}"
    for r in ALLOWED:
        assert (CORE / r).is_dir(), f"layout table names {r!r}, which is not a folder of core/"


@pytest.mark.skipif(shutil.which("ruff") is None and not (Path(sys.executable).parent / "ruff").exists(),
                    reason="ruff is not installed")
def test_ruff_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    r = subprocess.run([ruff, "check", "."], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_no_merge_conflict_markers_in_tracked_text_files():
    """A merge left ``<<<<<<<``/``>>>>>>>`` lines in the README once; none may reach main again."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    files = subprocess.run(["git", "ls-files", "*.py", "*.md", "*.yaml", "*.yml", "*.toml", "*.txt", "*.cfg"],
                           cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    bad = []
    for name in files:
        path = REPO / name
        if not path.is_file():
            continue
        for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if line.startswith(("<<<<<<< ", ">>>>>>> ")) or line == "<<<<<<<" or line == ">>>>>>>":
                bad.append(f"{name}:{i}")
    assert not bad, f"merge conflict markers at {bad[:10]}"
