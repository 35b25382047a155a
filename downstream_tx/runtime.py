"""Opening the node: engine, pool, schema upgrade (SQLite backed up first), node secret.

Shared by the daemon (``tap.py``) and ``downstream-admin`` so both create or upgrade the database
the same way.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import threads
from twisted.logger import Logger

from downstream_tx.config import Config
from downstream_tx.db import schema
from downstream_tx.db.database import Database
from downstream_tx.db.engine import create_engine
from downstream_tx.node import Node

log = Logger()


def thread_runner(reactor: Any):
    """Run blocking or CPU-heavy work on the reactor's worker threads."""
    def run(func, *args, **kwargs):
        return threads.deferToThreadPool(reactor, reactor.getThreadPool(), func, *args, **kwargs)
    return run


async def open_database(config: Config, reactor: Any, schema_dir: str | None = None) -> Database:
    engine = create_engine(config.db_url)
    steps = schema.load_steps(engine.name, schema_dir)
    latest = steps[-1].version
    if engine.name == "sqlite":
        found = schema.sqlite_version_of(engine.url.path)
        schema.check_version(found, latest)
        if 0 < found < latest:
            backup = schema.backup_sqlite(engine.url.path, found)
            log.info("backed up schema version {found} database to {backup}", found=found, backup=backup)
    db = Database.connect(engine, reactor, pool_size=config.db_pool_size, retries=config.db_retries)
    try:
        before, after = await db.run("schema_upgrade", schema.upgrade_txn, steps)
    except BaseException:
        db.close()
        raise
    if before != after:
        log.info("database schema {action} version {after} ({db})",
                 action="created at" if before == 0 else f"upgraded from version {before} to",
                 after=after, db=engine.describe())
    return db


async def open_node(config: Config, reactor: Any, schema_dir: str | None = None) -> Node:
    db = await open_database(config, reactor, schema_dir)
    node = Node(config, db, reactor, thread_runner(reactor))
    try:
        await node.start()
    except BaseException:
        db.close()
        raise
    return node
