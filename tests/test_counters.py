"""Kept counters (db/counters.py, schema step 12): after any sequence of the node's own operations
the counters equal what counting the rows says, and the stats, overview and metrics counts built on
them equal the table scans they replaced — on SQLite and MariaDB, with commits lost and retried
(txn_outcomes) on the way. The stats' statements read no table through (SQLite's query plan)."""

from __future__ import annotations

import os
import re

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer

from downstream_tx.config import overdue_grace
from downstream_tx.core.tokens import hash_token
from downstream_tx.db import counters, overview, schema, stats, status
from downstream_tx.db.archive import latest
from downstream_tx.db.tokens import UnknownToken
from downstream_tx.errors import NodeError
from downstream_tx.jobs.archive import archive_pass
from downstream_tx.v0.hashes import parse_response
from downstream_tx.v1.wire import challenge_entries
from support import make_address, make_config, open_test_db, run, stored_bytes, v0_answer
from support.lost_commits import MODES, faulty_node, settle
from support.v1 import prove

INTERVAL = 60
IP = "10.1.2.3"

#: the statements the kept counters replaced (db/stats.py and db/overview.py before schema step 12):
#: the oracle
SCANS = {
    "by_state": "SELECT state, COUNT(*) FROM contracts GROUP BY state",
    "archived": "SELECT SUM(ended), SUM(failed) FROM contract_totals",
    "due": "SELECT protocol, COUNT(*) FROM contracts WHERE state = 'active' AND deadline > ? AND answered = 0 "
           "GROUP BY protocol",
    "overdue": "SELECT protocol, COUNT(*) FROM contracts WHERE state = 'active' AND deadline <= ? GROUP BY protocol",
    "online": "SELECT COUNT(DISTINCT token_id) FROM contracts WHERE state = 'active' AND run = 0",
    "active": "SELECT COUNT(DISTINCT token_id) FROM contracts WHERE state = 'active'",
    "total": "SELECT COUNT(*) FROM tokens WHERE deleted IS NULL",
    "dash_online": "SELECT COUNT(DISTINCT c.token_id) FROM contracts c JOIN tokens t ON t.id = c.token_id "
                   "WHERE c.state = 'active' AND c.deadline > ? AND t.deleted IS NULL",
}


def scanned(txn, now: float, grace: float) -> dict:
    """The counts as the table scans said them."""
    by_state = {str(s): int(n) for s, n in txn.execute(SCANS["by_state"]).fetchall()}
    ended, failed = txn.execute(SCANS["archived"]).fetchone()
    for state, n in (("ended", ended), ("failed", failed)):
        if n:
            by_state[state] = by_state.get(state, 0) + int(n)
    return {
        "contracts": by_state,
        "due": {int(p): int(n) for p, n in txn.execute(SCANS["due"], (now,)).fetchall()},
        "overdue": {int(p): int(n) for p, n in txn.execute(SCANS["overdue"], (now - grace,)).fetchall()},
        "farmers_online": int(txn.scalar(SCANS["online"])),
        "farmers_active": int(txn.scalar(SCANS["active"])),
        "farmers_total": int(txn.scalar(SCANS["total"])),
        "dashboard_online": int(txn.scalar(SCANS["dash_online"], (now,))),
    }


def kept(txn, now: float, grace: float) -> dict:
    """The same counts as the node now reads them."""
    c = stats.counts_txn(txn, now, grace)
    return {"contracts": c.contracts, "due": c.due, "overdue": c.overdue, "farmers_online": c.farmers_online,
            "farmers_active": c.farmers_active, "farmers_total": overview.farmers_total_txn(txn),
            "dashboard_online": overview.farmers_online_txn(txn, now)}


