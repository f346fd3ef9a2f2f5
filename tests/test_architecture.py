"""The house's rules, checked on the source: SQL only in the store, no import cycles.

Both checks read the modules with :mod:`ast` (nothing is imported), so they run in milliseconds and name
the file and line that breaks a rule.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import mlma

PACKAGE = Path(mlma.__file__).resolve().parent
#: Modules outside ``mlma/store`` still allowed to use SQL or the store's private transactions: none. (An entry
#: added here must go again once its module is clean: the test below fails on a stale entry.)
PRIVATE_STORE_ALLOWED: set[str] = set()


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (``mlma.api.queries``; a package by its own name)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if "migrations" in parts:  # Alembic scripts: SQL is their job, and they live in store/ anyway
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _relative(path: Path) -> str:
    return path.relative_to(PACKAGE.parent).as_posix()


def _outside_store(path: Path) -> bool:
    return not _relative(path).startswith("mlma/store/")


def sql_breaches(source: str, label: str) -> list[str]:
    r"""Where a module's ``source`` imports SQLAlchemy or calls ``._read()`` / ``._write()`` (the store's
    private transactions), as ``label:line: what``.

    >>> sql_breaches("import sqlalchemy as sa\nstore._write()\nstore.write_tick(1)", "m.py")
    ['m.py:1: imports sqlalchemy', 'm.py:2: ._write()']
    """
    found = []
    for node in ast.walk(ast.parse(source, filename=label)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in ("_read", "_write"):
            found.append((node.lineno, f"{label}:{node.lineno}: .{node.func.attr}()"))
            continue
        else:
            continue
        found += [(node.lineno, f"{label}:{node.lineno}: imports {n}") for n in names
                  if n == "sqlalchemy" or n.startswith("sqlalchemy.")]
    return [text for _, text in sorted(found)]


def module_imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The mlma modules ``name`` imports at module level (not inside functions, which run later).

    ``from mlma.x import y`` counts as importing ``mlma.x.y`` when that is a module, else ``mlma.x``.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in tree.body:
        if isinstance(node, ast.If):  # `if TYPE_CHECKING:` blocks are not run
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for target in targets:
            # `import mlma.a.b` runs mlma.a too; the nearest known module is the edge.
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def import_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a list of modules (first == last), or None.

    >>> import_cycle({"a": {"b"}, "b": {"a"}})
    ['a', 'b', 'a']
    >>> import_cycle({"a": {"b"}, "b": set()}) is None
    True
    """
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        cycle = list(exc.args[1])
        return cycle[::-1]
    return None


def _breaches(path: Path) -> list[str]:
    return sql_breaches(path.read_text(), _relative(path))


def test_no_sql_outside_the_store():
    breaches = [b for path in _modules().values() if _outside_store(path) for b in _breaches(path)]
    unexpected = [b for b in breaches if b.split(":")[0] not in PRIVATE_STORE_ALLOWED]
    assert not unexpected, "SQL outside mlma/store/ (add a public Store method instead):\n" + "\n".join(unexpected)


def test_the_allow_list_is_not_stale():
    """Every allowed module still needs its exemption; an exemption no longer used must be removed."""
    modules = {_relative(p): p for p in _modules().values()}
    stale = sorted(m for m in PRIVATE_STORE_ALLOWED if m not in modules or not _breaches(modules[m]))
    assert not stale, f"remove {stale} from PRIVATE_STORE_ALLOWED"


def test_the_scan_sees_every_forbidden_form():
    """Each forbidden form is recognised, wherever it sits (so an empty scan result means something)."""
    source = ("import sqlalchemy as sa\nfrom sqlalchemy.orm import Session\nimport numpy\n"
              "def f(store):\n    with store._read() as c:\n        pass\n    store._write()\n    store.read()\n")
    assert [b.split(": ", 1)[1] for b in sql_breaches(source, "probe.py")] == [
        "imports sqlalchemy", "imports sqlalchemy.orm", "._read()", "._write()"]


def test_the_import_graph_sees_cycles_through_from_imports():
    """``from mlma.b import x`` is an edge to mlma.b, and a cycle through it is found."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "mlma"
        root.mkdir()
        (root / "a.py").write_text("from mlma.b import f\n")
        (root / "b.py").write_text("import numpy\ndef f():\n    from mlma import a\n")
        known = {"mlma", "mlma.a", "mlma.b"}
        graph = {"mlma.a": module_imports("mlma.a", root / "a.py", known),
                 "mlma.b": module_imports("mlma.b", root / "b.py", known)}
        assert graph == {"mlma.a": {"mlma.b"}, "mlma.b": set()}   # the import inside f runs later
        (root / "b.py").write_text("from mlma.a import g\n")
        graph["mlma.b"] = module_imports("mlma.b", root / "b.py", known)
        assert import_cycle(graph) in (["mlma.a", "mlma.b", "mlma.a"], ["mlma.b", "mlma.a", "mlma.b"])


def test_no_import_cycles():
    modules = _modules()
    known = set(modules)
    graph = {name: module_imports(name, path, known) for name, path in modules.items()}
    cycle = import_cycle(graph)
    assert cycle is None, "module-level import cycle: " + " -> ".join(cycle)
