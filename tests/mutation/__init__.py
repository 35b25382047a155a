"""Mutation testing for downstream-tx: how many small bugs planted in a module its tests catch.

    python -m tests.mutation downstream_tx/heartbeat/merkle.py --sample 60 --seed 1

For each module, every mutant (one small change of the source, the operators of mutmut 2.4.5, see
``OPERATORS``) is listed; ``--sample N`` draws N of them at random (``--seed`` makes the draw
reproducible; without it a seed is picked and printed). Each mutant is written, one at a time, into
a temporary copy of the repository (the work tree is never modified), and the module's test files
(``TESTS_FOR`` below, or ``--tests``) run against it with ``pytest -x``. A failing run *kills* the
mutant; a run that outlives the timeout counts as killed too (it would hang the suite); a passing
run means it *survived*. ``--wider`` re-runs the survivors against the whole SQLite suite.

Runs use SQLite only: the MySQL variables are removed from the tests' environment and the
``mysql``/``e2e``/``slow`` tests are deselected (``MARKS``). Hypothesis runs derandomized without
its example database, so a given sample gives the same result every time.

This package is also the pytest plugin that sets up Hypothesis in those runs (``-p tests.mutation``).
It holds no tests: the test suite runs its unit tests (tests/test_mutation_runner.py), not its runs.
"""

from __future__ import annotations

import argparse
import ast
import bisect
import contextlib
import difflib
import io
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tokenize
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent

# --------------------------------------------------------------------------- module -> tests
# The one place that says which test files exercise which module. Paths are relative to the
# repository root; a listed test file that does not exist (moved, renamed) is skipped with a
# warning, and any module can be run with explicit --tests.

# (with -x the run stops at the first failure: quick, pointed files first)
_HEARTBEAT = [
    "tests/test_heartbeat_merkle.py",
    "tests/test_heartbeat_forgery.py",
    "tests/test_heartbeat_vectors.py",
    "tests/test_heartbeat_props.py",
]
_V0_TIMER = [  # the v0 timer path: challenge supply, deadlines, misses, failures
    "tests/test_v0_challenges.py",
    "tests/test_db_stores.py",
    "tests/test_timers_v0.py",
    "tests/test_node_private.py",
    "tests/test_api_v0.py",
]
_V1_ANSWER = [  # the v1 answer path: pool, challenge, answer, verify, expiry, status
    "tests/test_v1_farming.py",
    "tests/test_v1_wire.py",
    "tests/test_db_seeded.py",
    "tests/test_v1_expiry.py",
    "tests/test_v1_pool.py",
    "tests/test_db_stores.py",
    "tests/test_v1_status.py",
    "tests/test_v1_api.py",
    "tests/test_v1_forged_proofs.py",
    "tests/test_v1_signatures.py",
]
_PARSERS = [  # request parsing: bodies, routing and path parameters, the protocol routes
    "tests/test_http_bodies.py",
    "tests/test_http_routing.py",
    "tests/test_batch_bodies.py",
    "tests/test_body_bombs.py",
    "tests/test_fuzz_http.py",
    "tests/test_v1_api.py",
    "tests/test_api_v0.py",
    "tests/test_abuse.py",
]
_TOKENS = [  # tokens, addresses, farmers and their limits
    "tests/test_core_tokens.py",
    "tests/test_core_farmers.py",
    "tests/test_db_stores.py",
    "tests/test_abuse_tokens.py",
    "tests/test_api_v0.py",
]

