"""A node with something in every table, for the copy / backup / restore tests (in process), and
read-backs of a database's tables in canonical form."""

from __future__ import annotations

import os

from downstream_tx.db.engine import create_engine
from downstream_tx.db.history import HourRow
from downstream_tx.db.reputation import record_txn
from downstream_tx.db.transfer import catalogue_txn, pages_txn
from downstream_tx.domain.scores import Tally
from downstream_tx.v0.hashes import parse_response
from support import ADDRESS, MYSQL_URL, fresh_mysql_database, make_address, run, v0_answer
from support.v1 import Api, chunks, prove


def populate(node, tmp_path, clock) -> dict:
    """Tokens of both protocols, a stored file (encrypted: a key in bytes) with its challenges and a
    v0 contract answered once, v1 chunks from the seeded pool (tags, heartbeat state in bytes) and a
    proof, a whitelist, history rows, a reputation with failures, rate buckets. Returns the tokens."""
    api = Api(node, node.config)
    path = tmp_path / "chunk.bin"
    path.write_bytes(os.urandom(20000))
    file_hash = run(node.files.add(str(path), 2, 60))
    v0_token = run(node.v0.create_token(ADDRESS))
    chunk = run(node.v0.get_chunk(v0_token))
    data = open(node.chunks.path_for(file_hash), "rb").read()
    assert run(node.v0.answer(v0_token, file_hash, parse_response(v0_answer(data, chunk.challenge)))) == "pass"
    v1_token = api.new_token(make_address(3), forwarded="203.0.113.9")
    held = chunks(api, v1_token, 4096)
    code, body = api.post(f"/api/downstream/v1/answer/{v1_token}",
                          {"proofs": [{"file_hash": c["file_hash"], "proof": prove(c)} for c in held[:1]]})
    assert code == 200, body
    run(node.farmers.import_whitelist([(ADDRESS, 20000), (make_address(4), 5)]))
    run(node.stores.history.record("test" + "0" * 12, [HourRow(int(clock.seconds() // 3600) - h, 10 + h,
                                                                        h % 2, h % 3) for h in range(5)]))
    run(node.db.run("tally", record_txn, node.stores.reputation.rules, clock.seconds(),
                    {make_address(3): Tally(passes=2, fails=3, errors=1)}))
    return {"v0": v0_token, "v1": v1_token, "file_hash": file_hash}


def catalogue_of(url: str):
    """The node tables of the database at ``url`` (``db/transfer.py``'s catalogue)."""
    from downstream_tx.db.database import Txn

    engine = create_engine(url)
    conn = engine.connect()
    try:
        return catalogue_txn(Txn(conn.cursor(), engine))
    finally:
        conn.close()


def canonical_tables(url: str) -> dict[str, list[tuple]]:
    """Every node table of the database at ``url``, canonical rows sorted (small databases)."""
    engine = create_engine(url)
    conn = engine.connect()
    try:
        from downstream_tx.db.database import Txn

        txn = Txn(conn.cursor(), engine)
        out = {}
        for table in catalogue_txn(txn):
            rows = [row for page in pages_txn(txn, table) for row in page]
            out[table.name] = sorted(rows, key=repr)
        return out
    finally:
        conn.close()


def sqlite_url(path) -> str:
    return "sqlite:///" + str(path)


def other_mysql_url(suffix: str) -> str:
    """Another, fresh database on the MySQL test server (the test user may create any database whose
    name starts with the test database's)."""
    base, _, name = MYSQL_URL.rpartition("/")
    url = f"{base}/{name}_{suffix}"
    fresh_mysql_database(url)
    return url
