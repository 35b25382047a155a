"""The mutation runner (tests/mutation/__init__.py): its mutants, samples, scores, and that it never changes
the work tree. Its full runs are not part of the suite (README, "Mutation testing")."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support import wait_until
from tests import mutation  # (the runner package: not a test module)

KILLED, SURVIVED, TIMEOUT = mutation.KILLED, mutation.SURVIVED, mutation.TIMEOUT
ModuleReport, Outcome = mutation.ModuleReport, mutation.Outcome
generate_mutants, sample_mutants = mutation.generate_mutants, mutation.sample_mutants

SAMPLE = '''"""Module docstring: never mutated."""
from __future__ import annotations

__all__ = ["clamp"]
LIMIT = 10


def clamp(v: int | None, lo: int = 0) -> int:
    """Docstring."""
    if v is None or v in (1, 2):
        return lo
    if not lo <= v < LIMIT:
        v = min(v, LIMIT) * 2
    flag = True
    total = 0
    for k in range(v):
        if k == 3:
            break
        total += k
    print("done")  # pragma: no mutate
    name = f"{v + 1}"
    g = lambda: total - 1
    return total + len(b"ab") + len(name) + g()


@staticmethod
def hidden(x: "str") -> bool:
    return x is not None and x not in "é"
'''


def _mutated_lines(path: str = "pkg/sample.py") -> dict[str, list[tuple[str, str]]]:
    found: dict[str, list[tuple[str, str]]] = {}
    for m in generate_mutants(SAMPLE, path):
        found.setdefault(m.operator, []).append(m.lines(SAMPLE))
    return found


def test_every_operator_on_a_sample_module() -> None:
    found = _mutated_lines()
    assert ("if v is None or v in (1, 2):", "if v is not None or v in (1, 2):") in found["compare"]
    assert ("if v is None or v in (1, 2):", "if v is None or v not in (1, 2):") in found["compare"]
    assert ("if not lo <= v < LIMIT:", "if not lo < v < LIMIT:") in found["compare"]
    assert ("if not lo <= v < LIMIT:", "if not lo <= v <= LIMIT:") in found["compare"]
    assert ("if k == 3:", "if k != 3:") in found["compare"]
    assert ('return x is not None and x not in "é"', 'return x is None and x not in "é"') in found["compare"]
    assert ('return x is not None and x not in "é"', 'return x is not None and x in "é"') in found["compare"]
    assert ("if v is None or v in (1, 2):", "if v is None and v in (1, 2):") in found["boolop"]
    assert ('return x is not None and x not in "é"', 'return x is not None or x not in "é"') in found["boolop"]
    assert found["not"] == [("if not lo <= v < LIMIT:", "if lo <= v < LIMIT:")]
    assert ("v = min(v, LIMIT) * 2", "v = min(v, LIMIT) / 2") in found["binop"]
    assert ("total += k", "total -= k") in found["binop"]
    assert ("g = lambda: total - 1", "g = lambda: total + 1") in found["binop"]
    assert ("LIMIT = 10", "LIMIT = 11") in found["number"]
    assert ("if k == 3:", "if k == 4:") in found["number"]
    assert ("v = min(v, LIMIT) * 2", "v = min(v, LIMIT) * 3") in found["number"]
    assert found["bool"] == [("flag = True", "flag = False")]
    assert found["loop"] == [("break", "continue")]
    assert ("return lo", "return None") in found["return"]
    assert ("v = min(v, LIMIT) * 2", "v = None") in found["assign"]
    assert found["lambda"] == [("g = lambda: total - 1", "g = lambda: None")]
    assert found["decorator"] == [("@staticmethod", "(removed)")]
    assert ('return total + len(b"ab") + len(name) + g()', "return total + len(b'XXabXX') + len(name) + g()") in (
        found["string"]
    )
    assert ('return x is not None and x not in "é"', "return x is not None and x not in 'XXéXX'") in found["string"]


def test_what_is_never_mutated() -> None:
    mutants = generate_mutants(SAMPLE, "pkg/sample.py")
    lines = SAMPLE.splitlines()
    by_line: dict[int, list[str]] = {}
    for m in mutants:
        by_line.setdefault(m.line, []).append(m.lines(SAMPLE)[1])
    assert lines[3] == '__all__ = ["clamp"]' and 4 not in by_line
    assert lines[0].startswith('"""Module docstring') and 1 not in by_line
    assert lines[8] == '    """Docstring."""' and 9 not in by_line
    assert lines[19].endswith("# pragma: no mutate") and 20 not in by_line
    assert lines[20] == '    name = f"{v + 1}"' and by_line[21] == ["name = None"]  # not inside f-strings
    assert lines[26] == 'def hidden(x: "str") -> bool:' and 27 not in by_line  # annotations
    assert by_line[8] == ["def clamp(v: int | None, lo: int = 1) -> int:"]
    assert all(m.path == "pkg/sample.py" for m in mutants)