TESTS_FOR: dict[str, list[str]] = {
    **dict.fromkeys(
        ["downstream_tx/heartbeat/merkle.py", "downstream_tx/heartbeat/hashchal.py",
         "downstream_tx/heartbeat/prf.py", "downstream_tx/heartbeat/randomio.py"], _HEARTBEAT),
    **dict.fromkeys(
        ["downstream_tx/v0/challenges.py", "downstream_tx/v0/farming.py", "downstream_tx/v0/files.py",
         "downstream_tx/db/contracts.py", "downstream_tx/db/challenges.py", "downstream_tx/db/replicas.py",
         "downstream_tx/jobs/contracts.py", "downstream_tx/core/context.py"], _V0_TIMER),
    **dict.fromkeys(
        ["downstream_tx/v1/farming.py", "downstream_tx/v1/expiry.py", "downstream_tx/v1/pool.py",
         "downstream_tx/v1/wire.py", "downstream_tx/v1/status.py", "downstream_tx/db/seeded.py",
         "downstream_tx/db/status.py"], _V1_ANSWER),
    **dict.fromkeys(
        ["downstream_tx/http/bodies.py", "downstream_tx/http/routing.py", "downstream_tx/http/v0.py",
         "downstream_tx/http/v1.py", "downstream_tx/http/errors.py", "downstream_tx/http/status.py"], _PARSERS),
    **dict.fromkeys(
        ["downstream_tx/core/tokens.py", "downstream_tx/core/farmers.py", "downstream_tx/db/tokens.py"], _TOKENS),
    # the limiter's own tests first (issue 16's pins, folded in issue 22), then through HTTP
    "downstream_tx/http/ratelimit.py": ["tests/test_http_ratelimit.py", "tests/test_abuse_tokens.py",
                                        "tests/test_abuse.py"],
    "downstream_tx/core/clients.py": ["tests/test_core_clients.py", "tests/test_abuse_tokens.py"],
    # the v0 timer path's edges, in the test files of their modules (issue 16's pins, folded in issue 22)
    "downstream_tx/db/contracts.py": ["tests/test_db_contracts.py", *_V0_TIMER],
    "downstream_tx/jobs/contracts.py": ["tests/test_jobs_contracts.py", *_V0_TIMER],
    "downstream_tx/bitcoin.py": ["tests/test_bitcoin.py"],
    "downstream_tx/v1/signatures.py": ["tests/test_v1_signatures.py"],
    # the node's state moved whole (issue 23): copy, backup, restore
    **dict.fromkeys(
        ["downstream_tx/db/transfer.py", "downstream_tx/lifecycle/copy.py", "downstream_tx/lifecycle/backup.py",
         "downstream_tx/lifecycle/restore.py"], ["tests/test_transfer.py", "tests/test_backup.py"]),
    "downstream_tx/dashboard/charts.py": ["tests/test_dashboard_render.py", "tests/test_dashboard.py"],
    # the rules as pure decisions (issue 22): their own tests first (no database), then the stores'
    "downstream_tx/domain/rules.py": ["tests/test_domain_rules.py", "tests/test_domain_scores.py",
                                     "tests/test_domain_standing.py", "tests/test_domain_vetting.py",
                                     "tests/test_domain_containment.py", "tests/test_reputation.py"],
    "downstream_tx/domain/scores.py": ["tests/test_domain_scores.py", "tests/test_domain_standing.py",
                                       "tests/test_db_agreement.py", "tests/test_reputation.py"],
    "downstream_tx/domain/standing.py": ["tests/test_domain_standing.py", "tests/test_db_agreement.py",
                                         "tests/test_reputation.py", "tests/test_standing_log.py"],
    "downstream_tx/domain/containment.py": ["tests/test_domain_containment.py", "tests/test_reputation.py",
                                            "tests/test_standing_log.py"],
    "downstream_tx/domain/vetting.py": ["tests/test_domain_vetting.py", "tests/test_db_agreement.py",
                                        "tests/test_reputation.py", "tests/test_reputation_concurrency.py"],
    "downstream_tx/domain/verdicts.py": ["tests/test_domain_verdicts.py", "tests/test_late_answers.py",
                                         "tests/test_timer_pages.py", "tests/test_reputation.py"],
    # issue 24: who counts as online, where a file's replicas may go
    "downstream_tx/domain/online.py": ["tests/test_domain_online.py", "tests/test_reputation.py",
                                       "tests/test_db_stores.py"],
    "downstream_tx/domain/placement.py": ["tests/test_domain_placement.py", "tests/test_reputation.py"],
    "downstream_tx/domain/windows.py": ["tests/test_domain_windows.py", "tests/test_domain_verdicts.py",
                                        "tests/test_domain_containment.py", "tests/test_db_agreement.py",
                                        "tests/test_timer_pages.py"],
    # the reputation's stores: reading rows for the domain, writing its decisions
    **dict.fromkeys(
        ["downstream_tx/db/reputation.py", "downstream_tx/db/late.py"],
        ["tests/test_db_agreement.py", "tests/test_reputation.py", "tests/test_late_answers.py",
         "tests/test_standing_log.py", "tests/test_reputation_concurrency.py", "tests/test_db_stores.py"]),
}
# the v1 answer path and the request parsers: each module's own test file first (issue 16's pins, in
# the test files of the modules they pin since issue 22)
for _module, _own in (("downstream_tx/v1/farming.py", "tests/test_v1_farming.py"),
                      ("downstream_tx/v1/wire.py", "tests/test_v1_wire.py"),
                      ("downstream_tx/db/seeded.py", "tests/test_db_seeded.py"),
                      ("downstream_tx/http/routing.py", "tests/test_http_routing.py")):
    TESTS_FOR[_module] = [_own, *(t for t in TESTS_FOR[_module] if t != _own)]
