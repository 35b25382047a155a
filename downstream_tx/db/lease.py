"""The leases table: which instance runs the periodic jobs, and the fence that stops any other.

Several node processes (``--workers N``, or instances on several machines) share one database;
the periodic jobs (the contract timer, the seeded pool, the uptime summary) must run on exactly one
of them at a time. That one holds the lease row ``jobs``:

- :func:`acquire_txn` renews the caller's lease, or takes an expired (or released) one under a new
  ``generation``, or reports who holds it. The row is locked, so two instances never both take it.
- Every transaction of a job runs through :class:`FencedDatabase`, which first runs
  :func:`fence_txn` in the *same* transaction: the lease row, locked, must still name this holder
  and generation and not have expired on the caller's clock, else :class:`LeaseLost` rolls the
  whole transaction back. A leader that was paused (SIGSTOP, a long GC, a stalled VM) and resumes
  after another instance took over therefore changes nothing; and since the lock is held until
  commit, a takeover waits for a job transaction in progress and never overlaps it.

Times are the instances' own clocks (``expires`` = the holder's clock + ``lease_ttl``): instances
on several machines need synchronised clocks (NTP), as the contract deadlines already do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from twisted.internet import defer

from downstream_tx.db.database import Database, Txn

T = TypeVar("T")

#: the lease of the periodic jobs
JOBS = "jobs"


class LeaseLost(Exception):
    """A fenced transaction found that its instance no longer holds the lease (rolled back)."""


@dataclass(frozen=True)
class LeaseState:
    """The lease as one instance saw it. ``leader``: the caller holds it (``holder``)."""

    leader: bool
    holder: str
    generation: int
    acquired: float
    renewed: float
    expires: float


@dataclass(frozen=True)
class Fence:
    """What a job transaction checks: ``holder`` holds lease ``name`` at ``generation``."""

    name: str
    holder: str
    generation: int


def _row(txn: Txn, name: str) -> tuple | None:
    return txn.execute("SELECT holder, generation, acquired, renewed, expires FROM leases WHERE name = ?"
                       + txn.for_update(), (name,)).fetchone()


def acquire_txn(txn: Txn, name: str, holder: str, now: float, ttl: float) -> LeaseState:
    """Renew ``holder``'s unexpired lease, or take an expired one (``generation`` + 1), or report
    the other holder's lease unchanged."""
    row = _row(txn, name)
    if row is None:
        txn.execute("INSERT INTO leases (name, holder, generation, acquired, renewed, expires) "
                    "VALUES (?, ?, 1, ?, ?, ?)", (name, holder, now, now, now + ttl))
        return LeaseState(True, holder, 1, now, now, now + ttl)
    current, generation, acquired, renewed, expires = row
    generation, acquired, renewed, expires = int(generation), float(acquired), float(renewed), float(expires)
    if expires > now and current != holder:
        return LeaseState(False, current, generation, acquired, renewed, expires)
    if expires > now:  # ours: renew
        txn.execute("UPDATE leases SET renewed = ?, expires = ? WHERE name = ? AND generation = ?",
                    (now, now + ttl, name, generation))
        return LeaseState(True, holder, generation, acquired, now, now + ttl)
    # expired or released (ours too: whoever held it, nobody ran the jobs for a while): a new term
    txn.execute("UPDATE leases SET holder = ?, generation = ?, acquired = ?, renewed = ?, expires = ? "
                "WHERE name = ? AND generation = ?", (holder, generation + 1, now, now, now + ttl, name, generation))
    return LeaseState(True, holder, generation + 1, now, now, now + ttl)


def release_txn(txn: Txn, name: str, holder: str, generation: int) -> bool:
    """Give the lease up (a clean stop): it expires now, so another instance takes it at its next
    check. False if it was no longer ours."""
    return txn.execute("UPDATE leases SET expires = 0 WHERE name = ? AND holder = ? AND generation = ?",
                       (name, holder, generation)).rowcount > 0


