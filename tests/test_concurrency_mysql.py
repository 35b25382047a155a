"""Two farmers asking for the last free slot of a file at the same moment, on MariaDB/MySQL: only one
gets it, and the file never goes over its redundancy target."""

from __future__ import annotations

import threading

import pytest
import pytest_twisted
import treq
from twisted.internet import defer, endpoints

from downstream_tx.core.tokens import hash_token
from downstream_tx.db import challenges, contracts
from downstream_tx.db.database import Txn
from downstream_tx.db.engine import create_engine
from downstream_tx.http.site import DownstreamSite
from downstream_tx.v0.hashes import parse_response
from support import (
    MYSQL_SKIP_REASON,
    MYSQL_URL,
    add_test_file,
    fresh_mysql_database,
    make_address,
    make_config,
    make_node,
    make_resource,
    race,
    run,
    stored_bytes,
    upgraded_mysql_database,
    v0_answer,
    wait_until,
)

pytestmark = [pytest.mark.mysql, pytest.mark.skipif(not MYSQL_URL, reason=MYSQL_SKIP_REASON)]

#: the write both racing transactions reach at the same moment
TAKE_SLOT = 'UPDATE files SET replicas = replicas + 1'


def token_id(node, token: str) -> int:
    return run(node.stores.tokens.get(hash_token(token))).id


def replicas_and_contracts(node, file_hash: str) -> tuple[int, int]:
    return run(replicas_and_active(node, file_hash))


async def replicas_and_active(node, file_hash: str) -> tuple[int, int]:
    """The file's replica count and its active contracts, through the stores."""
    replicas = await node.stores.files.replicas(file_hash)
    contracts = await node.stores.contracts.all()
    return replicas, sum(1 for c in contracts if c["file_hash"] == file_hash and c["state"] == "active")




def test_two_connections_race_for_the_last_slot(tmp_path, clock):
    upgraded_mysql_database(MYSQL_URL)
    node = make_node(make_config(tmp_path, MYSQL_URL), clock)
    try:
        file_hash = add_test_file(node, tmp_path, redundancy=2)
        holder = run(node.v0.create_token(make_address(0)))
        run(node.v0.get_chunk(holder))  # one slot left
        ids = [token_id(node, run(node.v0.create_token(make_address(i)))) for i in (1, 2)]
        results = race(create_engine(MYSQL_URL), TAKE_SLOT,
                       {tid: (lambda txn, tid=tid: contracts.assign_txn(txn, tid, clock.seconds())) for tid in ids})
        assigned = [r for r in results.values() if isinstance(r, contracts.Assignment)]
        assert len(results) == 2 and not [r for r in results.values() if isinstance(r, BaseException)], results
        assert len(assigned) == 1 and assigned[0].file_hash == file_hash
        assert list(results.values()).count(None) == 1
        assert replicas_and_contracts(node, file_hash) == (2, 2)
    finally:
        node.db.close()


@pytest_twisted.ensureDeferred
async def test_concurrent_chunk_requests_over_http(tmp_path):
    """Eight farmers ask a real listening node (real adbapi pool, 5 connections) at once."""
    from twisted.internet import reactor

    from downstream_tx.runtime import open_services

    fresh_mysql_database(MYSQL_URL)
    config = make_config(tmp_path, MYSQL_URL, max_tokens_per_ip=0, db_pool_size=5)
    node = await open_services(config, reactor)
    port = None
    try:
        port = await endpoints.serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
            DownstreamSite(make_resource(node, config)))
        base = f"http://127.0.0.1:{port.getHost().port}"
        path = tmp_path / "chunk.bin"
        path.write_bytes(b"x" * 10_000)
        file_hash = await node.files.add(str(path), 3, 60)
        holder = await node.v0.create_token(make_address(0))
        await node.v0.get_chunk(holder)  # 2 slots left
        tokens = [await node.v0.create_token(make_address(i)) for i in range(1, 9)]

        async def ask(token: str) -> int:
            response = await treq.get(f"{base}/api/downstream/chunk/{token}", persistent=False)
            await response.content()
            return response.code

        codes = await defer.gatherResults([defer.ensureDeferred(ask(t)) for t in tokens])
        assert sorted(codes) == [200, 200] + [404] * 6
        replicas, active = await replicas_and_active(node, file_hash)
        assert (replicas, active) == (3, 3)
    finally:
        if port is not None:
            await port.stopListening()
        node.db.close()


def running_on_challenges(engine) -> int:
    """Statements on the challenges table other connections of this user are running now (a user
    sees its own threads in the process list without the PROCESS privilege)."""
    conn = engine.connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() "
                           "AND COMMAND = 'Query' AND INFO LIKE '%challenges%'")
            return int(cursor.fetchone()[0])
    finally:
        conn.close()