#: downloads: parse_range (the Range header) and the streaming producer
TESTS_FOR["downstream_tx/http/download.py"] = [
    "tests/test_http_download.py", "tests/test_http_routing.py", "tests/test_api_v0.py",
    "tests/test_fuzz_http.py"]
#: v0 download capabilities: the rule and its counts, the capability's text
for _module in ("downstream_tx/db/downloads.py", "downstream_tx/v0/capability.py"):
    TESTS_FOR[_module] = ["tests/test_downloads.py", "tests/test_api_v0.py", "tests/test_fuzz_http.py"]

# --wider: the whole suite that runs without MySQL and without starting daemons
WIDER_TESTS = ["tests"]
MARKS = "not mysql and not e2e and not slow"
PYTEST_ARGS = ["-x", "-q", "-p", "no:cacheprovider", "-p", "tests.mutation"]
SANDBOX_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "venv", "__pycache__", "*.pyc", ".pytest_cache", ".hypothesis", ".ruff_cache",
    "downstream-data", "*.egg-info", "build", "dist",
)
DROPPED_ENV = ("DOWNSTREAM_TEST_MYSQL_URL", "DOWNSTREAM_TEST_MYSQL_ADMIN_URL")
PRAGMA = "pragma: no mutate"


# --------------------------------------------------------------------------- pytest plugin


def pytest_configure(config: object) -> None:
    """In mutation runs: Hypothesis derandomized and without its example database, so a mutant's
    fate does not depend on chance or on what earlier mutants left behind."""
    try:
        from hypothesis import settings
    except ImportError:  # pragma: no cover - hypothesis is a test dependency
        return
    settings.register_profile("mutation", derandomize=True, database=None)
    settings.load_profile("mutation")


# --------------------------------------------------------------------------- mutants


@dataclass(frozen=True)
class Mutant:
    """One change of a module's source: ``source[start:end]`` becomes ``replacement``."""

    path: str  # relative to the repository root, as given
    number: int  # position in the module's full list of mutants (stable while the source is)
    operator: str
    line: int
    start: int
    end: int
    replacement: str

    def apply(self, source: str) -> str:
        return source[: self.start] + self.replacement + source[self.end :]

    def lines(self, source: str) -> tuple[str, str]:
        """The source lines the mutant touches, before and after, each folded onto one line (a long
        line is cut around the change)."""
        first = source.rfind("\n", 0, self.start) + 1
        last = source.find("\n", max(self.start, self.end - 1))
        last = len(source) if last < 0 else last
        before = source[first:last]
        after = before[: self.start - first] + self.replacement + before[min(self.end, last) - first :]
        return _fold_pair(" ".join(before.split()), " ".join(after.split()))

    def describe(self, source: str) -> str:
        before, after = self.lines(source)
        return f"{self.path}:{self.line}: {before} -> {after}"

    def diff(self, source: str) -> str:
        return "".join(
            difflib.unified_diff(
                source.splitlines(keepends=True), self.apply(source).splitlines(keepends=True),
                f"a/{self.path}", f"b/{self.path}", n=2,
            )
        )


def _fold_pair(before: str, after: str, width: int = 100, context: int = 30) -> tuple[str, str]:
    if not after:
        return before, "(removed)"
    if max(len(before), len(after)) <= width:
        return before, after
    prefix = 0
    while prefix < min(len(before), len(after)) and before[prefix] == after[prefix]:
        prefix += 1
    suffix = 0
    while suffix < min(len(before), len(after)) - prefix and before[-1 - suffix] == after[-1 - suffix]:
        suffix += 1
    lo = max(0, prefix - context)

    def cut(text: str) -> str:
        hi = min(len(text), len(text) - suffix + context)
        return ("..." if lo else "") + text[lo:hi] + ("..." if hi < len(text) else "")

    return cut(before), cut(after)


_BINOP = {  # operator class: (token, replacement token)
    ast.Add: ("+", "-"), ast.Sub: ("-", "+"), ast.Mult: ("*", "/"), ast.Div: ("/", "*"),
    ast.FloorDiv: ("//", "/"), ast.Mod: ("%", "/"), ast.Pow: ("**", "*"),
    ast.LShift: ("<<", ">>"), ast.RShift: (">>", "<<"), ast.BitAnd: ("&", "|"),
    ast.BitOr: ("|", "&"), ast.BitXor: ("^", "&"),
}
_COMPARE = {
    ast.Lt: ("<", "<="), ast.LtE: ("<=", "<"), ast.Gt: (">", ">="), ast.GtE: (">=", ">"),
    ast.Eq: ("==", "!="), ast.NotEq: ("!=", "=="), ast.Is: ("is", "is not"),
    ast.IsNot: ("is not", "is"), ast.In: ("in", "not in"), ast.NotIn: ("not in", "in"),
}
_BOOLOP = {ast.And: ("and", "or"), ast.Or: ("or", "and")}

