"""Backups and restores (``lifecycle/backup.py``, ``lifecycle/restore.py``, ``downstream-admin backup``
and ``restore``): one file, 0600 whatever the umask, every table and the chunk store, a documented
format; restored into an empty database of either engine, checked, upgraded when older, refused when
newer or damaged (the database left empty)."""

from __future__ import annotations

import gzip
import io
import json
import os
import stat
import tarfile

import orjson
import pytest

from downstream_tx.db import schema
from downstream_tx.db.database import Txn
from downstream_tx.db.engine import create_engine
from downstream_tx.db.lock import DaemonLock
from downstream_tx.db.transfer import TransferError, table_names_txn
from downstream_tx.lifecycle.backup import CHUNKS, FORMAT, MANIFEST, TRAILER, member_name, write_backup
from downstream_tx.lifecycle.restore import restore_backup
from support import ADDRESS, MYSQL_URL, fresh_mysql_database, make_config, make_node, open_test_db, run
from support.admin import cli
from support.lifecycle import canonical_tables, catalogue_of, other_mysql_url, populate, sqlite_url


@pytest.fixture
def node(seeded_nodes):
    return seeded_nodes()


def restore_targets(tmp_path, engine: str) -> list[str]:
    targets = [sqlite_url(tmp_path / "restored" / "node.db")]
    if engine == "mysql":
        targets.append(other_mysql_url("restored"))
    return targets


def members(path) -> list[tarfile.TarInfo]:
    with tarfile.open(path, "r:") as tar:
        return tar.getmembers()


def test_the_backup_file_is_private_whatever_the_umask(node, tmp_path, clock):
    populate(node, tmp_path, clock)
    old = os.umask(0)
    try:
        backup = tmp_path / "b.tar"
        write_backup(node.config.db_url, node.config.chunk_path, str(backup))
    finally:
        os.umask(old)
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert all(m.mode == 0o600 for m in members(backup))
    assert [p for p in tmp_path.iterdir() if p.name.startswith("tmp")] == []  # its spool files are gone
    with pytest.raises(TransferError, match="exists already"):  # never overwritten
        write_backup(node.config.db_url, node.config.chunk_path, str(backup))


def test_the_format_is_the_documented_one(node, tmp_path, clock):
    made = populate(node, tmp_path, clock)
    backup = tmp_path / "b.tar"
    result = write_backup(node.config.db_url, node.config.chunk_path, str(backup))
    names = [m.name for m in members(backup)]
    with tarfile.open(backup, "r:") as tar:
        manifest = json.loads(tar.extractfile(MANIFEST).read())
        trailer = json.loads(tar.extractfile(TRAILER).read())
        tokens = [json.loads(line) for line in gzip.decompress(tar.extractfile(member_name("tokens")).read())
                  .splitlines()]
        chunk = tar.extractfile(f"{CHUNKS}{made['file_hash'][:2]}/{made['file_hash']}").read()
    assert names[0] == MANIFEST and names[-1] == TRAILER
    assert names[1:1 + len(manifest["tables"])] == [t["member"] for t in manifest["tables"]]
    assert manifest["format"] == FORMAT and manifest["format_version"] == 1
    assert manifest["schema_version"] == len(schema.load_steps(node.db.engine.name))
    assert manifest["engine"] == node.db.engine.name and manifest["node_version"]
    tables = {t["name"]: t for t in manifest["tables"]}
    assert set(tables) == set(canonical_tables(node.config.db_url))
    kinds = {kind for t in manifest["tables"] for _, kind in t["columns"]}
    assert kinds == {"integer", "real", "text", "char", "blob"}  # the documented names, every one in use
    assert tables["tokens"]["rows"] == len(tokens) == 2 and len(tables["tokens"]["checksum"]) == 64
    assert tables["tokens"]["next_id"] == 3 and tables["history"]["next_id"] is None
    columns = [c for c, _ in tables["tokens"]["columns"]]
    assert tokens[0][columns.index("token_hash")].keys() == {"b64"}  # bytes
    assert trailer == {"chunks": 1, "bytes": len(chunk), "missing": []} == {"chunks": result.chunks,
                                                                          "bytes": result.chunk_bytes, "missing": []}
    with open(node.chunks.path_for(made["file_hash"]), "rb") as f:
        assert f.read() == chunk


