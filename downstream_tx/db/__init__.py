"""Persistence: engines, the pool wrapper, the schema and one module per table group.

Nothing outside this package writes SQL. Functions named ``*_txn`` take a :class:`Txn` and run
inside one transaction; they are idempotent or guarded so that a retried transaction is safe. The
rules are not decided here: a store reads the rows a rule of ``downstream_tx.domain`` needs, calls
it, and writes what it decided in the same transaction.
"""

from downstream_tx.db.database import Database, DatabaseUnavailable, Txn  # noqa: F401
from downstream_tx.db.engine import Engine, create_engine  # noqa: F401
