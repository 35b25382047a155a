"""The layout's rules, checked on the source: no import cycle in ``downstream_tx``, no module
importing from a layer above its own, ``domain/`` pure (no framework, only the base layer), the two
protocols apart, SQL only in ``db/``, HTTP only in
``http/`` (and the farmer client), the global reactor only in the entry points (``tap.py``, the
farmer's ``main.py``), the farmer beside the server sharing only the heartbeat, signing and wire
formats.

Run alone: ``python -m pytest tests/test_architecture.py``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "downstream_tx"

#: lowest first; a module may import from its own layer or any below it
LAYERS = [
    ["downstream_tx", "downstream_tx.errors", "downstream_tx.private", "downstream_tx.bitcoin",
     "downstream_tx.heartbeat", "downstream_tx.db.url", "downstream_tx.wire"],
    # the rules as pure decisions: below every store, see test_the_domain_imports_no_framework
    ["downstream_tx.domain"],
    ["downstream_tx.config", "downstream_tx.logs", "downstream_tx.systemd", "downstream_tx.geoip"],
    # the reputation rules as pure functions: no framework, no database
    ["downstream_tx.domain"],
    ["downstream_tx.db"],
    ["downstream_tx.core", "downstream_tx.health"],
    ["downstream_tx.v0", "downstream_tx.v1", "downstream_tx.dashboard.data"],
    ["downstream_tx.jobs", "downstream_tx.http", "downstream_tx.metrics", "downstream_tx.dashboard",
     "downstream_tx.lifecycle"],
    # startup explains start-up failures for runtime (a missing database), tap and admin
    ["downstream_tx.runtime", "downstream_tx.startup"],
    ["downstream_tx.tap", "downstream_tx.admin", "downstream_tx.admin_lifecycle", "downstream_tx.listeners",
     "downstream_tx.workers"],
    # the farmer client stands beside the server: see FARMER_SHARES
    ["downstream_tx.farmer"],
]
#: the domain layer: pure rules, importing only the base layer (LAYERS[0]) and no framework
DOMAIN = "downstream_tx.domain"
FRAMEWORKS = ("twisted", "klein", "werkzeug", "pymysql", "sqlite3", "treq", "MySQLdb", "zope")
#: all the farmer client may import of the package: the heartbeat maths, bitcoin signed messages,
#: the wire formats both ends share, and the package's version
FARMER = "downstream_tx.farmer"
FARMER_SHARES = ("downstream_tx", "downstream_tx.heartbeat", "downstream_tx.bitcoin", "downstream_tx.wire",
                 "downstream_tx.version")
#: the modules that may use the global reactor (console and twistd entry points)
ENTRY_POINTS = ("downstream_tx.tap", "downstream_tx.farmer.main")
#: packages of one layer that must not import each other
APART = [("downstream_tx.v0", "downstream_tx.v1")]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(path: Path) -> set[str]:
    """Every ``downstream_tx`` module ``path`` imports, at any depth of the file."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:
                package = module_name(path).rsplit(".", node.level)[0]
                base = f"{package}.{node.module}"
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    known = modules()
    return {m for m in out if m in known}


def layer_of(name: str) -> int:
    best, found = -1, -1
    for n, layer in enumerate(LAYERS):
        for prefix in layer:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best:
                best, found = len(prefix), n
    assert found >= 0, f"{name} is in no layer: add it to LAYERS"
    return found


def graph() -> dict[str, set[str]]:
    return {name: imports_of(path) - {name} for name, path in modules().items()}


def test_every_module_has_a_layer():
    for name in modules():
        layer_of(name)


def test_no_module_imports_from_a_layer_above_it():
    wrong = [(a, b) for a, deps in graph().items() for b in deps
             if layer_of(b) > layer_of(a) and not a.startswith(b + ".") and b != "downstream_tx"]
    assert not wrong, wrong


def test_the_protocols_do_not_import_each_other():
    for a, deps in graph().items():
        for left, right in APART:
            for mine, theirs in ((left, right), (right, left)):
                if a.startswith(mine):
                    assert not [d for d in deps if d.startswith(theirs)], (a, deps)


def test_no_import_cycle():
    edges = graph()
    # a package's __init__ importing its own modules is not a cycle of the layout
    edges = {a: {b for b in deps if not a == b.rsplit(".", 1)[0]} for a, deps in edges.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name)


_SQL = re.compile(r"\b(SELECT .* FROM|INSERT INTO|UPDATE \w+ SET|DELETE FROM)\b")


def test_sql_only_in_db():
    for name, path in modules().items():
        if name.startswith("downstream_tx.db"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert not _SQL.search(node.value), (name, node.value[:80])


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_farmer_shares_only_heartbeat_signing_and_wire_formats():
    for name, deps in graph().items():
        if _within(name, FARMER):
            wrong = [d for d in deps if not _within(d, FARMER) and d != "downstream_tx"
                     and not any(_within(d, shared) for shared in FARMER_SHARES[1:])]
            assert not wrong, (name, wrong)
        else:
            assert not [d for d in deps if _within(d, FARMER)], (name, deps)


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names imported from it) of every import statement in ``path``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append((node.module or "", [a.name for a in node.names]))
    return out


