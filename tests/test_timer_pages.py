"""The v0 timer pass in pages (issue 11): each page its own transaction, every due contract issued
exactly once however the pass is cut into pages, a retried page changing nothing twice,
and the pass calling the one rule (``domain.verdicts.judge_due``, tests/test_domain_verdicts.py) that decides
miss and fail per contract. SQLite and MariaDB."""

from __future__ import annotations

import sqlite3

import pytest

from downstream_tx.db import challenges as db_challenges
from downstream_tx.db import contracts as db_contracts
from downstream_tx.db.database import Txn
from downstream_tx.domain.rules import Rules
from downstream_tx.domain.verdicts import Due, Verdict
from downstream_tx.v0 import challenges as v0_challenges
from support import add_test_file, make_address, record_statements, run

INTERVAL = 60
#: the pass's own rules, without containment (as the test nodes run)
UNCONTAINED = Rules(containment_retries=0)


def contracts_on(node, tmp_path, n: int) -> tuple[str, float]:
    """``n`` farmers, each with a contract on one file of redundancy ``n``: (file hash, start)."""
    h = add_test_file(node, tmp_path, redundancy=n, interval=INTERVAL)
    start = node.clock.seconds()
    for i in range(n):
        run(node.v0.get_chunk(run(node.v0.create_token(make_address(i)))))
    return h, start


def windows(node) -> list[tuple]:
    """(seq, issued, deadline, challenge_id, answered) of every contract, by id."""
    return run(node.db.run("t", lambda txn: [tuple(r) for r in txn.execute(
        "SELECT seq, issued, deadline, challenge_id, answered FROM contracts ORDER BY id").fetchall()]))


def used_challenges(node) -> int:
    return run(node.db.run("t", lambda txn: txn.scalar("SELECT COUNT(*) FROM challenges WHERE used = 1")))


def test_a_pass_over_more_contracts_than_a_page_issues_each_exactly_once(node, clock, tmp_path, monkeypatch):
    _, start = contracts_on(node, tmp_path, 7)
    monkeypatch.setattr(v0_challenges, "PASS_PAGE", 3)
    pages: list[str] = []
    node.db.observers.append(lambda desc, elapsed, ok: pages.append(desc) if desc == "update_challenges" else None)
    before = used_challenges(node)
    clock.advance(INTERVAL)
    result = run(node.supply.issue_due())
    assert (result.issued, result.missed, result.starved) == (7, 7, 0)
    assert pages == ["update_challenges"] * 3  # 3 + 3 + 1: each page its own transaction
    rows = windows(node)
    assert [r[:3] for r in rows] == [(1, start + INTERVAL, start + 2 * INTERVAL)] * 7
    assert len({r[3] for r in rows}) == 7 and {r[4] for r in rows} == {0}
    assert used_challenges(node) == before + 7
    assert run(node.supply.issue_due()).issued == 0  # nothing is due twice


@pytest.mark.parametrize("limit, pages", [(5, [5, 2]), (7, [7, 0]), (10, [7])])
def test_a_page_does_at_most_its_limit_and_says_whether_more_may_be_due(node, clock, tmp_path, limit, pages):
    contracts_on(node, tmp_path, 7)
    clock.advance(INTERVAL)
    store = node.stores.contracts
    seen = []
    while True:
        page = run(store.issue_due(clock.seconds(), 3, limit, None))
        seen.append(page.issued)
        if not page.more:
            break
    assert seen == pages


def transient_error(node) -> Exception:
    """An error the engine treats as transient (the transaction is rolled back and run again)."""
    if node.db.engine.name == "sqlite":
        return sqlite3.OperationalError("database is locked")
    import pymysql

    return pymysql.err.OperationalError(1213, "Deadlock found when trying to get lock")


def test_a_page_rolled_back_and_run_again_issues_once(node, clock, tmp_path):
    contracts_on(node, tmp_path, 4)
    before = used_challenges(node)
    clock.advance(INTERVAL)
    attempts = []

    def flaky_page(txn):
        result = db_contracts.update_due_txn(txn, UNCONTAINED, clock.seconds(), 3, 100, None)
        attempts.append(result.issued)
        if len(attempts) == 1:
            raise transient_error(node)  # after all its writes: they are rolled back
        return result

    done = []
    node.db.run("update_challenges", flaky_page).addBoth(done.append)
    clock.advance(10)  # the retry's back-off
    [result] = done
    assert attempts == [4, 4] and (result.issued, result.missed) == (4, 4)
    assert used_challenges(node) == before + 4
    assert {r[0] for r in windows(node)} == {1}
    rows = run(node.stores.contracts.all())
    assert [r["misses"] for r in rows] == [1] * 4