def test_each_mutant_parses_and_changes_the_code() -> None:
    original = ast.dump(ast.parse(SAMPLE))
    mutants = generate_mutants(SAMPLE, "sample.py")
    assert [m.number for m in mutants] == list(range(len(mutants)))
    for m in mutants:
        assert ast.dump(ast.parse(m.apply(SAMPLE))) != original, m.describe(SAMPLE)
    # a real module: mutants compile (a sample: parsing the whole module each time takes a while)
    source = _merkle_source()
    for m in sample_mutants(generate_mutants(source, "merkle.py"), 80, "parse"):
        compile(m.apply(source), "merkle.py", "exec", flags=ast.PyCF_ONLY_AST)


def _merkle_source() -> str:
    return (mutation.ROOT / "downstream_tx" / "heartbeat" / "merkle.py").read_text(encoding="utf-8")


def test_the_module_map_names_existing_files() -> None:
    """TESTS_FOR is the one place to update when modules or test files move: keep it true."""
    for module, tests in mutation.TESTS_FOR.items():
        assert (mutation.ROOT / module).is_file(), module
        assert tests and all((mutation.ROOT / t).is_file() for t in tests), (module, tests)
    assert "downstream_tx/heartbeat/merkle.py" in mutation.TESTS_FOR


def test_sample_is_reproducible_and_in_source_order() -> None:
    mutants = generate_mutants(_merkle_source(), "downstream_tx/heartbeat/merkle.py")
    first = sample_mutants(mutants, 20, "7")
    assert first == sample_mutants(mutants, 20, "7")
    assert first != sample_mutants(mutants, 20, "8")
    assert len(first) == 20 and [m.number for m in first] == sorted(m.number for m in first)
    assert sample_mutants(mutants, None, "7") == mutants == sample_mutants(mutants, 10**6, "7")


def test_scores_and_table() -> None:
    m = generate_mutants(SAMPLE, "pkg/sample.py")
    report = ModuleReport("pkg/sample.py", total=len(m))
    report.outcomes = [
        Outcome(m[0], KILLED, 1.0), Outcome(m[1], TIMEOUT, 3.0), Outcome(m[2], SURVIVED, 2.0),
        Outcome(m[3], KILLED, 2.0, by_wider=True),
    ]
    assert report.score == 0.75 and report.survivors == [report.outcomes[2]]
    assert ModuleReport("x.py", 0).score == 1.0
    table = mutation.format_table([report]).splitlines()
    assert table[0].split("|")[1:-1] == [
        " module        ", " mutants ", " sampled ", " killed ", " timeout ", " survived ", " wider ", " score ",
        " s/mutant ",
    ]
    assert [c.strip() for c in table[2].split("|")[1:-1]] == [
        "pkg/sample.py", str(len(m)), "4", "2", "1", "1", "1", "75.0%", "2.0",
    ]


# --------------------------------------------------------------------------- runs on a tiny repository

TINY_MODULE = (
    "def double(x):\n    return x * 2\n\n\n"
    "def first_even(xs):\n    for x in xs:\n        if x % 2 == 0:\n            break\n    return x\n"
)
TINY_TEST = "from pkg.mod import double\n\n\ndef test_double():\n    assert double(3) == 6\n"


@pytest.fixture
def tiny_repo(tmp_path: Path) -> Path:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "mod.py").write_text(TINY_MODULE)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_mod.py").write_text(TINY_TEST)
    return tmp_path


def _fake_runner(kill_if: str, seen: list[str]):
    def run(sandbox: mutation.Sandbox, tests, timeout):
        text = (sandbox.path / "pkg" / "mod.py").read_text()
        seen.append(text)
        return (KILLED if kill_if in text else SURVIVED), 0.5

    return run


