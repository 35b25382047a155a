"""One daemon per SQLite file (``db/lock.py``): the second is refused with one line, a lock held for
the daemon's life and released by its end, however it ends; downstream-admin keeps working beside a
running daemon."""

from __future__ import annotations

import os
import signal

import pytest

from downstream_tx.db.lock import DaemonLock, DatabaseLocked, daemon_pid, lock_path
from support import ADDRESS
from support.admin import cli
from support.daemon import Daemon


def test_a_second_lock_on_the_same_file_is_refused_at_once(tmp_path):
    db = str(tmp_path / "downstream.db")
    first = DaemonLock(db)
    first.acquire()
    assert daemon_pid(db) == str(os.getpid())
    assert oct(os.stat(lock_path(db)).st_mode & 0o777) == "0o600"
    second = DaemonLock(db)
    with pytest.raises(DatabaseLocked, match=rf"database {db} is in use by another downstream-tx daemon "
                                             rf"\(pid {os.getpid()}\), which holds {db}.lock: stop it first"):
        second.acquire()
    assert not second.held
    first.release()
    assert daemon_pid(db) is None
    second.acquire()  # free again
    second.release()
    assert os.path.exists(lock_path(db))  # the file stays (see DaemonLock.release)


def test_no_daemon_no_lock(tmp_path):
    assert daemon_pid(str(tmp_path / "none.db")) is None


@pytest.mark.e2e
def test_a_second_daemon_on_one_sqlite_file_is_refused(tmp_path):
    data = str(tmp_path / "data")
    with Daemon(tmp_path / "one", ["--data-dir", data]) as first:
        second = Daemon(tmp_path / "two", ["--data-dir", data])
        try:
            with pytest.raises(RuntimeError, match="exited with 1"):
                second.start()
        finally:
            second.kill()  # (when it did start: never left running)
        line = [x for x in second.log().splitlines() if "cannot start" in x]
        assert len(line) == 1 and "Traceback" not in second.log(), second.log()
        assert (f"cannot start: database {data}/downstream.db is in use by another downstream-tx daemon "
                f"(pid {first.proc.pid})") in line[0]
        # the admin command is no daemon: it works beside the running one
        assert cli(tmp_path, "token", "create", ADDRESS).returncode == 0
        first.signal(signal.SIGKILL)  # the kernel releases a dead daemon's lock
        first.proc.wait(10)
    with Daemon(tmp_path / "three", ["--data-dir", data]) as third:
        assert daemon_pid(f"{data}/downstream.db") == str(third.proc.pid)
    assert daemon_pid(f"{data}/downstream.db") is None  # a clean stop releases it