def test_a_page_committed_and_run_again_changes_nothing(node, clock, tmp_path):
    contracts_on(node, tmp_path, 3)
    clock.advance(INTERVAL)
    store = node.stores.contracts
    first = run(store.issue_due(clock.seconds(), 3, 100, None))
    state, used = windows(node), used_challenges(node)
    again = run(store.issue_due(clock.seconds(), 3, 100, None))
    assert (first.issued, first.missed) == (3, 3)
    assert (again.issued, again.missed, again.failed, again.starved, again.more) == (0, 0, 0, 0, False)
    assert (windows(node), used_challenges(node)) == (state, used)
    assert [r["misses"] for r in run(store.all())] == [1] * 3


def test_the_rule_a_page_applies_is_its_judge(node, clock, tmp_path):
    """``update_due_txn(judge=…)``: the one place the pass decides miss and fail per contract."""
    contracts_on(node, tmp_path, 3)
    clock.advance(INTERVAL)
    judged: list[Due] = []

    def fail_the_first(due, max_failures, forgive):
        judged.append(due)
        return Verdict(failed=len(judged) == 1)

    result = run(node.db.run("t", db_contracts.update_due_txn, UNCONTAINED, clock.seconds(), 3, 100, None,
                             fail_the_first))
    assert (result.failed, result.issued, result.missed) == (1, 2, 0)
    assert [d.outstanding for d in judged] == [True] * 3 and {d.run for d in judged} == {0}
    assert {d.deadline for d in judged} == {clock.seconds()} and {d.interval for d in judged} == {INTERVAL}
    assert result.failed_ids == [judged[0].id]
    rows = run(node.stores.contracts.all())
    assert sorted((r["state"], r["misses"]) for r in rows) == [("active", 0), ("active", 0), ("failed", 0)]
    assert [r["state"] for r in rows if r["id"] == judged[0].id] == ["failed"]


def test_taking_challenge_ids_marks_them_used_oldest_first(node, tmp_path):
    h1, h2 = add_test_file(node, tmp_path), add_test_file(node, tmp_path)
    f1, f2 = (run(node.stores.files.get_active(h)).id for h in (h1, h2))

    def take(txn):
        ids = [r[0] for r in txn.execute("SELECT id FROM challenges WHERE file_id = ? ORDER BY id", (f1,)).fetchall()]
        taken = db_challenges.take_ids_txn(txn, {f1: 2, f2: 0})
        return ids, taken

    ids, taken = run(node.db.run("t", take))
    assert taken == {f1: ids[:2]}
    assert run(node.stores.challenges.unused(f1)) == len(ids) - 2
    _, again = run(node.db.run("t", take))
    assert again == {f1: ids[2:4]}


def test_a_take_of_one_challenge_per_file_marks_the_oldest_unused_of_each(node, tmp_path):
    """Files that want one challenge each (a pass whose misses are of many files: a loose index
    scan on a server, a query block per file on SQLite) get the oldest unused one of each, used
    ones skipped, and it is marked used; a file with none left gets none."""
    ids = [run(node.stores.files.get_active(add_test_file(node, tmp_path))).id for _ in range(4)]

    def take(txn):
        oldest = {}
        for f in ids:
            rows = [r[0] for r in txn.execute("SELECT id FROM challenges WHERE file_id = ? ORDER BY id",
                                              (f,)).fetchall()]
            oldest[f] = rows
        # the first file's oldest used already, the last file's all used
        txn.execute("UPDATE challenges SET used = 1 WHERE id = ?", (oldest[ids[0]][0],))
        txn.update_in("UPDATE challenges SET used = 1 WHERE id IN {ids}", oldest[ids[3]])
        return oldest, db_challenges.take_ids_txn(txn, {f: 1 for f in ids})

    oldest, taken = run(node.db.run("t", take))
    assert taken == {ids[0]: [oldest[ids[0]][1]], ids[1]: [oldest[ids[1]][0]], ids[2]: [oldest[ids[2]][0]]}
    unused = run(node.stores.challenges.unused(ids[1]))
    assert unused == len(oldest[ids[1]]) - 1
    assert run(node.stores.challenges.unused(ids[0])) == len(oldest[ids[0]]) - 2
    again = run(node.db.run("t", db_challenges.take_ids_txn, {f: 1 for f in ids}))
    assert again == {ids[0]: [oldest[ids[0]][2]], ids[1]: [oldest[ids[1]][1]], ids[2]: [oldest[ids[2]][1]]}