def test_mutants_go_to_the_sandbox_and_the_work_tree_is_untouched(tiny_repo: Path) -> None:
    seen: list[str] = []
    mutants = generate_mutants(TINY_MODULE, "pkg/mod.py")
    with mutation.Sandbox(tiny_repo) as sandbox:
        assert sandbox.path != tiny_repo and (sandbox.path / "pkg" / "mod.py").read_text() == TINY_MODULE
        report = mutation.run_module(sandbox, "pkg/mod.py", mutants, len(mutants), ["tests/test_mod.py"], 5,
                                     runner=_fake_runner("return x / 2", seen), say=lambda _: None)
        assert (sandbox.path / "pkg" / "mod.py").read_text() == TINY_MODULE  # restored after each mutant
        sandbox_dir = sandbox.path
    assert not sandbox_dir.exists()
    assert (tiny_repo / "pkg" / "mod.py").read_text() == TINY_MODULE
    assert seen[0] == TINY_MODULE  # the baseline
    assert seen[1:] == [m.apply(TINY_MODULE) for m in mutants]
    assert [o.status for o in report.outcomes].count(KILLED) == 1


def test_interrupted_run_leaves_nothing_behind(tiny_repo: Path) -> None:
    mutants = generate_mutants(TINY_MODULE, "pkg/mod.py")
    calls = []

    def interrupted(sandbox, tests, timeout):
        calls.append(sandbox.path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return SURVIVED, 0.1

    with pytest.raises(KeyboardInterrupt), mutation.Sandbox(tiny_repo) as sandbox:
        mutation.run_module(sandbox, "pkg/mod.py", mutants, len(mutants), ["tests/test_mod.py"], 5,
                            runner=interrupted, say=lambda _: None)
    assert not calls[0].exists()
    assert (tiny_repo / "pkg" / "mod.py").read_text() == TINY_MODULE


LOOP_MODULE = "def countdown(n):\n    while n > 0:\n        n -= 1\n    return n\n\n\ndef unused():\n    return [1]\n"
LOOP_TEST = "from pkg.loop import countdown\n\n\ndef test_countdown():\n    assert countdown(3) == 0\n"


def test_a_real_run(tiny_repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """End to end with pytest subprocesses (plugins not auto-loaded, to keep it quick): one mutant
    killed, one survivor, the table and the survivor list; the work tree is untouched."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    (tiny_repo / "pkg" / "loop.py").write_text(LOOP_MODULE)
    (tiny_repo / "tests" / "test_loop.py").write_text(LOOP_TEST)
    mutants = generate_mutants(LOOP_MODULE, "pkg/loop.py")
    killed = next(m for m in mutants if m.replacement == ">=")
    survivor = next(m for m in mutants if m.line == 8 and m.replacement == "2")
    code = mutation.main(
        ["pkg/loop.py", "--tests", "tests/test_loop.py", "--only", f"{killed.number},{survivor.number}",
         "--timeout", "120", "--fail-under", "50"],
        root=tiny_repo,
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "timeout 120s, a new process per run" in out
    assert "killed" in out and f"#{killed.number} pkg/loop.py:2: while n > 0: -> while n >= 0:" in out
    assert f"survived: #{survivor.number} pkg/loop.py:8: return [1] -> return [2]" in out
    row = next(line for line in out.splitlines() if line.startswith("| pkg/loop.py"))
    assert [c.strip() for c in row.split("|")[1:-1]][:8] == ["pkg/loop.py", str(len(mutants)), "2", "1", "0", "1", "0",
                                                             "50.0%"]
    assert (tiny_repo / "pkg" / "loop.py").read_text() == LOOP_MODULE
    assert mutation.main(["pkg/loop.py", "--tests", "tests/test_loop.py", "--only", str(survivor.number),
                          "--fail-under", "90"], root=tiny_repo) == 1


def test_the_command_forks_runs_and_times_out(tiny_repo: Path) -> None:
    """`python -m tests.mutation` as the developer runs it (forked test runs): a mutant killed, one
    survived, one that loops forever timed out (and counted as killed)."""
    (tiny_repo / "pkg" / "loop.py").write_text(LOOP_MODULE)
    (tiny_repo / "tests" / "test_loop.py").write_text(LOOP_TEST)
    mutants = generate_mutants(LOOP_MODULE, "pkg/loop.py")
    chosen = [
        next(m for m in mutants if m.replacement == ">="),  # killed
        next(m for m in mutants if m.replacement == "+="),  # n += 1: never ends
        next(m for m in mutants if m.line == 8 and m.replacement == "2"),  # survives
    ]
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    env.pop("PYTHONPATH", None)
    out = subprocess.run(
        [sys.executable, "-m", "tests.mutation", "pkg/loop.py", "--root", str(tiny_repo), "--tests",
         "tests/test_loop.py", "--only", ",".join(str(m.number) for m in chosen), "--timeout", "3"],
        cwd=mutation.ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "timeout 3s, forked runs" in out.stdout
    assert [line.split()[1] for line in lines if line.startswith("[")] == [KILLED, TIMEOUT, SURVIVED]
    row = next(line for line in lines if line.startswith("| pkg/loop.py"))
    assert [c.strip() for c in row.split("|")[1:-1]][1:8] == [str(len(mutants)), "3", "1", "1", "1", "0", "66.7%"]
    assert (tiny_repo / "pkg" / "loop.py").read_text() == LOOP_MODULE


def _cwd_in(directory: Path) -> list[int]:
    """Processes whose working directory is in ``directory``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cwd = os.readlink(entry / "cwd")
            except OSError:
                continue
            if cwd.startswith(str(directory)):
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="checks processes through /proc")
def test_sigterm_removes_the_sandbox_and_kills_the_running_tests(
    tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    (tiny_repo / "pkg" / "loop.py").write_text(LOOP_MODULE)
    (tiny_repo / "tests" / "test_loop.py").write_text(LOOP_TEST)
    hang = next(m for m in generate_mutants(LOOP_MODULE, "pkg/loop.py") if m.replacement == "+=")
    tmp = tmp_path_factory.mktemp("tmpdir")
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "TMPDIR": str(tmp)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.mutation", "pkg/loop.py", "--root", str(tiny_repo), "--tests",
         "tests/test_loop.py", "--only", str(hang.number), "--timeout", "600"],
        cwd=mutation.ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        def mutant_running() -> bool:
            copies = list(tmp.glob("dtx-mutation-*/repo/pkg/loop.py"))
            return bool(copies) and "n += 1" in copies[0].read_text() and bool(_cwd_in(tmp))

        wait_until(mutant_running, 60, "the hanging mutant running")
        proc.terminate()
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:  # (the test failed early) still stop what it started
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            for pid in _cwd_in(tmp):
                os.kill(pid, 9)
    assert "mutation: interrupted" in proc.stderr.read()
    assert list(tmp.iterdir()) == []
    wait_until(lambda: not _cwd_in(tmp), 30, "the forked test run killed")
    assert (tiny_repo / "pkg" / "loop.py").read_text() == LOOP_MODULE


def test_no_forking_inside_a_process_with_a_reactor() -> None:
    """Here (pytest with pytest-twisted) a reactor is imported: the runner uses fresh processes."""
    import twisted.internet.reactor  # noqa: F401

    assert mutation.PytestRunner().fork is False
    assert mutation.PytestRunner(fork=False).fork is False


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="checks processes through /proc")
def test_a_hanging_mutant_times_out_and_its_processes_are_killed(tiny_repo: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pidfile = tiny_repo / "child.pid"
    (tiny_repo / "tests" / "test_hang.py").write_text(
        "import subprocess, sys, threading\n\n\ndef test_hang():\n"
        "    child = subprocess.Popen([sys.executable, '-c', 'import threading; threading.Event().wait()'])\n"
        f"    open({str(pidfile)!r}, 'w').write(str(child.pid))\n"
        "    threading.Event().wait()\n"
    )
    with mutation.Sandbox(tiny_repo) as sandbox:
        status, _ = mutation.run_pytest(sandbox, ["tests/test_hang.py"], timeout=2)
    assert status == TIMEOUT
    if pidfile.exists():  # (on a very slow machine the test may not have got that far)
        wait_until(lambda: _gone(int(pidfile.read_text())), 30, "the test's own child process killed")
