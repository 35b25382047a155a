"""downstream-admin: commands, exit statuses, and the same database rules as the daemon."""

import io
import json
import os
import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from downstream_tx import admin
from downstream_tx.db import schema
from support import ADDRESS, MYSQL_ENV, run
from support.admin import cli


def dispatch(node, *argv) -> str:
    out = io.StringIO()
    args = admin.build_parser().parse_args(list(argv))
    assert run(admin._dispatch(args, node, out)) == 0
    return out.getvalue()


# --- in-process, on both engines ---------------------------------------------------------------

def test_commands_in_process(node, tmp_path):
    chunk = tmp_path / "c.bin"
    chunk.write_bytes(os.urandom(4096))
    token = dispatch(node, "token", "create", ADDRESS).strip()
    assert len(token) == 32
    file_hash = dispatch(node, "file", "add", str(chunk), "--redundancy", "2", "--interval", "30").strip()
    listing = json.loads(dispatch(node, "file", "list", "--json"))
    assert [(f["file_hash"], f["redundancy"], f["replicas"]) for f in listing] == [(file_hash, 2, 0)]
    assert file_hash in dispatch(node, "file", "list")
    batch = json.loads(dispatch(node, "challenges", "generate", file_hash, "--root-seed", "ab" * 32, "--count", "3"))
    assert batch["count"] == 3 and batch["root_seed"] == "ab" * 32 and len(batch["merkle_root"]) == 64
    assert json.loads(dispatch(node, "challenges", "update"))["issued"] == 0
    out = tmp_path / "out.bin"
    dispatch(node, "file", "export", file_hash, str(out))
    assert out.read_bytes() == chunk.read_bytes()
    csv = tmp_path / "wl.csv"
    csv.write_text("address,balance\n" + ADDRESS + ",20000\n\n")
    assert json.loads(dispatch(node, "whitelist", "import", str(csv))) == {"added": 1, "updated": 0, "removed": 0}
    farmer_id = __import__("hashlib").sha256(bytes.fromhex(token)).hexdigest()[:20]
    assert json.loads(dispatch(node, "farmer", "show", farmer_id))["address"] == ADDRESS
    assert "0 contracts ended" in dispatch(node, "token", "delete", token)
    assert "file removed" in dispatch(node, "file", "remove", file_hash)


@pytest.mark.parametrize("text, message", [
    ("addr\n", "expected address,balance"),
    ("a,b,c\n", "expected address,balance"),
    ("address,balance\nx,-5\n", "balance must be a whole number"),
    ("address,balance\nx,1e5\n", "balance must be a whole number"),
])
def test_whitelist_csv_errors(tmp_path, text, message):
    path = tmp_path / "wl.csv"
    path.write_text(text)
    with pytest.raises(admin.BadInput, match=message):
        admin.parse_whitelist(str(path))


