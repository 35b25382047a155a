"""The reputation record of many farmers at once (issue 25: a timer pass whose misses are spread
over many farmers): ``db.reputation.record_txn`` with more than one farmer reads their rows in one
locked statement and writes them in one, and leaves every row, count, standing and note exactly as
recording each farmer on its own does. SQLite and MariaDB."""

from __future__ import annotations

import re

import pytest

from downstream_tx.db import contracts as db_contracts
from downstream_tx.db import reputation
from downstream_tx.db.database import IN_BATCH, Txn
from downstream_tx.domain.rules import DISQUALIFIED, OFFLINE, OK, SUSPENDED, Rules
from downstream_tx.domain.scores import Tally
from support import add_test_file, make_address, record_statements, run

INTERVAL = 60
RULES = Rules()
NOW = 1_000_000.0

#: (status, audit (alpha, beta), unknown (alpha, beta), tally): farmers in good standing and not,
#: near and far from the disqualification and suspension thresholds, tallies of every kind
CASES = [
    (OK, (1000.0, 0.0), (1000.0, 0.0), Tally(passes=3)),
    (OK, (1000.0, 0.0), (1000.0, 0.0), Tally(misses=1)),
    (OK, (1000.0, 0.0), (1000.0, 0.0), Tally(retries=2)),
    (OK, (961.0, 39.5), (1000.0, 0.0), Tally(misses=1)),  # crosses dq_threshold: disqualified
    (OK, (961.0, 39.5), (1000.0, 0.0), Tally(fails=2, passes=1)),  # disqualified too
    (OK, (990.0, 10.0), (1000.0, 0.0), Tally(passes=2, fails=1, misses=1, retries=1)),
    (OK, (1000.0, 0.0), (601.0, 399.0), Tally(errors=2)),  # crosses suspension_threshold: suspended
    (OK, (1000.0, 0.0), (601.0, 399.0), Tally(errors=1, passes=5)),
    (SUSPENDED, (1000.0, 0.0), (599.5, 400.0), Tally(passes=3)),  # back above it: ok again
    (SUSPENDED, (1000.0, 0.0), (500.0, 500.0), Tally(passes=1)),  # still below: stays suspended
    (SUSPENDED, (961.0, 39.5), (500.0, 500.0), Tally(misses=2)),  # suspended, then disqualified
    (DISQUALIFIED, (500.0, 500.0), (1000.0, 0.0), Tally(misses=1, passes=1)),
    (OFFLINE, (961.0, 39.5), (1000.0, 0.0), Tally(misses=1)),
    (OFFLINE, (1000.0, 0.0), (1000.0, 0.0), Tally(retries=1, errors=1)),
    (OK, (123.456789, 7.000001), (0.1, 1e-9), Tally(passes=1, errors=1, misses=1)),
]


def seed(txn: Txn, prefix: str) -> list[str]:
    """A reputation row per case, address ``prefix`` + case number; returns the addresses."""
    addresses = [f"{prefix}{i:03d}" for i in range(len(CASES))]
    reputation.ensure_txn(txn, addresses, RULES)
    for address, (status, audit, unknown, _) in zip(addresses, CASES):
        txn.execute("UPDATE reputation SET status = ?, status_since = ?, status_reason = ?, audit_alpha = ?, "
                    "audit_beta = ?, unknown_alpha = ?, unknown_beta = ?, passes = 7, misses = 2 WHERE address = ?",
                    (status, None if status == OK else NOW - 10, None if status == OK else "before", *audit,
                     *unknown, address))
    return addresses


def rows(txn: Txn, prefix: str) -> list[tuple]:
    """Every column of the rows of ``prefix``, the address without it."""
    out = []
    for row in txn.execute("SELECT * FROM reputation WHERE address LIKE ? ORDER BY address",
                           (prefix + "%",)).fetchall():
        out.append((row[0][len(prefix):], *row[1:]))
    return out


