"""The transaction wrapper: observers see database errors, not refused input."""

import pytest

from downstream_tx.errors import INVALID, NodeError
from support import make_config, open_test_db, run


def test_observers_count_database_errors_only(tmp_path, db_url, clock):
    db = open_test_db(make_config(tmp_path, db_url), clock)
    seen = []
    db.observers.append(lambda desc, seconds, ok: seen.append((desc, ok)))

    def refuse(txn):
        raise NodeError(INVALID, "invalid_token", "bad token")

    with pytest.raises(NodeError):
        run(db.run("refused", refuse))
    with pytest.raises(Exception) as broken:
        run(db.run("broken", lambda txn: txn.execute("SELECT no_such_column FROM tokens")))
    assert not isinstance(broken.value, NodeError)
    assert run(db.run("fine", lambda txn: txn.scalar("SELECT 1"))) == 1
    assert seen == [("refused", True), ("broken", False), ("fine", True)]
    db.close()


def test_update_by_id_sets_per_row_values_on_both_engines(tmp_path, db_url, clock):
    """Per-row values in chunks (executemany on SQLite, one joined UPDATE per chunk on MySQL)."""
    db = open_test_db(make_config(tmp_path, db_url), clock)

    def body(txn):
        txn.executemany("INSERT INTO tokens (token_hash, farmer_id, address, created) VALUES (?, 'f', 'a', 0)",
                        [(bytes([i]) * 32,) for i in range(1, 8)])
        ids = [r[0] for r in txn.execute("SELECT id FROM tokens ORDER BY id").fetchall()]
        txn.execute("UPDATE tokens SET deleted = 1 WHERE id = ?", (ids[4],))
        changed = txn.update_by_id("tokens", ["hbcount", "farmer_id"], [(i, i * 10, f"x{i}") for i in ids[:5]],
                                   where="deleted IS NULL", chunk=2)
        return ids, changed, txn.execute("SELECT id, hbcount, farmer_id FROM tokens ORDER BY id").fetchall()

    ids, changed, rows = run(db.run("tokens", body))
    assert changed == 4  # the deleted row is left alone by the where clause
    expected = [(i, i * 10, f"x{i}") for i in ids[:4]] + [(i, 0, "f") for i in ids[4:]]
    assert [tuple(r) for r in rows] == expected
    db.close()


# --- short transactions inline (SQLite) -----------------------------------------------------------

class RecordingPool:
    """A pool that runs nothing: it records each transaction handed to it."""

    running = True

    def __init__(self):
        self.calls = []

    def runInteraction(self, func, *args, **kwargs):
        from twisted.internet import defer

        self.calls.append(func)
        return defer.succeed("pooled")


def _inline_db(tmp_path, clock, pool=None):
    """A schema'd SQLite database, then a Database over it with inline short transactions on."""
    from downstream_tx.db.database import Database

    config = make_config(tmp_path, None)
    open_test_db(config, clock).close()
    schema_db = open_test_db(config, clock, upgrade=False)
    engine = schema_db.engine
    schema_db.close()
    assert engine.inline
    return Database(engine, pool or RecordingPool(), clock, backoff=0, inline=True)


def _add_token(txn, n=1):
    txn.execute("INSERT INTO tokens (token_hash, farmer_id, address, created) VALUES (?, 'f', 'a', 0)",
                (bytes([n]) * 32,))
    return txn.scalar("SELECT COUNT(*) FROM tokens")


def test_a_short_transaction_runs_inline_and_commits(tmp_path, clock):
    db = _inline_db(tmp_path, clock)
    seen = []
    db.observers.append(lambda desc, seconds, ok: seen.append((desc, ok)))
    assert run(db.run_short("add", _add_token)) == 1
    assert db.pool.calls == [] and db.inline_runs == 1 and db.last_success == clock.seconds()
    assert seen == [("add", True)]
    assert run(db.run_short("count", lambda txn: txn.scalar("SELECT COUNT(*) FROM tokens"))) == 1
    db.close()