#: the status list's query before the per-token kept counts (db/status.py): the oracle
OLD_LIST = (
    f"SELECT t.farmer_id, t.address, t.location, {status._UPTIME} AS uptime, t.hbcount, "
    "COALESCE(s.n, 0) AS contracts, COALESCE(s.size, 0) AS size, "
    "CASE WHEN COALESCE(s.n, 0) > 0 THEN 1 ELSE 0 END AS online, "
    "(SELECT MAX(COALESCE(c2.due, c2.deadline)) FROM contracts c2 WHERE c2.token_id = t.id) AS last_due, "
    "a.last_due "
    "FROM tokens t LEFT JOIN (SELECT c.token_id AS token_id, COUNT(*) AS n, SUM(f.size) AS size FROM contracts c "
    "JOIN files f ON f.id = c.file_id WHERE c.state = 'active' AND c.deadline > ? GROUP BY c.token_id) s "
    "ON s.token_id = t.id LEFT JOIN contract_totals a ON a.token_id = t.id WHERE t.deleted IS NULL{} "
    "ORDER BY {}, t.id")


def old_list(txn, now: float, online_only: bool, sort: str, descending: bool) -> list:
    sql = OLD_LIST.format(" AND COALESCE(s.n, 0) > 0" if online_only else "",
                          status.SORT_COLUMNS[sort] + (" DESC" if descending else ""))
    return [status._farmer((*r[:8], latest(r[8], r[9]))) for r in txn.execute(sql, (now,)).fetchall()]


def check(node) -> None:
    now, grace = node.clock.seconds(), overdue_grace(node.config)

    def body(txn):
        values = counters.read_txn(txn)
        recount = counters.recount_txn(txn)
        assert {k: values.get(k, 0) for k in recount} == recount and set(values) <= set(recount), (values, recount)
        assert counters.tokens_txn(txn) == counters.recount_tokens_txn(txn)
        assert kept(txn, now, grace) == scanned(txn, now, grace)
        for online_only, sort, descending in ((False, "id", False), (True, "contracts", True), (False, "size", False),
                                              (False, "online", True)):
            assert status.farmers_txn(txn, now, online_only, sort, descending, None, 0) \
                == old_list(txn, now, online_only, sort, descending), (online_only, sort)
            assert status.farmers_txn(txn, now, online_only, sort, descending, 2, 1) \
                == old_list(txn, now, online_only, sort, descending)[1:3]

    run(node.db.run("check", body))