def test_many_farmers_at_once_end_as_each_on_its_own(node, monkeypatch):
    """Every case recorded in one ``record_txn`` (batched) against each recorded by itself: the
    same rows, bit for bit, the same standing changes noted in the same order; a farmer without
    a row is left out by both, as before."""

    def body(txn: Txn):
        seed(txn, "one-")
        seed(txn, "all-")
        tallies = [case[3] for case in CASES]
        txn.notes.clear()
        for i, tally in enumerate(tallies):
            reputation.record_txn(txn, RULES, NOW, {f"one-{i:03d}": tally, "one-none": Tally(passes=1)}
                                  if i == 0 else {f"one-{i:03d}": tally})
        alone = [(n.address[len("one-"):], n.before, n.after, n.reason) for n in txn.notes]
        txn.notes.clear()
        batch = {**{f"all-{i:03d}": t for i, t in enumerate(tallies)}, "all-none": Tally(passes=1), "all-zero": Tally()}
        statements = record_statements(monkeypatch)
        reputation.record_txn(txn, RULES, NOW, batch)
        monkeypatch.undo()
        together = [(n.address[len("all-"):], n.before, n.after, n.reason) for n in txn.notes]
        return rows(txn, "one-"), rows(txn, "all-"), alone, together, statements

    one, together_rows, alone, together, statements = run(node.db.run("t", body))
    assert together_rows == one
    assert together == alone
    assert {a for a, *_ in together} >= {"003", "004", "006", "008", "010"}
    # one locked read; a linear write per kind of tally whose standing stays; one for the changes
    kinds = {tuple(vars(t).values()) for i, (*_, t) in enumerate(CASES) if f"{i:03d}" not in {a for a, *_ in together}}
    assert len([s for s in statements if s.startswith("SELECT")]) == 1
    assert len([s for s in statements if s.startswith("UPDATE")]) == len(kinds) + 1
    assert [r[0] for r in one] == [f"{i:03d}" for i in range(len(CASES))]  # no row made for "none"


def test_more_farmers_than_an_in_batch_are_read_and_written_in_chunks(node, monkeypatch):
    """Farmers beyond ``IN_BATCH``: one read per ``IN_BATCH`` (in address order, the lock order),
    each row written as its own record would."""
    n = IN_BATCH + 3

    def body(txn: Txn):
        addresses = [f"x-{i:05d}" for i in range(n)]
        reputation.ensure_txn(txn, addresses, RULES)
        statements = record_statements(monkeypatch)
        reputation.record_txn(txn, RULES, NOW, {a: Tally(misses=1) for a in addresses})
        monkeypatch.undo()
        return statements, txn.execute("SELECT COUNT(*), SUM(misses), SUM(passes) FROM reputation "
                                       "WHERE address LIKE 'x-%' AND updated = ?", (NOW,)).fetchone()

    statements, (count, misses, passes) = run(node.db.run("t", body))
    assert int(count) == n and int(misses) == n and int(passes) == 0
    assert len([s for s in statements if s.startswith("SELECT")]) == 2
    assert len([s for s in statements if s.startswith("UPDATE")]) == 2  # one kind of tally


@pytest.mark.parametrize("farmers", [2, 6])
def test_a_pass_with_misses_of_many_farmers_writes_their_reputation_in_a_bounded_number_of_statements(
        node, clock, tmp_path, monkeypatch, farmers):
    """The v0 timer pass over misses of ``farmers`` farmers: the same few reputation statements
    whatever their number (before, a read and a write per farmer), and each farmer's miss counted."""
    add_test_file(node, tmp_path, redundancy=farmers, interval=INTERVAL)
    for i in range(farmers):
        run(node.v0.get_chunk(run(node.v0.create_token(make_address(i)))))
    clock.advance(INTERVAL)
    statements = record_statements(monkeypatch)
    result = run(node.db.run("t", db_contracts.update_due_txn, Rules(containment_retries=0), clock.seconds(),
                             3, 100, None))
    monkeypatch.undo()
    assert result.missed == farmers
    # the pass's read of the farmers joins their rows (one statement, whatever their number)
    touching = [s for s in statements if re.match(r"(INSERT .*INTO|SELECT .* FROM|UPDATE) reputation\b", s)]
    assert len(touching) <= 3, touching  # a row for the unknown, one locked read, one write
    assert run(node.db.run("t", lambda txn: [int(r[0]) for r in txn.execute(
        "SELECT misses FROM reputation ORDER BY address").fetchall()])) == [1] * farmers
