"""Test helpers: a synchronous pool, the node's services on a fresh database, running coroutines
inline, HTTP through StubTreq."""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

from twisted.internet import defer, task
from twisted.python.failure import Failure

from downstream_tx.config import Config, load_config
from downstream_tx.core.tokens import hash_token
from downstream_tx.db import schema
from downstream_tx.db.database import Database, Txn
from downstream_tx.db.engine import create_engine
from downstream_tx.db.tokens import TokenRow
from downstream_tx.errors import NodeError
from downstream_tx.http.server import DownstreamServer
from downstream_tx.runtime import NOTE_OBSERVERS, Services, build_server, build_services
from downstream_tx.v1.wire import answer_entries, challenge_entries
from support.databases import copy_sqlite_template
from support.databases import fresh_mysql_database as fresh_mysql_database  # (re-exported: the tests' import)
from support.databases import upgraded_mysql_database as upgraded_mysql_database

MYSQL_ENV = "DOWNSTREAM_TEST_MYSQL_URL"
MYSQL_URL = os.environ.get(MYSQL_ENV)
MYSQL_SKIP_REASON = f"MySQL/MariaDB tests need {MYSQL_ENV}=mysql://user:password@host:port/dbname (CI sets it)"


class InlinePool:
    """``runInteraction`` on one connection in the calling thread: Deferreds fire at once."""

    def __init__(self, engine):
        self.engine = engine
        self.conn = engine.connect()
        self.running = True

    def runInteraction(self, func, *args, **kwargs):
        cursor = self.conn.cursor()
        try:
            result = func(cursor, *args, **kwargs)
            self.conn.commit()
        except BaseException as e:
            failure = Failure()
            try:
                self.conn.rollback()
            except Exception:
                pass
            if self.engine.drops_connection(e):  # as the node's pool: the next transaction reconnects
                try:
                    self.conn.close()
                except Exception:
                    pass
                self.conn = self.engine.connect()
            return defer.fail(failure)
        finally:
            try:
                cursor.close()
            except Exception:  # its connection was lost (and closed)
                pass
        return defer.succeed(result)

    def close(self):
        if self.running:
            self.running = False
            self.conn.close()


def inline_blocking(func, *args, **kwargs):
    return defer.maybeDeferred(func, *args, **kwargs)


def run(coro_or_deferred) -> Any:
    """Run a coroutine whose Deferreds all fire synchronously; return its result or raise."""
    d = defer.ensureDeferred(coro_or_deferred) if not isinstance(coro_or_deferred, defer.Deferred) \
        else coro_or_deferred
    results: list = []
    d.addBoth(results.append)
    if not results:
        raise AssertionError("the Deferred did not fire synchronously")
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


def refused(coro_or_deferred) -> NodeError:
    """The NodeError a service call refuses with (``coro_or_deferred``: its coroutine, run here)."""
    try:
        run(coro_or_deferred)
    except NodeError as e:
        return e
    raise AssertionError("the call was not refused")


def report_of(answer) -> list[dict[str, Any]]:
    """The v1 answer service's report (``answer``: its coroutine, run here) as the ``/answer``
    route sends it."""
    return answer_entries(run(answer))


def challenges_of(challenges) -> list[dict[str, Any]]:
    """The v1 challenges service's report (``challenges``: its coroutine, run here) as the
    ``/challenge`` route sends it."""
    return challenge_entries(run(challenges))


def make_config(tmp_path, db_url: str | None = None, **overrides) -> Config:
    """A test node's configuration. Containment is off unless a test sets ``containment_retries``
    (the node's default is 3): the tests of the miss and failure rules count a miss at once, the
    containment tests (tests/test_reputation.py) turn it on."""
    # The suite's farmers share one network (loopback, or the in-process client's address): a file's
    # replicas go to distinct networks only in the tests that say so (distinct_networks=True), as in
    # the daemon tests (support/daemon.py); distinct payout addresses always hold.
    values = {"data_dir": str(tmp_path / "data"), "db": db_url, "containment_retries": 0,
              "distinct_networks": False}
    values.update(overrides)
    return load_config(None, environ={}, overrides=values)