class Farm:
    """Operations of farmers, the timers and the operator on one node, with what a farmer keeps."""

    def __init__(self, node, faults, clock, tmp_path):
        self.node, self.faults, self.clock, self.tmp_path = node, faults, clock, tmp_path
        self.v0: list[str] = []
        self.v1: dict[str, dict[int, dict]] = {}  # token → contract id → chunk (its current challenge)
        self.files: list[str] = []
        self.addresses: dict[str, str] = {}

    def do(self, call):
        d = defer.ensureDeferred(call) if not isinstance(call, defer.Deferred) else call
        return settle(d, self.clock)

    def pick(self, items, n):
        return items[-1 - n % len(items)] if items else None  # (n small: the newest)

    # --- operations: each may be refused by the node (NodeError), which changes nothing
    def v0_token(self, n):
        address = make_address(n)
        token = self.do(self.node.v0.create_token(address))
        self.v0.append(token)
        self.addresses[token] = address

    def v1_token(self, n):
        address = make_address(100 + n)
        token = self.do(self.node.v1.new_token(address, IP))["token"]
        self.v1[token] = {}
        self.addresses[token] = address

    def add_file(self, n):
        if len(self.files) < 6:
            path = self.tmp_path / f"chunk-{len(self.files)}-{os.urandom(4).hex()}.bin"
            path.write_bytes(os.urandom(1024))
            self.files.append(self.do(self.node.files.add(str(path), 1 + n % 3, INTERVAL)))

    def v0_chunk(self, n):
        token = self.pick(self.v0, n)
        if token:
            self.do(self.node.v0.get_chunk(token))

    def v0_answer(self, n, right=True):
        token = self.pick(self.v0, n)
        if not token:
            return
        _, due = self.do(self.node.v0.due(token))
        for row in due[: 1 + n % 3]:
            data = stored_bytes(self.node, row["file_hash"])
            answer = v0_answer(data, row["challenge"]) if right else "0" * 64
            self.do(self.node.v0.answer(token, row["file_hash"], parse_response(answer)))

    def v0_fail(self, n):
        self.v0_answer(n, right=False)



    def v0_end(self, n):
        token = self.pick(self.v0, n)
        if token:
            rows, _ = self.do(self.node.v0.due(token))
            if rows:
                self.do(self.node.v0.end_contract(token, self.pick(rows, n)["file_hash"]))

    def v1_chunk(self, n):
        token = self.pick(list(self.v1), n)
        if token:
            self.do(self.node.pool.refill())
            for chunk in orjson.loads(orjson.dumps(self.do(self.node.v1.chunks(token, IP, 4096 * (1 + n % 2))))):
                self.v1[token][chunk["file_hash"]] = chunk

    def v1_refresh(self, n):
        token = self.pick(list(self.v1), n)
        if token:
            for entry in orjson.loads(orjson.dumps(challenge_entries(self.do(self.node.v1.challenges(token, None))))):
                if "challenge" in entry and entry["file_hash"] in self.v1[token]:
                    self.v1[token][entry["file_hash"]]["challenge"] = entry["challenge"]

    def v1_answer(self, n):
        token = self.pick(list(self.v1), n)
        if token and self.v1[token]:
            held = list(self.v1[token].values())[-1 - n % 4:]  # the newest (the older ones have expired)
            self.do(self.node.v1.answer(token, IP, [{"file_hash": c["file_hash"], "proof": prove(c)} for c in held]))

    def v1_cycle(self, n):
        """Take chunks, answer, wait for the due time, take the next challenges (an answered
        contract becomes unanswered again)."""
        self.v1_chunk(n)
        self.v1_answer(n)
        self.clock.advance(INTERVAL)
        self.v1_refresh(n)

    def tick(self, n):
        self.clock.advance(1 + (n * 7) % (2 * INTERVAL))
        self.do(self.node.supply.issue_due())
        self.do(self.node.stores.contracts.fill_starved(self.node.clock.seconds()))
        self.do(self.node.expiry.expire())

    def archive(self, n):
        self.do(archive_pass(self.node.stores.archive, self.node.config, self.node.clock.seconds()))

    def delete_token(self, n):
        token = self.pick(self.v0 + list(self.v1), n)
        if token:
            try:
                self.do(self.node.stores.tokens.delete(hash_token(token), self.node.clock.seconds()))
            except UnknownToken:
                pass  # deleted before

    def remove_file(self, n):
        fh = self.pick(self.files, n)
        if fh and len(self.files) > 2:
            self.files.remove(fh)
            self.do(self.node.files.remove(fh))

    def disqualify(self, n):
        token = self.pick(self.v0 + list(self.v1), n)
        if token:
            # the operator's view of a farmer disqualified by the rules; the sweep ends its contracts
            self.do(self.node.db.run("dq", lambda txn: txn.execute(
                "UPDATE reputation SET status = 'disqualified', pending_end = 1 WHERE address = ?",
                (self.addresses[token],))))
            self.do(self.node.reputation.sweep())


#: the operations, the farmers' more often than the operator's (which end contracts wholesale)
OPS = (["v0_chunk", "v0_answer", "v1_chunk", "v1_refresh", "v1_answer", "v1_cycle", "tick"] * 3
       + ["v0_token", "v1_token", "add_file", "v0_fail"] * 2
       + ["v0_end", "archive", "delete_token", "remove_file", "disqualify"])
#: a few operations set up the node (farmers and files) before the drawn ones
SETUP = [("v0_token", 0), ("v1_token", 0), ("add_file", 0), ("add_file", 1), ("v0_chunk", 0), ("v1_chunk", 0)]