OPERATORS = {
    "binop": "+ <-> -, * <-> /, // % -> /, ** -> *, << <-> >>, & <-> |, ^ -> & (also augmented)",
    "compare": "< -> <=, <= -> <, > -> >=, >= -> >, == <-> !=, is <-> is not, in <-> not in",
    "boolop": "and <-> or",
    "not": "not x -> x",
    "number": "n -> n + 1",
    "string": "'s' -> 'XXsXX' (str and bytes; not docstrings, f-strings or annotations)",
    "bool": "True <-> False",
    "loop": "break <-> continue",
    "return": "return x -> return None",
    "call": "a call statement f(x) -> None (its effect removed)",
    "assign": "x = value -> x = None",
    "lambda": "lambda: x -> lambda: None",
    "decorator": "a decorator removed",
}


class _Source:
    """Offsets in a source text: AST positions (UTF-8 byte columns) and tokens."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.lines = text.splitlines(keepends=True)
        self.starts = [0]
        for line in self.lines:
            self.starts.append(self.starts[-1] + len(line))
        self.tokens = [
            (self.at(*tok.start), self.at(*tok.end), tok.string)
            for tok in tokenize.generate_tokens(io.StringIO(text).readline)
            if tok.type in (tokenize.OP, tokenize.NAME)
        ]
        self.token_starts = [t[0] for t in self.tokens]

    def at(self, lineno: int, col: int) -> int:
        """Offset of a (line, character column) position."""
        return self.starts[lineno - 1] + col

    def node_span(self, node: ast.AST) -> tuple[int, int]:
        return (self._ast_pos(node.lineno, node.col_offset), self._ast_pos(node.end_lineno, node.end_col_offset))

    def _ast_pos(self, lineno: int, byte_col: int) -> int:
        line = self.lines[lineno - 1]
        return self.starts[lineno - 1] + len(line.encode("utf-8")[:byte_col].decode("utf-8", "replace"))

    def find(self, words: Sequence[str], lo: int, hi: int) -> tuple[int, int] | None:
        """Span of the token sequence ``words`` (e.g. ``["is", "not"]``) between offsets lo and hi."""
        i = bisect.bisect_left(self.token_starts, lo)
        while i < len(self.tokens) and self.tokens[i][0] < hi:
            seq = self.tokens[i : i + len(words)]
            if [t[2] for t in seq] == list(words) and seq[-1][1] <= hi:
                return seq[0][0], seq[-1][1]
            i += 1
        return None

    def line_of(self, offset: int) -> int:
        return bisect.bisect_right(self.starts, offset)


def _excluded_nodes(tree: ast.Module) -> set[int]:
    """ids of nodes never mutated: annotations, docstrings, f-strings, ``__all__``, TYPE_CHECKING."""
    roots: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.arg | ast.AnnAssign) and node.annotation is not None:
            roots.append(node.annotation)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.returns is not None:
            roots.append(node.returns)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                roots.append(body[0])
        if isinstance(node, ast.JoinedStr):
            roots.append(node)
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            roots.append(node)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            roots.append(node)
    return {id(sub) for root in roots for sub in ast.walk(root)}


def _constant_replacement(value: object) -> tuple[str, str] | None:
    if isinstance(value, bool):
        return "bool", repr(not value)
    if isinstance(value, int | float):
        return "number", repr(value + 1)
    if isinstance(value, str):
        return "string", repr("XX" + value + "XX")
    if isinstance(value, bytes):
        return "string", repr(b"XX" + value + b"XX")
    return None


def _candidates(src: _Source, tree: ast.Module) -> Iterable[tuple[str, int, int, str]]:
    """(operator, start, end, replacement) for every mutation point of the module."""
    excluded = _excluded_nodes(tree)
    for node in ast.walk(tree):
        if id(node) in excluded:
            continue
        if isinstance(node, ast.BinOp | ast.AugAssign) and type(node.op) in _BINOP:
            token, new = _BINOP[type(node.op)]
            left, right = (node.left, node.right) if isinstance(node, ast.BinOp) else (node.target, node.value)
            if isinstance(node, ast.AugAssign):
                token, new = token + "=", new + "="
            span = src.find([token], src.node_span(left)[1], src.node_span(right)[0])
            if span:
                yield "binop", *span, new
        elif isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            for k, op in enumerate(node.ops):
                token, new = _COMPARE[type(op)]
                span = src.find(token.split(), src.node_span(operands[k])[1], src.node_span(operands[k + 1])[0])
                if span:
                    yield "compare", *span, new
        elif isinstance(node, ast.BoolOp):
            token, new = _BOOLOP[type(node.op)]
            for a, b in zip(node.values, node.values[1:]):
                span = src.find([token], src.node_span(a)[1], src.node_span(b)[0])
                if span:
                    yield "boolop", *span, new
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            span = src.find(["not"], src.node_span(node)[0], src.node_span(node.operand)[0] + 1)
            if span:
                end = span[1]
                while src.text[end] in " \t":
                    end += 1
                yield "not", span[0], end, ""
        elif isinstance(node, ast.Constant):
            found = _constant_replacement(node.value)
            if found:
                yield found[0], *src.node_span(node), found[1]
        elif isinstance(node, ast.Break | ast.Continue):
            yield "loop", *src.node_span(node), "continue" if isinstance(node, ast.Break) else "break"
        elif isinstance(node, ast.Return) and node.value is not None and not isinstance(node.value, ast.Constant):
            # (a returned constant has its own mutant: True <-> False, n + 1, 'XXsXX')
            yield "return", *src.node_span(node.value), "None"
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            yield "call", *src.node_span(node.value), "None"
        elif isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None and not _is_none(node.value):
            yield "assign", *src.node_span(node.value), "None"
        elif isinstance(node, ast.Lambda) and not _is_none(node.body):
            yield "lambda", *src.node_span(node.body), "None"
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            for decorator in node.decorator_list:
                start, end = src.node_span(decorator)
                line_start = src.starts[src.line_of(start) - 1]
                at = src.find(["@"], line_start, start)
                if at and not src.text[line_start : at[0]].strip():  # the whole line goes
                    line_end = src.text.find("\n", end)
                    yield "decorator", line_start, len(src.text) if line_end < 0 else line_end + 1, ""


def _is_none(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def generate_mutants(source: str, path: str) -> list[Mutant]:
    """Every mutant of ``source`` (in source order), skipping lines marked ``# pragma: no mutate``."""
    tree = ast.parse(source)
    src = _Source(source)
    seen = set()
    points = []
    for operator, start, end, replacement in _candidates(src, tree):
        if (start, end, replacement) in seen:
            continue
        seen.add((start, end, replacement))
        line = src.line_of(start)
        if PRAGMA in src.lines[line - 1]:
            continue
        points.append((start, end, operator, replacement, line))
    points.sort()
    return [
        Mutant(path, number, operator, line, start, end, replacement)
        for number, (start, end, operator, replacement, line) in enumerate(points)
    ]