def test_a_short_transaction_goes_to_the_pool_when_the_database_is_locked(tmp_path, clock):
    """Another connection holds the write lock: the inline attempt gives up at once (no wait),
    changes nothing, and the transaction goes to the pool (which waits and retries as run does)."""
    import sqlite3

    db = _inline_db(tmp_path, clock)
    seen = []
    db.observers.append(lambda desc, seconds, ok: seen.append((desc, ok)))
    other = sqlite3.connect(db.engine.url.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        assert run(db.run_short("add", _add_token)) == "pooled"
    finally:
        other.execute("ROLLBACK")
    assert len(db.pool.calls) == 1 and db.inline_busy == 1 and db.inline_runs == 0
    assert seen == [("add", True)]  # the pooled run, once: the locked attempt is not a transaction
    assert other.execute("SELECT COUNT(*) FROM tokens").fetchone()[0] == 0
    assert run(db.run_short("add", _add_token)) == 1  # free again: inline
    other.close()
    db.close()


def test_a_short_transaction_that_fails_rolls_back_and_is_observed_as_run_does(tmp_path, clock):
    db = _inline_db(tmp_path, clock)
    seen = []
    db.observers.append(lambda desc, seconds, ok: seen.append((desc, ok)))

    def refuse(txn):
        _add_token(txn)
        raise NodeError(INVALID, "invalid_token", "bad token")

    with pytest.raises(NodeError):
        run(db.run_short("refused", refuse))
    with pytest.raises(Exception) as broken:
        run(db.run_short("broken", lambda txn: txn.execute("SELECT no_such_column FROM tokens")))
    assert not isinstance(broken.value, NodeError)
    assert seen == [("refused", True), ("broken", False)]
    assert run(db.run_short("count", lambda txn: txn.scalar("SELECT COUNT(*) FROM tokens"))) == 0
    assert db.pool.calls == []
    db.close()


def test_pooled_transactions_take_the_write_lock_first_when_inline_is_on(tmp_path, clock):
    """What a pooled body reads cannot change under it: from its first statement (a read) on, a
    writer on another connection finds the database locked."""
    import sqlite3

    from support import InlinePool

    db = _inline_db(tmp_path, clock)
    db.pool = InlinePool(db.engine)
    other = sqlite3.connect(db.engine.url.path, timeout=0, isolation_level=None)
    refused = []

    def body(txn):
        txn.scalar("SELECT COUNT(*) FROM tokens")
        try:
            other.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            refused.append(str(e))
        return txn._cursor.connection.in_transaction

    assert run(db.run("read", body)) is True
    assert refused == ["database is locked"]
    db.inline = False  # as before: Python's sqlite3 begins at the first write only
    assert run(db.run("read", body)) is False
    other.execute("ROLLBACK")
    other.close()
    db.close()


def test_inline_commits_ask_the_pool_for_a_wal_checkpoint_now_and_then(tmp_path, clock):
    db = _inline_db(tmp_path, clock)
    db.CHECKPOINT_EVERY = 3
    for n in range(1, 7):
        run(db.run_short("add", _add_token, n))
    assert len(db.pool.calls) == 2 and db.inline_runs == 6
    db.close()


def test_short_transactions_give_the_same_results_as_run_on_both_engines(tmp_path, db_url, clock):
    """MySQL/MariaDB has no inline path (every statement is a round trip): run_short is run."""
    db = open_test_db(make_config(tmp_path, db_url), clock)
    db.inline = db.engine.inline
    assert run(db.run_short("add", _add_token)) == 1
    assert run(db.run("count", lambda txn: txn.scalar("SELECT COUNT(*) FROM tokens"))) == 1
    assert db.inline_runs == (1 if db.engine.name == "sqlite" else 0)
    db.close()


# --- effects after commit (Txn.call_after) --------------------------------------------------------

def test_calls_after_commit_run_once_the_transaction_committed_in_order_with_notes(tmp_path, db_url, clock):
    db = open_test_db(make_config(tmp_path, db_url), clock)
    seen = []
    db.note_observers.append(lambda event: seen.append(("note", event)))

    def body(txn):
        txn.note("a")
        txn.call_after(seen.append, ("call", 1))
        txn.note("b")
        assert seen == []  # nothing before the commit
        return _add_token(txn)

    assert run(db.run("add", body)) == 1
    assert seen == [("note", "a"), ("call", 1), ("note", "b")]
    db.close()


def test_a_call_after_commit_is_not_made_for_a_rolled_back_transaction(tmp_path, db_url, clock):
    db = open_test_db(make_config(tmp_path, db_url), clock)
    seen = []

    def refuse(txn):
        txn.call_after(seen.append, "called")
        _add_token(txn)
        raise NodeError(INVALID, "invalid_token", "bad token")

    with pytest.raises(NodeError):
        run(db.run("refused", refuse))
    assert seen == []
    db.close()


def test_a_failing_call_after_commit_is_logged_and_the_others_still_run(tmp_path, db_url, clock):
    db = open_test_db(make_config(tmp_path, db_url), clock)
    seen = []

    def body(txn):
        txn.call_after(lambda: 1 / 0)
        txn.call_after(seen.append, "second")
        return _add_token(txn)

    assert run(db.run("add", body)) == 1
    assert seen == ["second"]
    db.close()


def test_an_inline_short_transaction_calls_after_its_commit_too(tmp_path, clock):
    db = _inline_db(tmp_path, clock)
    seen = []

    def body(txn):
        txn.call_after(seen.append, "after")
        return _add_token(txn)

    assert run(db.run_short("add", body)) == 1 and db.inline_runs == 1
    assert seen == ["after"]
    db.close()