def test_whitelist_csv_unreadable(tmp_path):
    with pytest.raises(admin.BadInput, match="cannot read"):
        admin.parse_whitelist(str(tmp_path / "missing.csv"))
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(admin.BadInput, match="not UTF-8"):
        admin.parse_whitelist(str(tmp_path / "bin.csv"))


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=300))
def test_whitelist_parser_never_crashes(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("wl") / "w.csv"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        rows = admin.parse_whitelist(str(path))
    except admin.BadInput:
        return
    assert all(isinstance(a, str) and isinstance(b, int) and b >= 0 for a, b in rows)


def test_config_command_masks_secrets():
    out = io.StringIO()
    code = admin.main(["--db", "mysql://u:topsecret@db.example/node", "config"], environ={}, out=out)
    assert code == 0
    assert "db = mysql://u:***@db.example:3306/node" in out.getvalue() or "u:***@db.example" in out.getvalue()
    assert "topsecret" not in out.getvalue()


def test_config_error_is_one_line_exit_2():
    err = io.StringIO()
    assert admin.main(["config"], environ={"DOWNSTREAM_TICK": "soon"}, out=io.StringIO(), err=err) == 2
    assert err.getvalue().count("\n") == 1 and "tick:" in err.getvalue()


def test_usage_error_exit_2(capsys):
    assert admin.main(["file", "add", "x"], environ={}) == 2


# --- as a subprocess: the real command, database created/upgraded like the daemon ---------------

def test_cli_end_to_end_sqlite(tmp_path):
    chunk = tmp_path / "c.bin"
    chunk.write_bytes(os.urandom(10000))
    created = cli(tmp_path, "token", "create", ADDRESS)
    assert created.returncode == 0, created.stderr
    assert len(created.stdout.strip()) == 32
    assert (tmp_path / "data" / "downstream.db").exists()
    bad = cli(tmp_path, "token", "create", "not-an-address")
    assert bad.returncode == 2 and "invalid address" in bad.stderr and "Traceback" not in bad.stderr
    added = cli(tmp_path, "file", "add", str(chunk), "--redundancy", "1", "--interval", "60")
    assert added.returncode == 0, added.stderr
    again = cli(tmp_path, "file", "add", str(chunk), "--redundancy", "1", "--interval", "60")
    assert again.returncode == 2 and "already monitored" in again.stderr
    missing = cli(tmp_path, "file", "remove", "0" * 64)
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_cli_upgrades_old_sqlite_with_backup_and_refuses_newer(tmp_path):
    db = tmp_path / "data" / "downstream.db"
    db.parent.mkdir()
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO schema_version VALUES (1)")
    conn.executescript(schema.load_steps("sqlite")[0].sql)
    conn.commit()
    conn.close()
    listed = cli(tmp_path, "file", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []
    assert schema.sqlite_version_of(str(db)) == len(schema.load_steps("sqlite"))
    assert schema.sqlite_version_of(str(db) + ".v1.bak") == 1
    conn = sqlite3.connect(db)
    conn.execute("UPDATE schema_version SET version = 42")
    conn.commit()
    conn.close()
    refused = cli(tmp_path, "file", "list")
    assert refused.returncode == 1
    assert "schema version 42, newer than this downstream-tx knows" in refused.stderr


@pytest.mark.mysql
def test_cli_on_mysql(tmp_path):
    url = os.environ.get(MYSQL_ENV)
    if not url:
        pytest.skip(f"needs {MYSQL_ENV}")
    from support import fresh_mysql_database

    fresh_mysql_database(url)
    created = cli(tmp_path, "token", "create", ADDRESS, db=url)
    assert created.returncode == 0, created.stderr
    listed = cli(tmp_path, "file", "list", "--json", db=url)
    assert listed.returncode == 0 and json.loads(listed.stdout) == []
    shown = cli(tmp_path, "config", db=url)
    assert url.split("@")[0].split(":")[-1] not in shown.stdout.replace("***", "")  # password masked


def test_cli_database_unreachable_is_failure_not_bad_input(tmp_path):
    result = cli(tmp_path, "file", "list", db="mysql://nobody:x@127.0.0.1:1/none")
    assert result.returncode == 1 and "Traceback" not in result.stderr



class FakeTty(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_only_on_a_terminal_after_a_moment():
    tty = FakeTty()
    bar = admin.ProgressBar("adding", stream=tty, delay=0)
    bar(50, 100)
    bar(100, 100)
    bar.close()
    assert "adding [" in tty.getvalue() and "100.0%" in tty.getvalue() and tty.getvalue().endswith("\n")
    quick = FakeTty()
    slow_to_show = admin.ProgressBar("adding", stream=quick, delay=3600)
    slow_to_show(100, 100)
    slow_to_show.close()
    assert quick.getvalue() == ""
    pipe = io.StringIO()
    not_a_tty = admin.ProgressBar("adding", stream=pipe, delay=0)
    not_a_tty(1, 2)
    assert pipe.getvalue() == ""