def fence_txn(txn: Txn, fence: Fence, now: float) -> None:
    """Lock the lease row and raise :class:`LeaseLost` unless ``fence`` still holds it at ``now``
    (the first statement of every fenced transaction)."""
    # a write first, and a real change: Python's sqlite3 opens the transaction (and SQLite takes the
    # database's write lock) only at the first write, so a SELECT here would be read outside the
    # transaction; and on a Galera cluster only a written row is certified against a takeover made
    # through another node (a locking read is not)
    held = txn.execute("UPDATE leases SET fences = fences + 1 WHERE name = ? AND holder = ? AND generation = ? "
                       "AND expires > ?", (fence.name, fence.holder, fence.generation, now)).rowcount
    if held == 1:
        return
    row = _row(txn, fence.name)
    if row is None or row[0] != fence.holder or int(row[1]) != fence.generation or float(row[4]) <= now:
        held = ("nobody" if row is None
                else f"{row[0] or 'nobody'} (generation {int(row[1])}, expires {float(row[4]):.1f})")
        raise LeaseLost(f"lease {fence.name!r} generation {fence.generation} of {fence.holder} is lost: "
                        f"held by {held} at {now:.1f}")


def state_txn(txn: Txn, name: str) -> LeaseState | None:
    row = txn.execute("SELECT holder, generation, acquired, renewed, expires FROM leases WHERE name = ?",
                      (name,)).fetchone()
    if row is None:
        return None
    return LeaseState(False, row[0], int(row[1]), float(row[2]), float(row[3]), float(row[4]))


class LeaseStore:
    def __init__(self, db: Database):
        self.db = db

    def acquire(self, name: str, holder: str, now: float, ttl: float):
        """Fires with the :class:`LeaseState` after renewing or taking the lease (see :func:`acquire_txn`)."""
        return self.db.run("lease_acquire", acquire_txn, name, holder, now, ttl)

    def release(self, name: str, holder: str, generation: int):
        """Fires with True if the lease was ours and is now released."""
        return self.db.run("lease_release", release_txn, name, holder, generation)

    def state(self, name: str):
        """Fires with the lease as stored (``leader`` False), or None."""
        return self.db.run("lease_state", state_txn, name)


class FencedDatabase:
    """The periodic jobs' handle on a :class:`Database`: every transaction, through either entry
    point (:meth:`run`, :meth:`run_short`), first checks the fence of the term the instance holds
    now (:func:`fence_txn`), so a job of an instance that lost the lease changes nothing. The jobs'
    stores are built on it once; the jobs leader starts a term with :meth:`hold` and ends it with
    :meth:`release` (no term: every transaction is refused with :class:`LeaseLost`). A transaction
    checks the fence held when it was asked for, whatever term runs when it reaches the database.

    Nothing else of the database is reachable through it: what is not fenced is refused
    (:data:`REFUSED`), and the engine and clock the stores read are the wrapped database's."""

    #: the :class:`Database` methods a fenced handle runs under the fence
    FENCED = ("run", "run_short")
    #: the :class:`Database` methods a fenced handle refuses (the database's owner calls them on it)
    REFUSED = ("close", "connect")

    def __init__(self, db: Database, fence: Fence | None = None):
        self._db = db
        #: the fence of the term held now (None: between terms)
        self.fence = fence

    def hold(self, fence: Fence) -> None:
        """A term starts: transactions from now on check ``fence``."""
        self.fence = fence

    def release(self) -> None:
        """The term ended: transactions from now on are refused."""
        self.fence = None

    @property
    def engine(self) -> Any:
        return self._db.engine

    @property
    def clock(self) -> Any:
        return self._db.clock

    def _under_fence(self, entry: Callable[..., Any], desc: str, func: Callable[..., T], args: tuple,
                     kwargs: dict) -> Any:
        """``entry(desc, fenced body, …)``: the body runs after :func:`fence_txn` in its transaction,
        checking the fence held now (fails with :class:`LeaseLost` at once when none is)."""
        fence, clock = self.fence, self._db.clock
        if fence is None:
            return defer.fail(LeaseLost("no term of the jobs lease is held: a job's transaction is refused"))

        def fenced(txn: Txn, *a: Any, **kw: Any) -> T:
            # the time the transaction runs (on a pool thread: the reactor's clock is time.time()),
            # not when it was queued behind others
            fence_txn(txn, fence, clock.seconds())
            return func(txn, *a, **kw)

        return entry(desc, fenced, *args, **kwargs)

    def run(self, desc: str, func: Callable[..., T], *args: Any, **kwargs: Any):
        """:meth:`Database.run` under the fence."""
        return self._under_fence(self._db.run, desc, func, args, kwargs)

    def run_short(self, desc: str, func: Callable[..., T], *args: Any, **kwargs: Any):
        """:meth:`Database.run_short` under the fence."""
        return self._under_fence(self._db.run_short, desc, func, args, kwargs)

    def close(self) -> None:
        raise TypeError("a fenced database is the periodic jobs' handle: close the database itself")

    def connect(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("a fenced database is made over an open database, not connected")
