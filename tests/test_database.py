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