def test_restore_gives_back_the_same_node_on_either_engine(node, tmp_path, clock):
    made = populate(node, tmp_path, clock)
    source = canonical_tables(node.config.db_url)
    backup = tmp_path / "b.tar"
    write_backup(node.config.db_url, node.config.chunk_path, str(backup))
    for number, target in enumerate(restore_targets(tmp_path, node.db.engine.name)):
        chunk_dir = tmp_path / f"chunks-{number}"
        restored = restore_backup(str(backup), target, str(chunk_dir))
        assert canonical_tables(target) == source
        assert restored.chunks == 1 and restored.upgraded_to == restored.version
        assert stat.S_IMODE(os.stat(chunk_dir / made["file_hash"][:2] / made["file_hash"]).st_mode) == 0o600
        # the restored node serves the stored file: its key came with the database, its bytes with the chunks
        again = make_node(make_config(tmp_path / f"n{number}", target, chunk_dir=str(chunk_dir)), clock)
        try:
            out = tmp_path / f"export-{number}.bin"
            run(again.files.export(made["file_hash"], str(out)))
            assert out.read_bytes() == (tmp_path / "chunk.bin").read_bytes()
            assert run(again.v0.due(made["v0"]))[0]  # the token works
        finally:
            again.db.close()


@pytest.mark.mysql
def test_a_sqlite_backup_restores_into_mysql_and_back(tmp_path, clock):
    from support.v1 import make_seeded_node

    sqlite_node = make_seeded_node(tmp_path, sqlite_url(tmp_path / "s" / "node.db"), clock, "s")
    try:
        populate(sqlite_node, tmp_path, clock)
        source = canonical_tables(sqlite_node.config.db_url)
        write_backup(sqlite_node.config.db_url, sqlite_node.config.chunk_path, str(tmp_path / "s.tar"))
    finally:
        sqlite_node.db.close()
    fresh_mysql_database(MYSQL_URL)
    restore_backup(str(tmp_path / "s.tar"), MYSQL_URL, str(tmp_path / "m-chunks"))
    assert canonical_tables(MYSQL_URL) == source
    write_backup(MYSQL_URL, str(tmp_path / "m-chunks"), str(tmp_path / "m.tar"))
    restore_backup(str(tmp_path / "m.tar"), sqlite_url(tmp_path / "back.db"), str(tmp_path / "b-chunks"))
    assert canonical_tables(sqlite_url(tmp_path / "back.db")) == source


def test_an_older_backup_is_upgraded_after_restore(tmp_path, empty_db_url, clock):
    """A backup of schema version 7 restores at version 7 and is then upgraded, as the daemon upgrades
    an old database on start."""
    config = make_config(tmp_path, empty_db_url)
    steps = schema.load_steps(create_engine(empty_db_url).name)
    db = open_test_db(config, clock, upgrade=False)
    run(db.run("old", schema.upgrade_txn, steps[:7]))
    run(db.run("row", lambda txn: txn.execute(
        "INSERT INTO tokens (token_hash, farmer_id, address, created) VALUES (?, ?, ?, ?)",
        (b"\x01" * 32, "ab" * 10, ADDRESS, 5.0))))
    db.close()
    write_backup(empty_db_url, str(tmp_path / "chunks"), str(tmp_path / "old.tar"))
    target = sqlite_url(tmp_path / "new" / "node.db")
    restored = restore_backup(str(tmp_path / "old.tar"), target, str(tmp_path / "new-chunks"))
    assert (restored.version, restored.upgraded_to) == (7, len(steps))
    assert schema.sqlite_version_of(str(tmp_path / "new" / "node.db")) == len(schema.load_steps("sqlite"))
    assert [r[canonical_columns(target, "tokens").index("address")] for r in canonical_tables(target)["tokens"]] \
        == [ADDRESS]


def canonical_columns(url: str, table: str) -> list[str]:
    return [c for c, _ in {t.name: t for t in catalogue_of(url)}[table].columns]


def rewrite(backup, out, change) -> None:
    """A copy of the backup with ``change(name, data) -> data`` applied to every member."""
    with tarfile.open(backup, "r:") as src, tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as dst:
        for member in src.getmembers():
            data = change(member.name, src.extractfile(member).read())
            if data is None:
                continue
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))


