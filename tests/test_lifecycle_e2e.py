"""The operator's lifecycle against the real daemon and real farmers (v0 and v1, farming in threads):
a backup taken under load and restored into a new database serves the same farmers — their tokens
work, their contracts go on, their answers count — on both engines; and the whole move an operator
makes in the first year: a SQLite node with farmers → backup → copy to MariaDB → restart on MariaDB →
the same farmers served → the backup restored into a new database."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from support import MYSQL_URL, make_address, wait_until
from support.admin import ADMIN
from support.daemon import Daemon, daemon_env
from support.fault_load import DbView, V0Farmer, V1Farmer, http_get
from support.lifecycle import other_mysql_url

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

INTERVAL = 3
CHUNK = 4096


def admin(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(ADMIN + list(args), env=daemon_env(), capture_output=True, text=True, timeout=120)


def ok(*args: str) -> str:
    done = admin(*args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def daemon_args(where: list[str]) -> list[str]:
    return where + ["--tick", "0.1", "--seeded-interval", str(INTERVAL), "--seeded-pool", f"{CHUNK}:8",
                    "--seeded-challenges", "64", "--token-rate", "0", "--max-tokens-per-ip", "0",
                    "--challenge-batch", "40", "--challenge-low-water", "10"]


class Farm:
    """Two v0 farmers (a contract on each of the node's two stored files) and two v1 farmers."""

    def __init__(self, tmp_path: Path, url: str):
        self.v0 = [V0Farmer(f"v0-{i}", url, make_address(40 + i), files=2) for i in range(2)]
        self.v1 = []
        for i in range(2):
            (tmp_path / f"v1-{i}").mkdir()
            self.v1.append(V1Farmer(f"v1-{i}", url, make_address(50 + i), str(tmp_path / f"v1-{i}"), 2 * CHUNK))
        self.all = [*self.v0, *self.v1]

    def start(self) -> Farm:
        for f in self.all:
            f.start()
        return self

    def stop(self) -> None:
        for f in self.all:
            f.stop()

    def point_at(self, url: str) -> None:
        """Farm on another daemon. A v0 farmer answers what its /due says is due: the restored node may
        ask again what this one answered after the backup (it never saw that answer)."""
        for f in self.v0:
            f.answered.clear()
        for f in self.all:
            f.base = url

    def wait_farming(self, what: str, timeout: float = 40) -> None:
        wait_until(lambda: all(len(f.acked) == 2 and min(f.acked.values()) >= 2 for f in self.v0)
                   and all(f.heartbeats >= 3 for f in self.v1), timeout, what)


def progress_on(db: DbView, farm: Farm) -> tuple[dict, dict]:
    """What the database holds of the farmers' work: v0 passes per (token, file), v1 heartbeats."""
    recorded = db.passes_by_token_file()
    v0 = {(f.name, fh): recorded.get((hashlib.sha256(bytes.fromhex(f.token)).digest(), fh), 0)
          for f in farm.v0 for fh in f.data}
    return v0, {f.name: db.hbcount(f.token) for f in farm.v1}


def serves_the_same_farmers(url: str, db: DbView, farm: Farm, before: tuple[dict, dict]) -> None:
    """Every farmer's token works on ``url``; its contracts get new answers there, recorded in ``db``."""
    for f in farm.v0:
        code, body, _ = http_get(f"{url}/api/downstream/due/{f.token}")
        assert code == 200 and len(body["all_contracts"]) == 2, body
    for f in farm.v1:
        code, body, _ = http_get(f"{url}/api/downstream/v1/heartbeat/{f.token}")
        assert code == 200 and body["type"] == "Merkle", body

    def farther() -> bool:
        v0, v1 = progress_on(db, farm)
        return all(v0[k] >= before[0].get(k, 0) + 2 for k in v0) and all(v1[n] >= before[1][n] + 2 for n in v1)

    wait_until(farther, 40, "the same farmers farming on the restored node")


def add_files(tmp_path: Path, where: list[str]) -> None:
    for n in range(2):
        chunk = tmp_path / f"chunk{n}.bin"
        chunk.write_bytes(os.urandom(32 * 1024))
        ok(*where, "file", "add", str(chunk), "--redundancy", "3", "--interval", str(INTERVAL))


def restore_target(tmp_path: Path, engine: str) -> tuple[list[str], str]:
    """A new database (and data dir) to restore into, of the given engine."""
    data = tmp_path / "restored"
    if engine == "sqlite":
        return ["--data-dir", str(data)], "sqlite:///" + str(data / "downstream.db")
    url = other_mysql_url("restored")
    return ["--data-dir", str(data), "--db", url], url


def test_a_backup_taken_under_load_restores_a_node_that_serves_the_same_farmers(tmp_path, db_url):
    engine = "sqlite" if db_url.startswith("sqlite") else "mysql"
    where = ["--data-dir", str(tmp_path / "data"), "--db", db_url]
    add_files(tmp_path, where)
    first = Daemon(tmp_path / "run1", daemon_args(where)).start()
    farm = Farm(tmp_path, first.url).start()
    second = None
    try:
        farm.wait_farming("farming before the backup")
        backup = admin(*where, "backup", str(tmp_path / "node.tar"))
        assert backup.returncode == 0, backup.stderr
        assert "note: " in backup.stderr  # it says the daemon ran on: what came after the snapshot is not in it
        wait_until(lambda: all(f.heartbeats >= 5 for f in farm.v1), 30, "farming after the backup")
        assert first.stop() == 0
        target, url = restore_target(tmp_path, engine)
        restored = admin(*target, "restore", str(tmp_path / "node.tar"))
        assert restored.returncode == 0, restored.stderr
        db = DbView(url)
        before = progress_on(db, farm)
        second = Daemon(tmp_path / "run2", daemon_args(target)).start()
        farm.point_at(second.url)
        serves_the_same_farmers(second.url, db, farm, before)
    finally:
        farm.stop()
        if second is not None:
            assert second.stop() == 0, second.log()
        first.kill()
    assert db.consistency_problems() == []
    assert "Traceback" not in second.log()


@pytest.mark.mysql
def test_the_operators_first_year(tmp_path):
    """SQLite node with farmers → backup → copy to MariaDB → restart on MariaDB → same farmers served →
    restore the backup into a new database → served there too."""
    data = tmp_path / "data"
    sqlite = ["--data-dir", str(data)]
    add_files(tmp_path, sqlite)
    first = Daemon(tmp_path / "run1", daemon_args(sqlite)).start()
    farm = Farm(tmp_path, first.url).start()
    daemons = [first]
    try:
        farm.wait_farming("farming on SQLite")
        ok(*sqlite, "backup", str(tmp_path / "first-month.tar"))
        assert first.stop() == 0
        from support import fresh_mysql_database

        fresh_mysql_database(MYSQL_URL)
        copied = admin(*sqlite, "copy", "--to", MYSQL_URL)
        assert copied.returncode == 0 and "note:" not in copied.stderr, copied.stderr  # the daemon was stopped
        mariadb = ["--data-dir", str(data), "--db", MYSQL_URL]
        db = DbView(MYSQL_URL)
        before = progress_on(db, farm)
        second = Daemon(tmp_path / "run2", daemon_args(mariadb)).start()
        daemons.append(second)
        assert "started a new, empty node" not in second.log()
        farm.point_at(second.url)
        serves_the_same_farmers(second.url, db, farm, before)
        assert second.stop() == 0

        target, url = restore_target(tmp_path, "sqlite")
        ok(*target, "restore", str(tmp_path / "first-month.tar"))
        db = DbView(url)
        before = progress_on(db, farm)
        third = Daemon(tmp_path / "run3", daemon_args(target)).start()
        daemons.append(third)
        farm.point_at(third.url)
        serves_the_same_farmers(third.url, db, farm, before)
    finally:
        farm.stop()
        for d in daemons[1:]:
            if d.proc is not None and d.proc.poll() is None:
                assert d.stop() == 0, d.log()
        first.kill()
    for d in daemons:
        assert "Traceback" not in d.log()
