"""The composition root: open the database (creating or upgrading its schema, a SQLite file backed
up first), build the node's stores and services once, over them the HTTP server, the periodic jobs
and the jobs leader, each through its constructor (nothing is patched after it is built).

The one builder of the daemon (``tap.py``), ``downstream-admin`` and the tests (``tests/support``):
:func:`open_services` (or :func:`build_services` over an open database), then :func:`build_server`,
:func:`jobs_leader` or :func:`build_jobs` over what it built.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import threads
from twisted.logger import Logger

from downstream_tx import geoip
from downstream_tx.config import Config
from downstream_tx.core.context import Blocking, Downloads, Results
from downstream_tx.core.farmers import Farmers
from downstream_tx.core.keys import NodeKeys
from downstream_tx.core.reputation import ReputationService, announce, rules_of
from downstream_tx.core.tokens import Tokens
from downstream_tx.dashboard.data import DashboardData, DashboardStores
from downstream_tx.db import schema
from downstream_tx.db.database import Database
from downstream_tx.db.engine import create_engine
from downstream_tx.db.lease import FencedDatabase
from downstream_tx.db.lock import DaemonLock
from downstream_tx.db.stores import Stores
from downstream_tx.geoip import Locator
from downstream_tx.health import ping_database
from downstream_tx.http.ratelimit import SharedRateLimiter
from downstream_tx.http.server import DownstreamServer
from downstream_tx.jobs.archive import archive_job
from downstream_tx.jobs.contracts import NAME as CONTRACT_TIMER
from downstream_tx.jobs.contracts import ContractTimer
from downstream_tx.jobs.leader import JobsLeader, default_instance_name, poll_interval
from downstream_tx.jobs.outcomes import outcomes_job
from downstream_tx.jobs.periodic import PeriodicJob
from downstream_tx.jobs.prune import prune_job
from downstream_tx.jobs.uptime import NAME as UPTIME
from downstream_tx.jobs.uptime import UptimeSummary
from downstream_tx.jobs.uptime import interval as uptime_interval
from downstream_tx.private import make_private_dirs
from downstream_tx.startup import MissingDatabase
from downstream_tx.v0.challenges import ChallengeSupply
from downstream_tx.v0.chunkstore import ChunkStore
from downstream_tx.v0.farming import V0Farming
from downstream_tx.v0.files import FileAdmin
from downstream_tx.v1.expiry import V1Expiry
from downstream_tx.v1.farming import V1Farming
from downstream_tx.v1.pool import SeededPool
from downstream_tx.v1.status import Status

log = Logger()

#: what every committed transaction's notes go to: each change of a farmer's standing, one log line
NOTE_OBSERVERS = (announce,)


@dataclass(frozen=True)
class Observers:
    """What the process running the node observes of it, given to the objects that report it as
    they are built (the daemon: its metrics and the dashboard's per-hour history; tests: none)."""

    #: called with ``(result, n, protocol)`` for each challenge outcome counted (``core.context.Results``)
    results: tuple[Callable[..., None], ...] = ()
    #: called with each download's outcome (``core.context.Downloads``)
    downloads: tuple[Callable[..., None], ...] = ()
    #: called with ``(job name, seconds, ok)`` after each pass of a periodic job
    jobs: Callable[[str, float, bool], None] | None = None
    #: called with ``(description, seconds, ok)`` after each database transaction
    transactions: tuple[Callable[[str, float, bool], None], ...] = ()


def thread_runner(reactor: Any) -> Blocking:
    """Run blocking or CPU-heavy work on the reactor's worker threads."""
    def run(func, *args, **kwargs):
        return threads.deferToThreadPool(reactor, reactor.getThreadPool(), func, *args, **kwargs)
    return run


@dataclass(repr=False)
class Services:
    """The assembled node, a plain record of what the composition root built: its configuration,
    stores, clock, keys, observed events and every service. No behaviour of its own: each service
    was given the stores and collaborators it uses, and nothing reaches through this record."""

    config: Config
    stores: Stores
    #: the injected clock (the reactor in the daemon, ``task.Clock`` in tests)
    clock: Any
    blocking: Blocking
    keys: NodeKeys
    results: Results
    downloads: Downloads
    #: GeoIP (the ``geoip`` setting; None when it is off)
    locator: Locator | None
    #: this process among the instances sharing the database: its name in the jobs lease (``instance_name``
    #: or host:pid, then ``~`` and a random part made at each start), on /health and the dashboard
    instance: str
    chunks: ChunkStore
    tokens: Tokens
    farmers: Farmers
    supply: ChallengeSupply
    files: FileAdmin
    v0: V0Farming
    v1: V1Farming
    pool: SeededPool
    expiry: V1Expiry
    status: Status
    reputation: ReputationService

    @property
    def db(self) -> Database:
        return self.stores.db


def assemble(config: Config, stores: Stores, clock: Any, blocking: Blocking, keys: NodeKeys, results: Results,
             downloads: Downloads, locator: Locator | None, instance: str, chunks: ChunkStore) -> Services:
    """Every service over ``stores`` (the node's, or the jobs' fenced ones), each given what it uses."""
    tokens = Tokens(stores.tokens, config, clock, keys.hash_ip, locator, blocking)
    supply = ChallengeSupply(chunks, stores.challenges, stores.files, stores.contracts, config, clock, blocking,
                             keys.secret, results)
    return Services(
        config=config, stores=stores, clock=clock, blocking=blocking, keys=keys, results=results,
        downloads=downloads, locator=locator, instance=instance, chunks=chunks, tokens=tokens,
        farmers=Farmers(stores.farmers, stores.tokens, clock), supply=supply,
        files=FileAdmin(stores.files, chunks, supply, config, clock, blocking),
        v0=V0Farming(stores.contracts, stores.reputation, stores.downloads, chunks, supply, tokens, config, clock,
                     results, downloads),
        v1=V1Farming(stores.seeded, stores.tokens, tokens, config, clock, blocking, keys, results),
        pool=SeededPool(stores.seeded, config, clock, blocking, keys.heartbeat_key()),
        expiry=V1Expiry(stores.seeded, clock, config.late_grace, results),
        status=Status(stores.status, stores.reputation, clock, config.vetting_audits),
        reputation=ReputationService(stores.reputation, clock, config.vetting_audits),
    )


async def build_services(db: Database, config: Config, clock: Any, blocking: Blocking,
                         chunks: ChunkStore | None = None, observers: Observers = Observers()) -> Services:
    """The node's stores and services over an open database (on a first start: the node secret is
    made). ``chunks``: the chunk store (default: the configured directory, created if missing)."""
    if chunks is None:
        chunks = ChunkStore(config.chunk_path)
        chunks.ensure()
    stores = Stores(db, rules_of(config))
    secret = await stores.meta.secret(os.urandom(32))
    # the lease holder's name: the instance's name and a random part, so two processes given one name
    # (two containers with the same host name and pid) can never both believe they hold the lease
    instance = f"{config.instance_name or default_instance_name()}~{os.urandom(3).hex()}"
    return assemble(config, stores, clock, blocking, NodeKeys(secret), Results(observers.results),
                    Downloads(observers.downloads), geoip.locator_from_config(config), instance, chunks)


def _missing(config: Config, where: str) -> MissingDatabase:
    source = config.source_of("db") if config.db else f"data_dir from {config.source_of('data_dir')}"
    if not config.location_given and config.config_file:
        source += f": {config.config_file} sets neither data_dir nor db"
    return MissingDatabase(
        f"no downstream-tx database at {where} ({source}); run where the node runs or give the node's "
        f"--config, --db or --data-dir (only `file add` and `whitelist import` create a new database, and only "
        f"where one of these names it)")


async def open_database(config: Config, reactor: Any, schema_dir: str | None = None,
                        create: bool = True, daemon: bool = False,
                        observers: tuple[Callable[[str, float, bool], None], ...] = ()) -> Database:
    """Open (``create``: also create) and upgrade the database. With ``create=False`` a database
    that does not exist yet (no SQLite file, or a MySQL database without the node's tables) is
    refused with :class:`~downstream_tx.startup.MissingDatabase` before anything is written.
    ``daemon``: a SQLite file is locked for the daemon's life first (``db/lock.py``: a second
    daemon on it is refused before it touches anything); ``Database.close`` releases it."""
    # (a server engine) a process paused inside a transaction must not hold the jobs lease's lock past its TTL
    engine = create_engine(config.db_url, idle_transaction_timeout=max(math.ceil(config.lease_ttl), 5))
    steps = schema.load_steps(engine.name, schema_dir)
    if not create and engine.name == "sqlite" and not os.path.exists(engine.url.path):
        raise _missing(config, os.path.abspath(engine.url.path))
    lock = None
    if daemon and engine.name == "sqlite":
        make_private_dirs(os.path.dirname(os.path.abspath(engine.url.path)))
        lock = DaemonLock(engine.url.path)
        lock.acquire()
    try:
        return await _open(config, reactor, engine, steps, create, lock, daemon, observers)
    except BaseException:
        if lock is not None:
            lock.release()
        raise


async def _open(config: Config, reactor: Any, engine: Any, steps: list, create: bool, lock: Any,
                daemon: bool, observers: tuple[Callable[[str, float, bool], None], ...]) -> Database:
    """:func:`open_database` once the daemon's lock (if any) is held."""
    latest = steps[-1].version
    if engine.name == "sqlite":
        found = schema.sqlite_version_of(engine.url.path)
        schema.check_version(found, latest)
        if 0 < found < latest:
            backup = schema.backup_sqlite(engine.url.path, found)
            log.info("backed up schema version {found} database to {backup}", found=found, backup=backup)
    db = Database.connect(engine, reactor, pool_size=config.db_pool_size, retries=config.db_retries,
                          note_observers=NOTE_OBSERVERS, lock=lock, observers=observers)
    try:
        if not create and engine.name != "sqlite" and await db.run("schema_version", schema.current_version_txn) == 0:
            raise _missing(config, engine.describe())
        if engine.name == "sqlite":
            before, after = await db.run("schema_upgrade", schema.upgrade_txn, steps)
        else:
            before, after = await _upgrade_server(config, reactor, steps)
    except BaseException:
        db.close()
        raise
    if before != after:
        log.info("database schema {action} version {after} ({db})",
                 action="created at" if before == 0 else f"upgraded from version {before} to",
                 after=after, db=engine.describe())
    if before == 0 and daemon:
        _mention_other_databases(config, engine)
    return db


async def _upgrade_server(config: Config, reactor: Any, steps: list) -> tuple[int, int]:
    """A server engine's schema upgrade, on a connection of its own that waits for each statement
    as long as it takes: a step's ALTER TABLE over a large table takes minutes (schema step 13 on
    3.2M files: docs/capacity.md), longer than the pool's read timeout — which would drop the
    connection while the server goes on and commits the change, leaving the version unrecorded."""
    engine = create_engine(config.db_url, idle_transaction_timeout=max(math.ceil(config.lease_ttl), 5),
                           read_timeout=None)
    db = Database.connect(engine, reactor, pool_size=1, retries=config.db_retries, note_observers=NOTE_OBSERVERS)
    try:
        return await db.run("schema_upgrade", schema.upgrade_txn, steps)
    finally:
        db.close()


def _mention_other_databases(config: Config, engine: Any) -> None:
    """A daemon that made a new, empty node while its data dir holds another node's database says so,
    once (an operator who switched ``db`` expects the farmers to follow: they do only by ``copy``)."""
    mine = engine.url.path if engine.name == "sqlite" else None
    for path, version in schema.node_databases(config.data_dir, exclude=mine):
        log.warn("started a new, empty node on {db}, but the data dir holds another node's database, {path} "
                 "(schema version {version}): its farmers, files and contracts are not here; to move them, stop "
                 "this daemon, re-create this database empty and run downstream-admin --db sqlite:///{path} copy --to "
                 "<this database> (docs/operations.md, \"Moving to MariaDB\")",
                 db=engine.describe(), path=path, version=version)


async def open_services(config: Config, reactor: Any, schema_dir: str | None = None,
                        create: bool = True, daemon: bool = False, observers: Observers = Observers()) -> Services:
    """The node's services over its database. ``create``: a node being set up (the daemon, ``file
    add``, ``whitelist import``): an unwritable chunk directory fails first, before a database is
    created for nothing; otherwise a missing database is refused (``open_database``). ``daemon``:
    see :func:`open_database`."""
    chunks = ChunkStore(config.chunk_path)
    if create:
        chunks.ensure()
    db = await open_database(config, reactor, schema_dir, create, daemon, observers.transactions)
    try:
        return await build_services(db, config, reactor, thread_runner(reactor), chunks, observers)
    except BaseException:
        db.close()
        raise


def contract_timer(services: Services) -> ContractTimer:
    stores = services.stores
    return ContractTimer(services.supply, services.expiry, stores.meta, services.clock, stores.farmers)


def build_jobs(services: Services, observer: Callable[[str, float, bool], None] | None = None) -> list[PeriodicJob]:
    """The periodic jobs the lease holder runs over ``services`` as given: the node's own (a single
    process that runs them itself, tests), or the jobs' fenced ones (:func:`jobs_leader`, a new set
    of jobs each term). ``observer``: told of each pass (metrics)."""
    config, clock, stores = services.config, services.clock, services.stores
    jobs = [
        PeriodicJob(CONTRACT_TIMER, contract_timer(services), config.tick, clock, observer),
        PeriodicJob("seeded_pool", services.pool.refill, config.tick, clock, observer),
        PeriodicJob("reputation", services.reputation.sweep, config.tick, clock, observer),
        PeriodicJob(UPTIME, UptimeSummary(stores.status, clock), uptime_interval(config.tick, config.seeded_interval),
                    clock, observer),
        archive_job(stores.archive, config, clock, observer),
        outcomes_job(stores.outcomes, clock, observer),
    ]
    if config.prune_interval:
        jobs.append(prune_job(stores.challenges, config, clock, observer))
    return jobs


def jobs_leader(services: Services, observer: Callable[[str, float, bool], None] | None = None) -> JobsLeader:
    """The lease-holding service that runs :func:`build_jobs` on the one instance holding the
    ``jobs`` lease, one term at a time. The jobs' services are built here once, over a
    :class:`FencedDatabase` (every transaction checks the fence of the term held then; the leader
    gives it each term's fence); the same clock, keys, result observers and chunk store as the node's."""
    n, config = services, services.config
    fenced_db = FencedDatabase(n.db)
    fenced = assemble(config, Stores(fenced_db, rules_of(config)), n.clock, n.blocking, n.keys, n.results, n.downloads,
                      n.locator, n.instance, n.chunks)
    return JobsLeader(n.stores.leases, fenced_db, lambda: build_jobs(fenced, observer), n.clock, n.instance,
                      config.lease_ttl, poll_interval(config.lease_ttl, config.tick))


def dashboard_data(services: Services) -> DashboardData | None:
    """The status dashboard's data service (None when the ``dashboard`` setting is off); its
    overview is cached for ``stats_interval`` seconds, at most 10."""
    config, stores = services.config, services.stores
    if not config.dashboard:
        return None
    return DashboardData(
        DashboardStores(stores.overview, stores.meta, stores.status, stores.stats, stores.leases,
                        stores.reputation.rules),
        services.status, services.farmers, services.reputation, config, services.clock, services.instance,
        services.clock.seconds(), cache_seconds=min(config.stats_interval, 10.0))


def build_server(services: Services, leadership: Callable[[], dict[str, Any]] | None = None,
                 base_url: str | None = None) -> DownstreamServer:
    """The HTTP API over the services: token requests limited per client address with the buckets
    in the database (shared by every instance). ``leadership``: the jobs leader's description, for
    ``/health``; ``base_url``: where farmers download chunks (default: the configuration's)."""
    config, clock, stores, hash_ip = services.config, services.clock, services.stores, services.keys.hash_ip
    return DownstreamServer(
        config, clock, services.v0, services.v1, services.status,
        ping=lambda timeout: ping_database(stores.stats, clock, timeout), hash_ip=hash_ip,
        blocking=services.blocking, limiter=SharedRateLimiter(config.token_rate, clock, stores.ratelimits, hash_ip),
        dashboard=dashboard_data(services), leadership=leadership, base_url=base_url)