def sample_mutants(mutants: Sequence[Mutant], size: int | None, seed: str) -> list[Mutant]:
    """A reproducible random sample (all of them if ``size`` is None or too big), in source order.
    The draw depends on the seed and the module only, so adding modules to a run keeps the others'."""
    if size is None or size >= len(mutants):
        return list(mutants)
    rng = random.Random(f"{seed}:{mutants[0].path}" if mutants else seed)
    return sorted(rng.sample(list(mutants), size), key=lambda m: m.number)


# --------------------------------------------------------------------------- results


KILLED, TIMEOUT, SURVIVED = "killed", "timeout", "survived"


@dataclass
class Outcome:
    mutant: Mutant
    status: str
    seconds: float
    by_wider: bool = False  # killed only by the --wider re-run


@dataclass
class ModuleReport:
    path: str
    total: int  # mutants of the module
    outcomes: list[Outcome] = field(default_factory=list)
    baseline_seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def score(self) -> float:
        """Killed (including timeouts) over mutants run; 1.0 when none ran."""
        if not self.outcomes:
            return 1.0
        return (self.count(KILLED) + self.count(TIMEOUT)) / len(self.outcomes)

    @property
    def seconds(self) -> float:
        return sum(o.seconds for o in self.outcomes)

    @property
    def survivors(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == SURVIVED]