def assert_left_empty(url: str) -> None:
    engine = create_engine(url)
    if engine.name == "sqlite":
        assert not os.path.exists(engine.url.path)
        assert [p for p in os.listdir(os.path.dirname(engine.url.path)) if ".partial-" in p] == []
        return
    conn = engine.connect()
    try:
        assert table_names_txn(Txn(conn.cursor(), engine)) == []
    finally:
        conn.close()


def test_restore_refuses_what_it_cannot_trust_and_leaves_the_database_empty(node, tmp_path, clock):
    made = populate(node, tmp_path, clock)
    backup = tmp_path / "b.tar"
    write_backup(node.config.db_url, node.config.chunk_path, str(backup))
    (tmp_path / "restored").mkdir()
    target = restore_targets(tmp_path, node.db.engine.name)[-1]

    def manifest(change):
        def edit(name, data):
            if name != MANIFEST:
                return data
            m = json.loads(data)
            change(m)
            return json.dumps(m).encode()
        return edit

    def tokens_row(name, data):
        if name != member_name("tokens"):
            return data
        lines = gzip.decompress(data).splitlines()
        row = json.loads(lines[0])
        row[[i for i, v in enumerate(row) if isinstance(v, (int, float)) and not isinstance(v, bool)][0]] += 1
        return gzip.compress(b"\n".join([orjson.dumps(row), *lines[1:]]) + b"\n")

    def chunk_bytes(name, data):
        return data[:-1] + bytes([data[-1] ^ 1]) if name.startswith(CHUNKS) else data

    def rename_table(m):
        m["tables"][0]["name"] = "not_a_table"

    cases = [
        (manifest(lambda m: m.update(schema_version=99)), "schema version 99, newer than this downstream-tx knows"),
        (manifest(rename_table), "the tables differ from schema version .*: not_a_table unknown here: .* missing$"),
        (manifest(lambda m: m.update(format="something else")), "not a downstream-tx backup"),
        (tokens_row, "table tokens holds 2 rows .* its manifest says 2"),
        (chunk_bytes, f"chunk {made['file_hash']} does not hash to its name"),
        (lambda name, data: None if name == TRAILER else data, "it ends before chunks.json"),
    ]
    for number, (change, message) in enumerate(cases):
        bad = tmp_path / f"bad{number}.tar"
        rewrite(backup, bad, change)
        with pytest.raises(TransferError, match=message):
            restore_backup(str(bad), target, str(tmp_path / "chunks-bad"))
        assert_left_empty(target)
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(TransferError, match="damaged or not a downstream-tx backup"):
        restore_backup(str(tmp_path / "junk.tar"), target, str(tmp_path / "chunks-bad"))
    # a database that is not empty is never written
    restore_backup(str(backup), target, str(tmp_path / "chunks-ok"))
    before = canonical_tables(target)
    with pytest.raises(TransferError, match="is not empty"):
        restore_backup(str(backup), target, str(tmp_path / "chunks-ok"))
    assert canonical_tables(target) == before


def test_restore_refuses_a_sqlite_file_a_daemon_holds(node, tmp_path):
    backup = tmp_path / "b.tar"
    write_backup(node.config.db_url, node.config.chunk_path, str(backup))
    path = tmp_path / "restored" / "node.db"
    path.parent.mkdir()
    lock = DaemonLock(str(path))
    lock.acquire()
    try:
        with pytest.raises(TransferError, match=f"a daemon \\(pid {os.getpid()}\\) runs on {path}: stop it first"):
            restore_backup(str(backup), sqlite_url(path), str(tmp_path / "chunks"))
    finally:
        lock.release()


# --- the commands -------------------------------------------------------------------------------------