def _is_of(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


#: the web frameworks of the server: only ``downstream_tx.http`` imports them (not even ``tap``,
#: which builds the site through ``http.server``)
WEB_FRAMEWORKS = ("klein", "werkzeug")


def test_http_only_in_http():
    server_web = (*WEB_FRAMEWORKS, "twisted.web", "treq")
    # the farmer is an HTTP client of its own (treq, twisted.web.client), never a server
    client_web = (*WEB_FRAMEWORKS, "twisted.web.server", "twisted.web.resource")
    for name, path in modules().items():
        if _within(name, "downstream_tx.http"):
            continue
        web = client_web if _within(name, FARMER) else server_web
        imported = [module for module, _ in _imports(path)]
        assert not [m for m in imported if _is_of(m, web)], (name, imported)


def test_no_private_module_or_name_of_klein_or_werkzeug():
    """Nothing (the package, its tests, benchmarks and contrib scripts) imports a private module of
    Klein or werkzeug (``klein._resource``) or a ``_``-prefixed name of theirs, nor reaches one as
    an attribute (``klein._app``): their public APIs only."""
    files = [*PACKAGE.rglob("*.py"), *(ROOT / "tests").rglob("*.py"), *(ROOT / "bench").rglob("*.py"),
             *(ROOT / "contrib").rglob("*.py")]
    attribute = re.compile(r"\b(?:klein|werkzeug)(?:\.\w+)*\._\w")
    for path in files:
        for module, names in _imports(path):
            if _is_of(module, WEB_FRAMEWORKS):
                assert not [p for p in module.split(".") if p.startswith("_")], (path, module)
                assert not [n for n in names if n.startswith("_")], (path, module, names)
        if path.name != "test_architecture.py":
            assert not attribute.search(path.read_text(encoding="utf-8")), path


def test_the_global_reactor_only_in_the_entry_points():
    for name, path in modules().items():
        text = path.read_text(encoding="utf-8")
        if re.search(r"from twisted\.internet import (.*\b)?reactor\b|twisted\.internet\.reactor", text):
            assert name in ENTRY_POINTS, name


def test_no_test_imports_another_test_module():
    for path in (ROOT / "tests").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("test_"), (path.name, node.module)
            if isinstance(node, ast.Import):
                assert not [a.name for a in node.names if a.name.startswith("test_")], path.name


def _imported_names(path: Path) -> list[str]:
    """Every module name ``path`` imports (absolute names, any package), at any depth."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
    return names


def test_the_domain_imports_no_framework_and_no_other_layer():
    """``domain/`` decides, it does not do: no Twisted, SQL driver or HTTP, and of the node only the
    base layer (its tests need no database and no reactor)."""
    found = {name: path for name, path in modules().items() if _within(name, DOMAIN)}
    assert found, "no domain package"
    for name, path in found.items():
        wrong = [n for n in _imported_names(path) if n.split(".")[0] in FRAMEWORKS]
        assert not wrong, (name, wrong)
        outside = [d for d in imports_of(path) if not _within(d, DOMAIN) and layer_of(d) != 0]
        assert not outside, (name, outside)
        assert not any(node.level for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                       if isinstance(node, ast.ImportFrom)), (name, "relative import")


#: the composition root: the only modules that build stores, and that must build every object whole
COMPOSITION_ROOT = ("downstream_tx.runtime",)
#: the process entry points that assemble the node with the composition root's builders
ASSEMBLERS = ("downstream_tx.runtime", "downstream_tx.tap")


def _store_classes() -> set[str]:
    names = {"Stores"}
    for name, path in modules().items():
        if _within(name, "downstream_tx.db"):
            names |= {node.name for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                      if isinstance(node, ast.ClassDef) and node.name.endswith("Store")}
    return names


def _called_name(call: ast.Call) -> str:
    func = call.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def test_only_the_composition_root_builds_stores():
    stores = _store_classes()
    for name, path in modules().items():
        if _within(name, "downstream_tx.db") or name in COMPOSITION_ROOT:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                assert _called_name(node) not in stores, (name, _called_name(node))


def test_the_composition_root_patches_nothing_it_built():
    """No attribute of an object other than the assembler's own is set, and no observer list is
    added to: what an object needs is given to its constructor."""
    for name in ASSEMBLERS:
        tree = ast.parse(modules()[name].read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
            for target in targets:
                for part in ast.walk(target):
                    if isinstance(part, ast.Attribute):
                        base = part.value
                        assert isinstance(base, ast.Name) and base.id == "self", (name, ast.unparse(target))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    node.func.attr in ("append", "extend", "insert"):
                owner = node.func.value
                assert not (isinstance(owner, ast.Attribute) and owner.attr.endswith("observers")), \
                    (name, ast.unparse(node))