@pytest.fixture
def farm(tmp_path, db_url, clock):
    config = make_config(tmp_path, db_url, seeded_pool="4096:6", seeded_challenges=4, seeded_interval=INTERVAL,
                         max_tokens_per_ip=0, max_failures=2, contract_retention=INTERVAL, archive_batch=5,
                         challenge_batch=2, challenge_low_water=1)  # (files run out of challenges: starved)
    node, faults = faulty_node(config, clock)
    yield Farm(node, faults, clock, tmp_path)
    node.db.close()


OPERATIONS = st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 50), st.sampled_from((None,) * 4 + MODES)),
                      max_size=30)


def test_kept_counters_equal_the_table_scans_after_any_operations(farm):
    """Random farmer, timer and operator operations, some with their commit's acknowledgement lost
    (committed or not: the lookup in txn_outcomes decides) or refused: after each, every counter
    equals its count of the rows and the stats equal the scans they replaced. One node lives
    through every example (the property holds in any state)."""
    for name, n in SETUP:
        getattr(farm, name)(n)
    check(farm.node)

    @settings(max_examples=40, deadline=None, database=None)
    @given(ops=OPERATIONS)
    def operations(ops):
        for name, n, fault in ops:
            if fault:
                farm.faults.arm(fault)
            try:
                getattr(farm, name)(n)
            except NodeError:
                pass  # refused (no chunk, no contract, not due, …): changes nothing
            finally:
                farm.faults.disarm()
            check(farm.node)

    operations()


def test_schema_step_12_fills_the_counters_from_an_existing_database(farm, tmp_path, clock):
    """An upgraded node starts with counters equal to its rows: a database at version 11 with
    contracts of every state (some archived) and a deleted token gets them filled by step 12."""
    for name, n in SETUP + [("v0_answer", 0), ("tick", 70), ("v0_fail", 0), ("tick", 9), ("archive", 0),
                            ("v1_token", 1), ("v1_chunk", 0), ("delete_token", 1), ("v0_chunk", 0)]:
        try:
            getattr(farm, name)(n)
        except NodeError:
            pass
    node = farm.node
    expected = run(node.db.run("recount", counters.recount_txn))
    per_token = run(node.db.run("recount", counters.recount_tokens_txn))
    assert len(per_token) >= 2
    assert expected[counters.state("active")] and expected[counters.state("failed")]
    assert expected[counters.unanswered(0)] and expected[counters.unanswered(1)]
    # back to version 11 (step 13's indexes and column, step 12's table and columns dropped), then
    # upgraded in ranges of 2 contract ids
    run(node.db.run("down", lambda txn: (txn.execute("DROP INDEX files_urgent ON files" if txn.engine_name == "mysql"
                                                     else "DROP INDEX files_urgent"),
                                         txn.execute("DROP INDEX files_missing ON files" if txn.engine_name == "mysql"
                                                     else "DROP INDEX files_missing"),
                                         txn.execute("ALTER TABLE files DROP COLUMN missing"),
                                         txn.execute("DROP TABLE counters"),
                                          txn.execute("ALTER TABLE tokens DROP COLUMN active_contracts"),
                                          txn.execute("ALTER TABLE tokens DROP COLUMN active_size"),
                                          txn.execute("UPDATE schema_version SET version = 11"))))
    old, schema.FILLS[12] = schema.FILLS[12], lambda txn: counters.fill_txn(txn, batch=2)
    try:
        assert run(node.db.run("up", schema.upgrade_txn, schema.load_steps(node.db.engine.name)))[0] == 11
    finally:
        schema.FILLS[12] = old
    assert run(node.db.run("read", counters.read_txn)) == expected
    assert run(node.db.run("read", counters.tokens_txn)) == per_token
    check(node)