@pytest.mark.parametrize("engine", ["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def test_backup_restore_and_copy_commands(tmp_path, engine):
    """The commands as an operator types them, with what they print and their exit statuses."""
    db = [] if engine == "sqlite" else ["--db", MYSQL_URL]
    if engine == "mysql":
        fresh_mysql_database(MYSQL_URL)
    csv = tmp_path / "wl.csv"
    csv.write_text(f"address,balance\n{ADDRESS},1\n")
    chunk = tmp_path / "c.bin"
    chunk.write_bytes(os.urandom(50000))
    assert cli(tmp_path, *db, "whitelist", "import", str(csv)).returncode == 0
    assert cli(tmp_path, *db, "file", "add", str(chunk), "--redundancy", "1", "--interval", "60").returncode == 0
    assert cli(tmp_path, *db, "token", "create", ADDRESS).returncode == 0

    done = cli(tmp_path, *db, "backup", str(tmp_path / "node.tar"))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("backed up ") and f"to {tmp_path / 'node.tar'} in " in lines[0]
    assert lines[1].split() == ["table", "rows", "checksum", "(of", "the", "snapshot,", "in", "the", "manifest)"]
    assert "1 chunk files" in lines[-1] and "mode 0600" in lines[-1]
    again = cli(tmp_path, *db, "backup", str(tmp_path / "node.tar"))
    assert again.returncode == 1 and again.stderr.count("\n") == 1 and "exists already" in again.stderr

    # restore into a new database: a SQLite file of a new data dir
    new = ["--data-dir", str(tmp_path / "new")]
    done = cli(tmp_path, *new, "restore", str(tmp_path / "node.tar"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].endswith(f"1 chunk files (48.8 KiB) in {tmp_path / 'new' / 'chunks'}")
    listed = cli(tmp_path, *new, "farmer", "list", "--json")
    assert [json.loads(x)["address"] for x in listed.stdout.splitlines()] == [ADDRESS]
    refused = cli(tmp_path, *new, "restore", str(tmp_path / "node.tar"))
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1 and "is not empty" in refused.stderr

    # copy the new node on to another database, and the first one's checksums hold all the way
    target = sqlite_url(tmp_path / "copied" / "node.db") if engine == "sqlite" else other_mysql_url("cli")
    done = cli(tmp_path, *new, "copy", "--to", target)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].endswith("every table's row count and checksum are the same in the target")
    backed = {line.split()[0]: line.split()[1:3] for line in cli(tmp_path, *db, "backup", str(tmp_path / "2.tar"))
              .stdout.splitlines()[2:-1]}
    copied = {line.split()[0]: line.split()[1:3] for line in done.stdout.splitlines()[2:-1]}
    assert {k: v for k, v in copied.items() if k not in ("leases", "node_meta", "rate_buckets")} == \
        {k: v for k, v in backed.items() if k not in ("leases", "node_meta", "rate_buckets")}
    assert "dtx-test" not in done.stdout + done.stderr  # the target's password is never shown
    bad = cli(tmp_path, *new, "copy", "--to", "postgres://x/y")
    assert bad.returncode == 2 and "--to: must start with sqlite:/// or mysql://" in bad.stderr
    missing = cli(tmp_path, "--data-dir", str(tmp_path / "none"), "backup", str(tmp_path / "x.tar"))
    assert missing.returncode == 1 and "no downstream-tx database at" in missing.stderr
    assert not (tmp_path / "x.tar").exists()


def test_restore_needs_to_be_told_where(tmp_path):
    import subprocess

    from support.admin import ADMIN
    from support.daemon import daemon_env

    done = subprocess.run(ADMIN + ["restore", str(tmp_path / "b.tar")], cwd=tmp_path, env=daemon_env(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "give the database to restore into" in done.stderr
    assert os.listdir(tmp_path) == []


class FakeTty(io.StringIO):
    def isatty(self):
        return True


def test_progress_on_a_terminal(node, tmp_path, clock):
    from downstream_tx.console import StageBars
    from downstream_tx.lifecycle.copy import copy_database

    populate(node, tmp_path, clock)
    tty = FakeTty()
    bars = StageBars(tty)
    bars_delay = 0.0
    import downstream_tx.console as console

    real = console.ProgressBar.__init__.__defaults__
    console.ProgressBar.__init__.__defaults__ = (None, bars_delay)
    try:
        copy_database(node.config.db_url, sqlite_url(tmp_path / "t.db"), bars)
        write_backup(node.config.db_url, node.config.chunk_path, str(tmp_path / "b.tar"), bars)
        bars.close()
    finally:
        console.ProgressBar.__init__.__defaults__ = real
    shown = tty.getvalue()
    for label in ("copying tokens", "copying challenges", "verifying", "reading contracts", "chunks"):
        assert label in shown, label
    assert "100%" in shown
    pipe = io.StringIO()
    quiet = StageBars(pipe)
    write_backup(node.config.db_url, node.config.chunk_path, str(tmp_path / "b2.tar"), quiet)
    quiet.close()
    assert pipe.getvalue() == ""