def test_the_low_files_of_a_pass_in_one_statement(node, tmp_path, monkeypatch):
    """``low_files_txn``: the active stored files of the list under the mark, in id order, a
    removed one left out; one statement per ``IN_BATCH`` files, whatever the number of files."""
    hashes = [add_test_file(node, tmp_path) for _ in range(4)]
    ids = [run(node.stores.files.get_active(h)).id for h in hashes]
    run(node.files.remove(hashes[2]))
    unused = run(node.stores.challenges.unused(ids[0]))
    statements: list[str] = []
    real = Txn.execute

    def execute(self, sql, args=()):
        statements.append(sql)
        return real(self, sql, args)

    monkeypatch.setattr(Txn, "execute", execute)
    low = db_challenges.low_files_txn
    assert run(node.db.run("t", low, [ids[3], ids[1], ids[2], ids[0], ids[1]], unused + 1)) == [ids[0], ids[1], ids[3]]
    assert len(statements) == 1
    assert run(node.db.run("t", low, ids, unused)) == []
    assert run(node.db.run("t", low, [], unused + 1)) == []


def test_a_missed_contract_is_read_once_and_written_once(node, clock, tmp_path, monkeypatch):
    """The page's SELECT carries what the offline check, containment and the reputation hook need
    (the farmers are read by token), and the miss counts are written by the issuing UPDATE: one read
    and one write of the contracts for a page of misses."""
    contracts_on(node, tmp_path, 3)
    clock.advance(INTERVAL)
    statements = record_statements(monkeypatch)
    result = run(node.db.run("t", db_contracts.update_due_txn, UNCONTAINED, clock.seconds(), 3, 100, None))
    monkeypatch.undo()
    assert (result.missed, result.issued) == (3, 3)
    assert len([s for s in statements if "FROM contracts" in s]) == 1
    writes = [s for s in statements if s.startswith("UPDATE contracts")]
    assert len(writes) == 1 and "misses = misses + 1" in writes[0]
    assert [(r["misses"], r["state"]) for r in run(node.stores.contracts.all())] == [(1, "active")] * 3
    assert run(node.db.run("t", lambda txn: txn.scalar(
        "SELECT COUNT(*) FROM contracts WHERE prev_missed = 1 AND prev_challenge_id IS NOT NULL"))) == 3
    assert run(node.db.run("t", lambda txn: txn.scalar("SELECT SUM(misses) FROM reputation"))) == 3


def test_the_low_files_check_counts_unused_challenges_up_to_the_mark(node, tmp_path):
    """``low_files_txn`` and ``all_low_files_txn`` read at most the mark's number of unused
    challenges per file (the unused one at offset mark - 1 exists or not), and answer as a count
    would: a file with fewer unused challenges than the mark is low, one with exactly the mark is
    not, used challenges among the unused ones do not count, and a mark of 0 finds none."""
    hashes = [add_test_file(node, tmp_path) for _ in range(3)]
    ids = [run(node.stores.files.get_active(h)).id for h in hashes]
    unused = run(node.stores.challenges.unused(ids[0]))
    assert unused >= 4

    def use(txn, file_id, count, every):
        """Mark ``count`` of the file's challenges used, every ``every``-th one (oldest first)."""
        rows = [r[0] for r in txn.execute("SELECT id FROM challenges WHERE file_id = ? ORDER BY id",
                                          (file_id,)).fetchall()]
        marked = rows[::every][:count]
        txn.update_in("UPDATE challenges SET used = 1 WHERE id IN {ids}", marked)

    run(node.db.run("t", use, ids[1], 1, 2))  # one used, at the start
    run(node.db.run("t", use, ids[2], 3, 2))  # three used, every other one
    have = {ids[0]: unused, ids[1]: unused - 1, ids[2]: unused - 3}
    for mark in (0, 1, unused - 3, unused - 2, unused - 1, unused, unused + 1):
        want = sorted(f for f, n in have.items() if n < mark)
        assert run(node.stores.challenges.low_files(ids, mark)) == want, mark
        assert run(node.stores.challenges.low_files(None, mark)) == want, mark