def test_a_new_database_starts_with_every_counter_at_zero(tmp_path, db_url, clock):
    db = open_test_db(make_config(tmp_path, db_url), clock)
    try:
        values = run(db.run("read", counters.read_txn))
        assert values and set(values.values()) == {0}
        assert set(values) == {*map(counters.state, counters.STATES), *map(counters.unanswered, counters.PROTOCOLS),
                               counters.LIVE_TOKENS}
    finally:
        db.close()


#: ``sqlite_stat1`` of a database of 1M contracts of 1,000 farmers (bench/stats.py, after ANALYZE):
#: SQLite plans differently with statistics (a node's database has none unless an operator runs
#: ANALYZE), e.g. a join then walks every contract of every token
STAT1 = [("contracts", "contracts_contained", "1000000 1000000 1000"),
         ("contracts", "contracts_ended", "1000000 1000000"),
         ("contracts", "contracts_file", "1000000 10000 5883"), ("contracts", "contracts_token", "1000000 1000 1000"),
         ("contracts", "contracts_due", "1000000 333334 333334 16394"), ("tokens", "tokens_country", "1000 1000 1000"),
         ("tokens", "tokens_farmer", "1000 1"), ("tokens", "tokens_ip", "1000 1000 1000"),
         ("tokens", "tokens_address", "1000 2 2"), ("tokens", "sqlite_autoindex_tokens_1", "1000 1"),
         ("files", "files_assign", "100 100 100 100"), ("files", "files_hash", "100 1 1")]


@pytest.mark.parametrize("analyzed", [False, True], ids=["no statistics", "statistics of 1M contracts"])
def test_the_stats_read_no_table_through(tmp_path, clock, analyzed):
    """SQLite's plan of every statement of the stats job, the overview and a status list page over
    contracts: index searches only, each bounded by more than the state (``SCAN`` only of the small
    tables: counters, tokens, reputation, the pool), without statistics and with those of a large
    database."""
    db = open_test_db(make_config(tmp_path, None), clock)
    seen: list[tuple[str, tuple]] = []

    def body(txn):
        execute = txn.execute
        if analyzed:
            execute("ANALYZE")
            execute("DELETE FROM sqlite_stat1")
            txn.executemany("INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES (?, ?, ?)", STAT1)
            execute("ANALYZE sqlite_schema")  # (reloads the statistics)

        class Recording:
            def __getattr__(self, name):
                return getattr(txn, name)

            def execute(self, sql, args=()):
                seen.append((sql, tuple(args)))
                return execute(sql, args)

            def scalar(self, sql, args=()):
                row = self.execute(sql, args).fetchone()
                return None if row is None else row[0]

        recording = Recording()
        stats.counts_txn(recording, 1000.0, 10.0)
        overview.farmers_online_txn(recording, 1000.0)
        overview.farmers_total_txn(recording)
        status.farmers_txn(recording, 1000.0, True, "contracts", True, 25, 0)
        return {sql: [row[3] for row in execute("EXPLAIN QUERY PLAN " + sql, args).fetchall()] for sql, args in seen}

    try:
        plans = run(db.run("plan", body))
    finally:
        db.close()
    touching = {sql: plan for sql, plan in plans.items() if "contracts" in sql}
    assert len(touching) >= 5
    for sql, plan in plans.items():
        on_contracts = [step for step in plan if re.match(r"(SCAN|SEARCH) (contracts|c)\b", step)]
        assert all(step.startswith("SEARCH") for step in on_contracts), (sql, plan)
        # a search of every active contract (state=? alone) is a scan too
        assert not any(step.endswith("(state=?)") for step in on_contracts), (sql, plan)
    for sql, plan in touching.items():
        assert any(re.match(r"SEARCH (contracts|c) USING (COVERING )?INDEX contracts_\w+ \(\w", step)
                   for step in plan), (sql, plan)