def open_database(url: str, clock=None, schema_dir: str | None = None, upgrade: bool = True,
                  template: bool = True) -> Database:
    """The database at ``url`` on an inline pool, its schema upgraded (``upgrade``; the steps of
    ``schema_dir`` if given). A SQLite file that does not exist yet starts as a copy of the
    session's upgraded template (``template``; support/databases.py) instead of running the steps."""
    engine = create_engine(url)
    if engine.name == "sqlite":
        os.makedirs(os.path.dirname(os.path.abspath(engine.url.path)), exist_ok=True)
        if upgrade and template and schema_dir is None:
            copy_sqlite_template(engine.url.path)
    # a test that builds an older schema itself has no txn_outcomes table (schema step 10)
    db = Database(engine, InlinePool(engine), clock or task.Clock(), backoff=0, record_outcomes=upgrade,
                  note_observers=NOTE_OBSERVERS)
    if upgrade:
        run(db.run("schema", schema.upgrade_txn, schema.load_steps(engine.name, schema_dir)))
    return db


def open_test_db(config: Config, clock, schema_dir: str | None = None, upgrade: bool = True) -> Database:
    return open_database(config.db_url, clock, schema_dir, upgrade)


def make_node(config: Config, clock=None) -> Services:
    """Every service of a node over a fresh database, built as the daemon builds them
    (``runtime.build_services``), with blocking work run inline."""
    clock = clock or task.Clock()
    db = open_test_db(config, clock)
    return run(build_services(db, config, clock, inline_blocking))


def make_server(node: Services, config: Config | None = None, **wiring) -> DownstreamServer:
    """The HTTP server over ``node``'s services, built as the daemon builds it (``runtime.build_server``:
    the database's rate limiter; ``wiring``: its ``leadership`` and ``base_url``). ``config``, if
    given, is the node's own (a test that names the config it made the node with)."""
    assert config is None or config == node.config, "the server has its node's configuration"
    return build_server(node, **wiring)


def make_resource(node: Services, config: Config | None = None):
    return make_server(node, config).resource()


def token_row(node: Services, token: str) -> TokenRow:
    """The live token's row (fails with UnknownToken)."""
    return run(node.stores.tokens.get(hash_token(token)))


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05) -> float:
    """Poll ``predicate()`` against a real subprocess until it holds, for at most ``timeout`` seconds
    (never a fixed wait); returns the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(interval)
    raise AssertionError(f"not {what} within {timeout}s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# a valid mainnet address (the spec's signed-message vector) and a few more, made in tests
ADDRESS = "19qVgG8C6eXwKMMyvVegsi3xCsKyk3Z3jV"


def record_statements(monkeypatch) -> list[str]:
    """Every statement run through a :class:`Txn` from now on (``execute`` and ``executemany``,
    whitespace folded) until ``monkeypatch.undo()``: the list they are appended to."""
    statements: list[str] = []
    real, real_many = Txn.execute, Txn.executemany

    def execute(self, sql, args=()):
        statements.append(" ".join(sql.split()))
        return real(self, sql, args)

    def executemany(self, sql, rows):
        statements.append(" ".join(sql.split()))
        return real_many(self, sql, rows)

    monkeypatch.setattr(Txn, "execute", execute)
    monkeypatch.setattr(Txn, "executemany", executemany)
    return statements


def recording_txn(txn: Txn, seen: list) -> Txn:
    """A :class:`Txn` over ``txn``'s cursor that appends ``(sql, args)`` of each statement it runs to
    ``seen`` (to read their query plans after)."""

    class Recording(Txn):
        def execute(self, sql, args=()):
            seen.append((sql, tuple(args)))
            return super().execute(sql, args)

    return Recording(txn._cursor, txn._engine)


def make_address(n: int) -> str:
    import coincurve

    from downstream_tx.bitcoin import address_from_pubkey

    key = coincurve.PrivateKey((n + 1).to_bytes(32, "big"))
    return address_from_pubkey(key.public_key.format(compressed=True))


# --- v0 farmer helpers ---------------------------------------------------------------------------

def v0_answer(data: bytes, challenge: bytes | str) -> str:
    """What an honest farmer answers: HMAC-SHA256 keyed by the challenge over the whole chunk."""
    import hashlib
    import hmac

    key = bytes.fromhex(challenge) if isinstance(challenge, str) else challenge
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def stored_bytes(node: Services, file_hash: str) -> bytes:
    with open(node.chunks.path_for(file_hash), "rb") as f:
        return f.read()


def add_test_file(node: Services, tmp_path, redundancy: int = 1, interval: int = 60, size: int = 4096,
                  name: str | None = None) -> str:
    """Add a random chunk of ``size`` bytes; returns its file hash."""
    path = tmp_path / (name or f"chunk-{os.urandom(4).hex()}.bin")
    path.write_bytes(os.urandom(size))
    return run(node.files.add(str(path), redundancy, interval))


def new_token(client: StubClient, address: str = ADDRESS) -> str:
    """A v0 token through the API (``client``: a :class:`StubClient`)."""
    r = client.get(f"/api/downstream/new/{address}")
    assert r.code == 200, r
    return r.json()["token"]


def assert_error(r: StubResponse, code: int, status: str) -> None:
    """``r`` is the node's JSON error ``status`` with HTTP ``code`` and a message."""
    assert r.code == code, r
    body = r.json()
    assert body["status"] == status
    assert isinstance(body.get("message"), str) and body["message"]
    assert "Traceback" not in r.body.decode()