def take_while_another_holds(engine, mine, theirs) -> tuple[object, object]:
    """Run ``mine`` (a function of a Txn) in a transaction, then ``theirs`` in a second one on its
    own connection, in a thread, which must wait on the first's locks; commit the first, let the
    second finish and commit: (what the first returned, what the second returned or raised)."""
    first = engine.connect()
    results: dict[str, object] = {}

    def second() -> None:
        conn = engine.connect()
        try:
            with conn.cursor() as cursor:
                results["second"] = theirs(Txn(cursor, engine))
            conn.commit()
        except BaseException as e:  # reported by the caller
            results["second"] = e
            conn.rollback()
        finally:
            conn.close()

    try:
        with first.cursor() as cursor:
            got = mine(Txn(cursor, engine))
            thread = threading.Thread(target=second)
            thread.start()
            # the second transaction has started reading (and is held by the first one's locks)
            wait_until(lambda: running_on_challenges(engine) == 1, 30, "the second transaction waiting")
            assert "second" not in results
        first.commit()
    finally:
        first.close()
    thread.join(30)
    return got, results["second"]


def test_take_many_locks_the_challenges_it_reads(tmp_path, clock):
    """``FOR UPDATE`` in ``challenges.take_many_txn``: while one transaction holds challenges it has
    taken, a second one waits for them and then takes the next ones. (Without the lock the second
    reads the same unused rows from its snapshot, and its guarded UPDATE changes none of them.)"""
    upgraded_mysql_database(MYSQL_URL)
    node = make_node(make_config(tmp_path, MYSQL_URL, challenge_batch=6, challenge_low_water=2), clock)
    try:
        file_hash = add_test_file(node, tmp_path)
        file_id = run(node.stores.files.get_active(file_hash)).id
        def take(txn):
            return challenges.take_many_txn(txn, {file_id: 2})

        mine, theirs = take_while_another_holds(create_engine(MYSQL_URL), take, take)
        assert not isinstance(theirs, BaseException), theirs
        assert len(mine[file_id]) == 2
        assert not {cid for cid, _ in mine[file_id]} & {cid for cid, _ in theirs[file_id]}
        assert [cid for cid, _ in theirs[file_id]] == [cid + 2 for cid, _ in mine[file_id]]
        assert run(node.stores.challenges.unused(file_id)) == 2
    finally:
        node.db.close()


def test_a_take_of_one_challenge_per_file_waits_and_takes_the_next(tmp_path, clock):
    """Files that want one challenge each are read by a loose index scan (the oldest unused one
    of each, a plain read) and then locked by primary key: a transaction holding the oldest of a
    file makes the second one wait, and once it commits the second one looks at that file again
    and takes the next. Without the re-check both would hand out the same challenge."""
    fresh_mysql_database(MYSQL_URL)
    node = make_node(make_config(tmp_path, MYSQL_URL, challenge_batch=6, challenge_low_water=2), clock)
    try:
        f1, f2 = (run(node.stores.files.get_active(add_test_file(node, tmp_path))).id for _ in range(2))
        mine, theirs = take_while_another_holds(create_engine(MYSQL_URL),
                                                lambda txn: challenges.take_ids_txn(txn, {f1: 1}),
                                                lambda txn: challenges.take_ids_txn(txn, {f1: 1, f2: 1}))
        assert not isinstance(theirs, BaseException), theirs
        assert theirs[f1] == [mine[f1][0] + 1]  # the next one of the file the first took from
        assert len(theirs[f2]) == 1
        assert run(node.stores.challenges.unused(f1)) == 4 and run(node.stores.challenges.unused(f2)) == 5
    finally:
        node.db.close()


@pytest_twisted.ensureDeferred
async def test_token_limits_hold_across_instances(tmp_path):
    """Two node instances (real pools) take token requests from one client IP at once: the per-IP
    token limit and the token-request rate limit are one limit over both, not one per instance."""
    from twisted.internet import reactor

    from downstream_tx.errors import NodeError
    from downstream_tx.http.ratelimit import SharedRateLimiter
    from downstream_tx.runtime import open_services

    fresh_mysql_database(MYSQL_URL)
    config = make_config(tmp_path, MYSQL_URL, max_tokens_per_ip=3, db_pool_size=5)
    nodes = [await open_services(config, reactor) for _ in range(2)]
    try:
        async def create(i: int) -> bool:
            try:
                await nodes[i % 2].v0.create_token(make_address(i), ip="203.0.113.7")
            except NodeError:
                return False
            return True

        failed: list[str] = []
        for n in nodes:
            n.db.observers.append(lambda desc, seconds, ok: ok or failed.append(desc))
        made = await defer.gatherResults([defer.ensureDeferred(create(i)) for i in range(10)])
        assert sum(made) == 3
        # many at once from one address and IP (limits off): every one made, no attempt deadlocked
        unlimited = config.replace(max_tokens_per_ip=0, max_tokens_per_address=0)
        for n in nodes:
            n.tokens.config = unlimited  # the token service's limits
        many = await defer.gatherResults([defer.ensureDeferred(nodes[i % 2].v0.create_token(make_address(1),
                                                                                           ip="203.0.113.8"))
                                          for i in range(30)])
        assert len(set(many)) == 30 and failed == []
        limiters = [SharedRateLimiter(4, reactor, n.stores.ratelimits, n.keys.hash_ip) for n in nodes]
        waits = await defer.gatherResults([defer.ensureDeferred(limiters[i % 2].check("203.0.113.9"))
                                           for i in range(8)])
        assert sum(1 for w in waits if w == 0) == 4
    finally:
        for n in nodes:
            n.db.close()


