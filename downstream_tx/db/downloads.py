"""Downloads of stored chunks, each one a capability of one v0 contract (docs/protocol-v0.md,
"Downloads"): the rule that decides a request, and the counts kept on the contract.

A farmer that can fetch a chunk whenever a challenge arrives need not keep it, so a contract's
download URL serves the first download and its resumes (any ``Range``) for ``window`` seconds, and
no longer once the contract has passed a challenge (the farmer has shown it holds the bytes; a
download now could only stand in for them). After that it is refused, unless the operator set
``redownload`` (trusted networks). Every decision is made here from the contract's row, one
primary-key read, so any number of node processes on the database give the same answer.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import NamedTuple

from downstream_tx.db.database import Database, Txn

#: served: the first download (its time starts the window)
FIRST = "first"
#: served: another request inside the window (a resume, another range)
RESUMED = "resume"
#: served after the window because the ``redownload`` setting is on
AGAIN = "again"
SERVED = (FIRST, RESUMED, AGAIN)
#: refused (403): the contract's window closed, or it passed a challenge
CLOSED = "window_closed"
#: refused like an unknown file (404): the contract is over (ended, failed, its file removed)
ENDED = "ended"
#: refused like an unknown file (404): no v0 contract has this key for this file
INVALID = "invalid"


class DownloadRules(NamedTuple):
    #: seconds from the first download in which resumes and other ranges are served
    window: float
    #: serve a contract's download again after its window (the ``redownload`` setting)
    redownload: bool


class Use(NamedTuple):
    outcome: str
    #: the chunk's size in bytes (0: no contract has this key)
    size: int


def judge(start: float | None, passes: int, now: float, rules: DownloadRules) -> str:
    """What a request with an active contract's key gets: ``start`` is when its first download was
    served (None: not yet), ``passes`` the challenges it passed."""
    if passes == 0:
        if start is None:
            return FIRST
        if now < start + rules.window:
            return RESUMED
    return AGAIN if rules.redownload else CLOSED


def use_txn(txn: Txn, contract_id: int, key_hash: bytes, file_hash: str, now: float, rules: DownloadRules,
            record: Callable[[int], bool]) -> Use:
    """Decide a download of ``file_hash`` with the capability ``(contract_id, key)``, given as the
    key's SHA-256 (compared in constant time). When ``record(size of the chunk)`` is true (a GET
    that will get bytes: not a HEAD, not a range past the end) it is counted on the contract: a
    download served (the first one starts the window) or one refused."""
    row = txn.execute(
        "SELECT c.download_key, c.state, c.download_start, c.passes, f.file_hash, f.size FROM contracts c "
        "JOIN files f ON f.id = c.file_id WHERE c.id = ? AND c.protocol = 0", (contract_id,)
    ).fetchone()
    if row is None or row[0] is None:  # no such v0 contract, or one made before keys (schema step 9)
        return Use(INVALID, 0)
    stored, state, start, passes, contract_file, size = row
    if not hmac.compare_digest(bytes(stored), key_hash) or contract_file != file_hash:
        return Use(INVALID, 0)
    outcome = judge(start, int(passes), now, rules) if state == "active" else ENDED
    if record(int(size)):
        if outcome in SERVED:
            txn.execute("UPDATE contracts SET downloads = downloads + 1, redownloads = redownloads + ?, "
                        "download_start = COALESCE(download_start, ?) WHERE id = ?",
                        (int(outcome == AGAIN), now, contract_id))
        else:
            txn.execute("UPDATE contracts SET downloads_refused = downloads_refused + 1 WHERE id = ?",
                        (contract_id,))
    return Use(outcome, int(size))


class DownloadStore:
    """The download capabilities of v0 contracts (the key's hash is stored by the contract store
    when it makes the contract)."""

    def __init__(self, db: Database):
        self.db = db

    def use(self, contract_id: int, key_hash: bytes, file_hash: str, now: float, rules: DownloadRules,
            record: Callable[[int], bool]):
        """Fires with the :class:`Use` of a download request: see :func:`use_txn`."""
        return self.db.run_short("download", use_txn, contract_id, key_hash, file_hash, now, rules, record)