def contract_row(node: Services, token: str, file_hash: str) -> dict | None:
    """The newest contract of a token on a file, as a dict (through the contract store)."""
    return run(node.stores.contracts.latest(hash_token(token), file_hash))


def file_replicas(node: Services, file_hash: str) -> int:
    return int(run(node.stores.files.replicas(file_hash)))


def snapshot(node: Services) -> dict:
    """Every row of every table (the test databases are small)."""
    return run(node.stores.meta.snapshot())


class StubClient:
    """Synchronous HTTP against the Klein resource through ``treq.testing.StubTreq``."""

    def __init__(self, resource, pump=None):
        from treq.testing import StubTreq

        self.treq = StubTreq(resource)
        #: called between flushes while a response is awaited (e.g. a Clock's advance(0): the
        #: database wrapper's retries wait on the clock)
        self.pump = pump

    def request(self, method: str, path: str, headers: dict[str, str] | None = None, data: bytes | None = None,
                allow_redirects: bool = True):
        def settle(d: defer.Deferred):
            out: list = []
            d.addBoth(out.append)
            for _ in range(1000):
                if out:
                    break
                self.treq.flush()
                if self.pump is not None:
                    self.pump()
            if not out:
                raise AssertionError(f"{method} {path}: no response")
            if isinstance(out[0], Failure):
                out[0].raiseException()
            return out[0]

        response = settle(self.treq.request(method, "http://node.test" + path, headers=headers or {}, data=data,
                                            allow_redirects=allow_redirects))
        body = settle(response.content())
        return StubResponse(response.code, response.headers, body, response.length)

    def get(self, path: str, **kw):
        return self.request("GET", path, **kw)


class StubResponse:
    def __init__(self, code: int, headers, body: bytes, length=None):
        self.code = code
        #: the Content-Length the server sent (the client keeps it out of ``headers``)
        self.length = None if not isinstance(length, int) else length
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name)
        return None if not values else values[0].decode() if isinstance(values[0], bytes) else values[0]

    def json(self):
        import orjson

        assert self.header("content-type") == "application/json", (self.code, self.body[:200])
        return orjson.loads(self.body)

    def __repr__(self) -> str:
        return f"<{self.code} {self.body[:200]!r}>"


class RacingTxn(Txn):
    """A Txn that waits at ``barrier`` just before its first statement that starts with ``before``,
    so two transactions on two connections reach that write at the same moment (the MySQL race
    tests: each has read what the other is about to change)."""

    def __init__(self, cursor, engine, barrier: threading.Barrier, before: str):
        super().__init__(cursor, engine)
        self._barrier: threading.Barrier | None = barrier
        self._before = before

    def execute(self, sql, args=()):
        if self._barrier is not None and sql.startswith(self._before):
            barrier, self._barrier = self._barrier, None
            barrier.wait(timeout=10)
        return super().execute(sql, args)


def race(engine, before: str, bodies: dict) -> dict:
    """Run ``bodies`` (key -> ``body(txn)``) at once, each in its own thread, connection and
    transaction (:class:`RacingTxn`: both reach the statement starting with ``before`` together).
    Returns key -> the body's result, or the exception it raised (its transaction rolled back)."""
    barrier = threading.Barrier(len(bodies))
    results: dict = {}

    def one(key) -> None:
        conn = engine.connect()
        try:
            with conn.cursor() as cursor:
                results[key] = bodies[key](RacingTxn(cursor, engine, barrier, before))
            conn.commit()
        except BaseException as e:  # the caller asserts on it
            results[key] = e
            conn.rollback()
        finally:
            conn.close()

    threads = [threading.Thread(target=one, args=(key,)) for key in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results
