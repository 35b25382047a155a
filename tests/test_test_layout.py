"""The tests' own layout: shared helpers live in the ``support`` package; neither they, nor bench/
or contrib/, import a test module or a helper by its old top-level name."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OLD_NAMES = {"daemon", "farmer_v1", "fault_load", "tcp_proxy", "conftest"}


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def files() -> list[Path]:
    return [*sorted((ROOT / "tests").rglob("*.py")), *sorted((ROOT / "bench").rglob("*.py")),
            *sorted((ROOT / "contrib").rglob("*.py"))]


def test_nothing_imports_a_test_module_or_an_old_helper_name():
    wrong = []
    for path in files():
        if "vectors" in path.parts:
            continue
        for name in imported(path):
            top = name.split(".")[0]
            if top.startswith("test_") or top in OLD_NAMES or name.startswith("tests."):
                wrong.append((str(path.relative_to(ROOT)), name))
    assert not wrong, wrong


def test_outside_tests_nothing_imports_the_support_package():
    for path in files():
        if path.is_relative_to(ROOT / "tests"):
            continue
        assert not [n for n in imported(path) if n.split(".")[0] == "support"], path


def test_the_helpers_are_one_package():
    support = ROOT / "tests" / "support"
    assert (support / "__init__.py").is_file()
    assert not [p.name for p in (ROOT / "tests").glob("*.py")
                if not p.name.startswith("test_") and p.name != "conftest.py"]


def test_test_files_are_named_for_their_subject_not_the_technique():
    """Tests that pin mutants live in the test file of the module they pin (issue 22): no pins files."""
    technique = re.compile(r"(^|_)(mutation_)?pins?(_|$)")
    assert not [p.name for p in (ROOT / "tests").rglob("test_*.py") if technique.search(p.stem[len("test_"):])]