def test_a_fenced_out_timer_pass_changes_no_counter(farm):
    """The jobs' transactions check the lease's fence first (db/lease.py): a pass of a holder that
    lost the lease is refused whole, its counter changes with it; the holder's own pass counts."""
    from downstream_tx.db import contracts, lease, seeded

    for name, n in SETUP + [("v0_answer", 0)]:
        getattr(farm, name)(n)
    node, clock = farm.node, farm.clock
    run(node.stores.leases.acquire(lease.JOBS, "a", clock.seconds(), 10))
    fenced = lease.FencedDatabase(node.db, lease.Fence(lease.JOBS, "a", 1))
    clock.advance(3 * INTERVAL)  # every contract due (v0) or expired (v1); the lease expired
    before = run(node.db.run("read", counters.read_txn))
    rules = node.stores.seeded.rules
    for desc, body, args in (("v0_pass", contracts.update_due_txn, (rules, clock.seconds(), 2)),
                             ("v1_expire", seeded.expire_txn, (rules, clock.seconds()))):
        with pytest.raises(lease.LeaseLost):
            run(fenced.run(desc, body, *args))
    assert run(node.db.run("read", counters.read_txn)) == before
    check(node)
    run(node.stores.leases.acquire(lease.JOBS, "a", clock.seconds(), 10))  # generation 2
    fenced = lease.FencedDatabase(node.db, lease.Fence(lease.JOBS, "a", 2))
    run(fenced.run("v0_pass", contracts.update_due_txn, rules, clock.seconds(), 2))
    run(fenced.run("v1_expire", seeded.expire_txn, rules, clock.seconds()))
    assert run(node.db.run("read", counters.read_txn)) != before
    check(node)


def test_starved_contracts_and_their_late_challenges_are_counted(farm):
    """A file out of challenges: the timer leaves its contracts without one (answered, nothing
    outstanding), the top-up and ``fill_starved`` give them one later (unanswered again)."""
    from downstream_tx.db import contracts

    path = farm.tmp_path / "starving.bin"
    path.write_bytes(os.urandom(1024))
    farm.files.append(farm.do(farm.node.files.add(str(path), 3, INTERVAL)))  # two challenges (challenge_batch)
    for n in range(3):
        farm.v0_token(200 + n)
        farm.do(farm.node.v0.get_chunk(farm.v0[-1]))
    check(farm.node)
    farm.clock.advance(INTERVAL)
    starved = []
    real = contracts.issue_next_txn

    def spy(txn, issue, now, answered, *marks):
        starved.extend(cid for cid, ch in issue if ch is None)
        return real(txn, issue, now, answered, *marks)

    contracts.issue_next_txn = spy
    try:
        farm.do(farm.node.stores.contracts.issue_due(farm.node.clock.seconds(), 2, 5000, None))
    finally:
        contracts.issue_next_txn = real
    assert starved  # (three contracts, at most two challenges left)
    check(farm.node)
    assert farm.do(farm.node.supply.top_up())  # the file gets challenges again
    assert farm.do(farm.node.stores.contracts.fill_starved(farm.node.clock.seconds())) == len(starved)
    check(farm.node)


def test_counts_are_written_by_every_path_of_a_transaction(tmp_path, clock):
    """``Txn.count`` is written at the end of the body on the pool (``run``) and inline on the
    reactor's thread (``run_short`` on SQLite); a body that raises writes none of it."""
    db = open_test_db(make_config(tmp_path, None), clock)
    db.inline = True  # run_short runs on this thread, on a connection of its own
    try:
        run(db.run("pooled", lambda txn: txn.count({counters.LIVE_TOKENS: 2, counters.ACTIVE: 0})))
        run(db.run_short("inline", lambda txn: txn.count({counters.LIVE_TOKENS: 3})))
        assert db.inline_runs == 1

        def refused(txn):
            txn.count({counters.LIVE_TOKENS: 100})
            raise ValueError("refused")

        for call in (db.run, db.run_short):
            with pytest.raises(ValueError):
                run(call("refused", refused))
        values = run(db.run("read", counters.read_txn))
        assert values[counters.LIVE_TOKENS] == 5 and values[counters.ACTIVE] == 0
    finally:
        db.close()