class _RacingDb:
    """Runs a store's transaction on a connection of its own in the calling thread, through a Txn
    that waits (at most ``wait`` s) at ``barrier`` just before the statement starting with ``before``."""

    def __init__(self, engine, barrier: threading.Barrier, before: str, wait: float):
        self.engine, self.barrier, self.before, self.wait = engine, barrier, before, wait

    def run(self, desc, func, *args):
        db = self

        class Txn_(Txn):
            def execute(self, sql, args=()):
                if sql.startswith(db.before):
                    try:
                        db.barrier.wait(timeout=db.wait)
                    except threading.BrokenBarrierError:
                        pass  # the other transaction waits for a lock this one holds: go on alone
                return super().execute(sql, args)

        conn = self.engine.connect()
        try:
            with conn.cursor() as cursor:
                result = func(Txn_(cursor, self.engine), *args)
            conn.commit()
            return result
        except BaseException:
            conn.rollback()
            raise
        finally:
            conn.close()


def test_two_instances_race_for_the_last_token_of_an_ip(tmp_path, clock):
    """Both transactions counted the IP's tokens before either inserted: without the key lock both
    would insert past ``max_tokens_per_ip``."""
    from downstream_tx.db.tokens import IpLimitReached, TokenStore

    upgraded_mysql_database(MYSQL_URL)
    node = make_node(make_config(tmp_path, MYSQL_URL), clock)
    node.db.close()
    engine = create_engine(MYSQL_URL)
    barrier = threading.Barrier(2)
    results: list = []

    def admit(facts) -> None:
        if facts.by_ip >= 1:
            raise IpLimitReached()

    def farmer(n: int) -> None:
        store = TokenStore(_RacingDb(engine, barrier, "INSERT INTO tokens", 2.0))
        try:
            results.append(store.create(bytes([n]) * 32, f"{n:020x}", make_address(n), "ip-hash", clock.seconds(),
                                        admit))
        except BaseException as e:  # counted below
            results.append(e)

    threads = [threading.Thread(target=farmer, args=(n,)) for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 2
    assert sum(1 for r in results if isinstance(r, int)) == 1
    assert sum(1 for r in results if isinstance(r, IpLimitReached)) == 1


def test_two_reads_of_a_new_window_take_one_challenge(tmp_path, clock):
    """Two /due reads of a window not taken yet, at the same moment (two node processes): the
    contract gets one challenge, both reads return it, and no other challenge is used up (the
    contract is re-read locked in ``contracts.materialise_txn`` before anything is taken)."""
    upgraded_mysql_database(MYSQL_URL)
    node = make_node(make_config(tmp_path, MYSQL_URL), clock)
    try:
        file_hash = add_test_file(node, tmp_path, interval=60)
        file_id = run(node.stores.files.get_active(file_hash)).id
        token = run(node.v0.create_token(make_address(0)))
        a = run(node.v0.get_chunk(token))
        answer = v0_answer(stored_bytes(node, file_hash), a.challenge.hex())
        assert run(node.v0.answer(token, file_hash, parse_response(answer))) == "pass"
        clock.advance(60)  # window 1 begins, not taken yet
        before = run(node.stores.challenges.unused(file_id))
        tid = token_id(node, token)
        results = race(create_engine(MYSQL_URL), "SELECT c.id, c.file_id, c.start",
                       {key: (lambda txn: contracts.token_contracts_txn(txn, tid, now=clock.seconds()))
                        for key in ("one", "two")})
        assert not [r for r in results.values() if isinstance(r, BaseException)], results
        [one], [two] = results["one"], results["two"]
        assert one["challenge_id"] == two["challenge_id"] is not None and not one["answered"]
        assert run(node.stores.challenges.unused(file_id)) == before - 1
    finally:
        node.db.close()
