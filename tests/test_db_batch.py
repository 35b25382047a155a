"""Txn.update_by_id and Txn.update_matching (per-row executemany on SQLite, one joined UPDATE per
chunk on MariaDB)."""

from pathlib import Path

import pytest

from downstream_tx.db import schema
from downstream_tx.db.database import Txn
from downstream_tx.db.engine import create_engine


@pytest.fixture
def txn(db_url):
    engine = create_engine(db_url)
    if engine.name == "sqlite":
        Path(db_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    conn = engine.connect()
    t = Txn(conn.cursor(), engine)
    schema.upgrade_txn(t, schema.load_steps(engine.name))
    conn.commit()
    yield t
    conn.close()


def three_contracts(txn) -> list[int]:
    txn.execute("INSERT INTO tokens (token_hash, farmer_id, address, created) VALUES (?, 'f', 'a', 0)", (b"t" * 32,))
    token_id = txn.lastrowid
    txn.execute("INSERT INTO files (file_hash, kind, size, redundancy, interval_s, replicas, added) "
                "VALUES ('h', 'seeded', 1, 1, 1, 0, 0)")
    file_id = txn.lastrowid
    ids = []
    for due in (10.5, 20.25, 30.125):
        txn.execute("INSERT INTO contracts (token_id, file_id, protocol, state, start, interval_s, seq, issued, "
                    "deadline, due, answered) VALUES (?, ?, 1, 'active', 0, 1, 0, 0, ?, ?, 1)",
                    (token_id, file_id, due, due))
        ids.append(txn.lastrowid)
    return ids


def test_update_by_id_sets_values_guarded_per_row(txn):
    ids = three_contracts(txn)
    # the second row's guard is stale, the third is matched but not active
    txn.execute("UPDATE contracts SET state = 'ended' WHERE id = ?", (ids[2],))
    rows = [(ids[0], 11.5, 0, 10.5), (ids[1], 21.25, 0, 99.0), (ids[2], 31.125, 0, 30.125)]
    txn.update_by_id("contracts", ["due", "answered"], rows, where="state = 'active'", match=["due"], chunk=2)
    got = dict(txn.execute("SELECT id, due FROM contracts ORDER BY id").fetchall())
    answered = dict(txn.execute("SELECT id, answered FROM contracts ORDER BY id").fetchall())
    assert got == {ids[0]: 11.5, ids[1]: 20.25, ids[2]: 30.125}
    assert answered == {ids[0]: 0, ids[1]: 1, ids[2]: 1}


def test_update_matching_sets_expressions_on_rows_matching_every_key(txn):
    ids = three_contracts(txn)
    txn.execute("UPDATE contracts SET seq = 1 WHERE id = ?", (ids[2],))
    # by (id, seq): the first matches, the second's seq is stale, the third matches but fails ``where``
    rows = [(ids[0], 0), (ids[1], 5), (ids[2], 1)]
    changed = txn.update_matching("contracts", ["answered = 0", "deadline = due + interval_s", "passes = passes + 1"],
                                  ["id", "seq"], rows, where="deadline < ?", args=[30.0], chunk=2)
    assert changed == 1
    got = {r[0]: tuple(r[1:]) for r in txn.execute("SELECT id, answered, deadline, passes FROM contracts").fetchall()}
    assert got == {ids[0]: (0, 11.5, 1), ids[1]: (1, 20.25, 0), ids[2]: (1, 30.125, 0)}
    assert txn.update_matching("contracts", ["passes = 9"], ["id"], []) == 0