def format_table(reports: Sequence[ModuleReport]) -> str:
    header = ("module", "mutants", "sampled", "killed", "timeout", "survived", "wider", "score", "s/mutant")
    rows = [header]
    for r in reports:
        per = r.seconds / len(r.outcomes) if r.outcomes else 0.0
        rows.append((
            r.path, str(r.total), str(len(r.outcomes)), str(r.count(KILLED)), str(r.count(TIMEOUT)),
            str(r.count(SURVIVED)), str(sum(o.by_wider for o in r.outcomes)), f"{100 * r.score:.1f}%", f"{per:.1f}",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        lines.append("| " + " | ".join(cells) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


# --------------------------------------------------------------------------- running


class Sandbox:
    """A temporary copy of the repository where mutants are written; removed on exit."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._tmp: str | None = None
        self.path = Path()

    def __enter__(self) -> Sandbox:
        self._tmp = tempfile.mkdtemp(prefix="dtx-mutation-")
        if Path(self._tmp).resolve().is_relative_to(self.root.resolve()):
            os.rmdir(self._tmp)
            raise SystemExit("mutation: the temporary directory (TMPDIR) must be outside the repository")
        self.path = Path(self._tmp) / "repo"
        shutil.copytree(self.root, self.path, ignore=SANDBOX_IGNORE, symlinks=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def write(self, rel: str, text: str) -> None:
        (self.path / rel).write_text(text, encoding="utf-8")

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in DROPPED_ENV}
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # a mutant of the same size and mtime must never hit a stale .pyc
        env["PYTHONPATH"] = os.pathsep.join([str(self.path), *filter(None, [os.environ.get("PYTHONPATH")])])
        return env


class PytestRunner:
    """Runs test files in the sandbox: ``runner(sandbox, tests, timeout)`` -> (KILLED | TIMEOUT |
    SURVIVED, seconds). A test run that outlives the timeout is killed with its whole process group
    (tests may start processes of their own).

    By default each run is a child forked from this process after pytest, its plugins and Hypothesis
    were imported once (about 2 s less per mutant than a fresh interpreter); the child points
    ``sys.path``, the environment and the working directory at the sandbox before pytest starts.
    That is only safe while this process has imported neither the code under test nor a Twisted
    reactor: if it has (or with ``fork=False``, or where there is no fork), each run is a new
    ``python -m pytest`` process instead."""

    WARM = ("pytest", "hypothesis", "hypothesis.strategies", "twisted.internet.defer", "twisted.internet.task")

    def __init__(self, fork: bool = True) -> None:
        self.fork = fork and hasattr(os, "fork") and self._warm_up()

    @staticmethod
    def _warm_up() -> bool:
        import importlib
        import importlib.metadata

        try:
            for name in PytestRunner.WARM:
                importlib.import_module(name)
            for entry in importlib.metadata.entry_points(group="pytest11"):
                entry.load()
        except Exception:  # noqa: BLE001 - any failure: use fresh interpreters
            return False
        unsafe = [m for m in sys.modules if m == "twisted.internet.reactor" or m.split(".")[0] == "downstream_tx"]
        return not unsafe

    def __call__(self, sandbox: Sandbox, tests: Sequence[str], timeout: float | None) -> tuple[str, float]:
        args = PYTEST_ARGS if (sandbox.path / "tests" / "mutation" / "__init__.py").exists() else PYTEST_ARGS[:-2]
        args = [*args, "-m", MARKS, *tests]
        started = time.monotonic()
        if self.fork:
            code = _run_forked(sandbox, lambda: int(__import__("pytest").main(args)), timeout)
        else:
            code = _run_process(sandbox, [sys.executable, "-m", "pytest", *args], timeout)
        status = TIMEOUT if code is None else SURVIVED if code == 0 else KILLED
        return status, time.monotonic() - started


def _run_process(sandbox: Sandbox, cmd: list[str], timeout: float | None) -> int | None:
    proc = subprocess.Popen(
        cmd, cwd=sandbox.path, env=sandbox.env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    finally:
        _kill_group(proc.pid)
        proc.wait()


def _run_forked(sandbox: Sandbox, body: Callable[[], int], timeout: float | None) -> int | None:
    """``body()`` in a forked child set up for the sandbox; its exit status, None on timeout."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 3
        try:
            _enter_sandbox(sandbox)
            code = body()
        finally:
            os._exit(code)
    try:
        return _wait(pid, timeout)
    finally:
        _kill_group(pid)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def _enter_sandbox(sandbox: Sandbox) -> None:
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.chdir(sandbox.path)
    env = sandbox.env()
    os.environ.clear()
    os.environ.update(env)
    sys.dont_write_bytecode = True
    real = {sandbox.root.resolve(), (sandbox.root / "tests").resolve()}
    sys.path[:] = [str(sandbox.path)] + [p for p in sys.path if p and Path(p).resolve() not in real]
    for name in [m for m in sys.modules if m == "tests" or m.startswith("tests.")]:
        del sys.modules[name]  # (this runner itself): the tests import the sandbox's copies


def _wait(pid: int, timeout: float | None) -> int | None:
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        pidfd: int | None = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            if pidfd is not None:
                select.select([pidfd], [], [], left)
            else:
                time.sleep(0.05 if left is None else min(0.05, left))
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def run_pytest(sandbox: Sandbox, tests: Sequence[str], timeout: float | None) -> tuple[str, float]:
    """One run in a fresh ``python -m pytest`` process (see PytestRunner)."""
    return PytestRunner(fork=False)(sandbox, tests, timeout)


def check_sandbox_imports(sandbox: Sandbox, module: str, runner: PytestRunner | None = None) -> None:
    """The tests must import the sandbox's copy, not the installed or editable one (checked the way
    the runner runs them)."""
    dotted = module.removesuffix(".py").replace("/", ".").removesuffix(".__init__")
    out = subprocess.run(
        [sys.executable, "-c", f"import importlib.util as u; print(u.find_spec({dotted!r}).origin)"],
        cwd=sandbox.path, env=sandbox.env(), capture_output=True, text=True, check=False,
    )
    where = out.stdout.strip()
    if out.returncode != 0 or not Path(where).resolve().is_relative_to(sandbox.path.resolve()):
        raise SystemExit(f"mutation: {dotted} does not import from the sandbox ({where or out.stderr.strip()})")
    if runner is not None and runner.fork:

        def in_sandbox() -> int:
            import importlib.util

            spec = importlib.util.find_spec(dotted)
            ok = spec is not None and Path(str(spec.origin)).resolve().is_relative_to(sandbox.path.resolve())
            return 0 if ok else 1

        if _run_forked(sandbox, in_sandbox, 120) != 0:
            raise SystemExit(f"mutation: {dotted} does not import from the sandbox in a forked run; try --no-fork")


Runner = Callable[[Sandbox, Sequence[str], float | None], tuple[str, float]]


def run_module(
    sandbox: Sandbox,
    path: str,
    mutants: Sequence[Mutant],
    total: int,
    tests: Sequence[str],
    timeout: float | None,
    runner: Runner = run_pytest,
    say: Callable[[str], None] = print,
) -> ModuleReport:
    """Baseline, then each mutant in turn; the sandbox's copy of the module is restored after each."""
    original = (sandbox.path / path).read_text(encoding="utf-8")
    report = ModuleReport(path, total)
    status, report.baseline_seconds = runner(sandbox, tests, None)
    if status != SURVIVED:
        raise SystemExit(f"mutation: the tests fail without any mutant: {' '.join(tests)}")
    if timeout is None:
        timeout = 3 * report.baseline_seconds + 10
    mode = "forked runs" if getattr(runner, "fork", False) else "a new process per run"
    say(f"{path}: {len(mutants)} mutants of {total}; tests {' '.join(tests)}; "
        f"baseline {report.baseline_seconds:.1f}s, timeout {timeout:.0f}s, {mode}")
    for k, mutant in enumerate(mutants, 1):
        try:
            compile(mutant.apply(original), path, "exec", flags=ast.PyCF_ONLY_AST)
        except SyntaxError as exc:  # a bug of the mutant generator: not counted either way
            say(f"[{k}/{len(mutants)}] skipped: #{mutant.number} does not compile ({exc})")
            continue
        sandbox.write(path, mutant.apply(original))
        try:
            status, seconds = runner(sandbox, tests, timeout)
        finally:
            sandbox.write(path, original)
        report.outcomes.append(Outcome(mutant, status, seconds))
        say(f"[{k}/{len(mutants)}] {status:8} {seconds:5.1f}s  #{mutant.number} {mutant.describe(original)}")
    return report


def run_wider(
    sandbox: Sandbox, reports: Sequence[ModuleReport], timeout: float | None,
    runner: Runner = run_pytest, say: Callable[[str], None] = print,
) -> None:
    survivors = [o for r in reports for o in r.survivors]
    if not survivors:
        return
    status, baseline = runner(sandbox, WIDER_TESTS, None)
    if status != SURVIVED:  # (the module results stand; only the re-run is impossible)
        say(f"--wider: {' '.join(WIDER_TESTS)} fails without any mutant: survivors not re-run")
        return
    timeout = timeout if timeout is not None else 3 * baseline + 10
    say(f"--wider: {len(survivors)} survivors against {' '.join(WIDER_TESTS)} (baseline {baseline:.0f}s)")
    for outcome in survivors:
        original = (sandbox.path / outcome.mutant.path).read_text(encoding="utf-8")
        sandbox.write(outcome.mutant.path, outcome.mutant.apply(original))
        try:
            status, seconds = runner(sandbox, WIDER_TESTS, timeout)
        finally:
            sandbox.write(outcome.mutant.path, original)
        outcome.seconds += seconds
        if status != SURVIVED:
            outcome.status, outcome.by_wider = status, True
        say(f"  {status:8} {seconds:5.1f}s  #{outcome.mutant.number} {outcome.mutant.describe(original)}")


# --------------------------------------------------------------------------- command line


def _module_path(name: str, root: Path) -> str:
    if not name.endswith(".py") and "/" not in name:
        name = name.replace(".", "/") + ".py"
    path = Path(name)
    if path.is_absolute():
        path = path.resolve().relative_to(root)
    if not (root / path).is_file():
        raise SystemExit(f"mutation: no such module: {name}")
    return path.as_posix()


def _tests_for(module: str, explicit: Sequence[str] | None, root: Path) -> list[str]:
    if explicit:
        tests = list(explicit)
    elif module in TESTS_FOR:
        tests = TESTS_FOR[module]
    else:
        raise SystemExit(f"mutation: no test files mapped for {module} (TESTS_FOR in "
                         "tests/mutation/__init__.py); give them with --tests")
    present = [t for t in tests if (root / t).exists()]
    for t in tests:
        if t not in present:
            print(f"mutation: warning: {t} does not exist, skipped", file=sys.stderr)
    if not present:
        raise SystemExit(f"mutation: none of the test files of {module} exist")
    return present


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tests.mutation",
        description="Mutation testing: plant one small bug at a time in MODULE and run its tests.",
    )
    p.add_argument("modules", nargs="+", metavar="MODULE", help="e.g. downstream_tx/heartbeat/merkle.py")
    p.add_argument("--sample", type=int, metavar="N", help="random sample of N mutants per module (default: all)")
    p.add_argument("--seed", help="seed of the sample (default: a new one, printed)")
    p.add_argument("--tests", nargs="+", metavar="FILE", help="test files to run (default: TESTS_FOR)")
    p.add_argument("--wider", action="store_true", help="re-run survivors against the whole SQLite suite")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="per mutant (default: 3 x the unmutated run + 10 s); a timeout kills the mutant")
    p.add_argument("--only", metavar="N,N,...", help="run only these mutant numbers (one module)")
    p.add_argument("--list", action="store_true", help="list the (sampled) mutants and exit")
    p.add_argument("--show", type=int, metavar="N", help="print the diff of mutant N (one module) and exit")
    p.add_argument("--fail-under", type=float, metavar="PERCENT", help="exit 1 if a module scores below this")
    p.add_argument("--no-fork", action="store_true", help="a fresh python -m pytest per mutant (slower)")
    p.add_argument("--root", type=Path, help="the repository (default: the one holding this file)")
    args = p.parse_args(argv)
    if (args.only or args.show is not None) and len(args.modules) != 1:
        p.error("--only and --show take exactly one module")
    return args


def main(argv: Sequence[str] | None = None, root: Path = ROOT) -> int:
    args = parse_args(argv)
    root = (args.root or root).resolve()
    seed = args.seed if args.seed is not None else str(random.SystemRandom().randrange(10**6))
    plan = []
    for name in args.modules:
        path = _module_path(name, root)
        source = (root / path).read_text(encoding="utf-8")
        mutants = generate_mutants(source, path)
        if args.show is not None:
            print(mutants[args.show].diff(source), end="")
            return 0
        chosen = sample_mutants(mutants, args.sample, seed)
        if args.only:
            wanted = {int(n) for n in args.only.split(",")}
            chosen = [m for m in mutants if m.number in wanted]
        plan.append((path, source, mutants, chosen))
    if args.list:
        for path, source, mutants, chosen in plan:
            print(f"# {path}: {len(chosen)} of {len(mutants)} mutants (seed {seed})")
            for m in chosen:
                print(f"#{m.number} [{m.operator}] {m.describe(source)}")
        return 0
    if args.sample is not None:
        print(f"mutation: seed {seed} (repeat this sample with --seed {seed})")
    reports = []
    started = time.monotonic()
    runner = PytestRunner(fork=not args.no_fork)
    with Sandbox(root) as sandbox:
        _interrupt_on_sigterm()
        for path, _source, mutants, chosen in plan:
            tests = _tests_for(path, args.tests, root)
            check_sandbox_imports(sandbox, path, runner)
            reports.append(run_module(sandbox, path, chosen, len(mutants), tests, args.timeout, runner))
        if args.wider:
            run_wider(sandbox, reports, args.timeout, runner)
    print()
    print(format_table(reports))
    ran = sum(len(r.outcomes) for r in reports)
    print(f"\nmutants run: {ran} in {time.monotonic() - started:.0f}s" + (f" (seed {seed})" if args.sample else ""))
    sources = {path: source for path, source, _, _ in plan}
    for r in reports:
        for o in r.survivors:
            print(f"survived: #{o.mutant.number} {o.mutant.describe(sources[r.path])}")
    if args.fail_under is not None and any(100 * r.score < args.fail_under for r in reports):
        return 1
    return 0


def _interrupt_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so the sandbox is removed and the running tests are killed."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def entry() -> None:
    """``python -m tests.mutation`` (tests/mutation/__main__.py)."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the sandbox is gone, the running tests killed
        print("mutation: interrupted", file=sys.stderr)
        sys.exit(130)
