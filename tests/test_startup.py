"""Start-up failures: one line naming what failed and what to check, the documented exit status
(2: configuration, 1: could not start), nothing created before the failure, no stale pid file."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit, urlunsplit

import pymysql
import pytest
from twisted.internet.error import CannotListenError

from downstream_tx.config import load_config
from downstream_tx.listeners import server_endpoint, with_default_names
from downstream_tx.startup import StartupError, explain
from support import MYSQL_ENV
from support.daemon import TWISTD, daemon_env


def start(tmp_path, *args, env=None, pidfile=""):
    """Run ``twistd -n downstream`` expecting it to fail; returns (exit status, output lines)."""
    argv = TWISTD + ["-n", f"--pidfile={pidfile}", "downstream"] + list(args)
    result = subprocess.run(argv, cwd=tmp_path, env=daemon_env(env), capture_output=True, text=True, timeout=60)
    return result.returncode, [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]


def the_failure(lines: list[str]) -> str:
    """The one line saying why; no traceback anywhere."""
    assert not any("Traceback" in line for line in lines), "\n".join(lines)
    assert not any("[-]" in line for line in lines), "\n".join(lines)
    failures = [line for line in lines if "cannot start" in line or "configuration error" in line]
    assert len(failures) == 1, "\n".join(lines)
    return failures[0]


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def mysql_url_with(**changes) -> str:
    url = os.environ.get(MYSQL_ENV)
    if not url:
        pytest.skip(f"needs {MYSQL_ENV}")
    parts = urlsplit(url)
    user = changes.get("user", parts.username)
    password = changes.get("password", parts.password)
    host = f"{parts.hostname}:{changes.get('port', parts.port or 3306)}"
    path = "/" + changes.get("database", parts.path.lstrip("/"))
    return urlunsplit((parts.scheme, f"{user}:{password}@{host}", path, "", ""))


# --- the explanations, one per cause -----------------------------------------------------------

CONFIG = load_config(None, {"DOWNSTREAM_DB": "mysql://node:secret@db.example:3306/downstream"})


@pytest.mark.parametrize("error, words", [
    (pymysql.err.OperationalError(1045, "Access denied for user 'node'@'10.0.0.2' (using password: YES)"),
     ["db.example:3306", "access denied for user 'node'", "password", "percent-encoded"]),
    (pymysql.err.OperationalError(1044, "Access denied for user 'node'@'10.0.0.2' to database 'downstream'"),
     ["may not use database 'downstream'", "GRANT"]),
    (pymysql.err.OperationalError(1049, "Unknown database 'downstream'"), ["does not exist", "CREATE DATABASE"]),
    (pymysql.err.OperationalError(2003, "Can't connect to MySQL server on 'db.example' ([Errno 111] Connection "
                                        "refused)"),
     ["cannot connect to db.example:3306", "Connection refused", "is the server running"]),
])
def test_database_errors_are_explained(error, words):
    explained = explain(error, CONFIG)
    assert explained is not None and explained.exit_code == 1
    for word in words:
        assert word in str(explained)
    assert "secret" not in str(explained) and "\n" not in str(explained)


def test_the_cause_behind_database_unavailable_is_kept():
    from downstream_tx.db.database import DatabaseUnavailable

    try:
        try:
            raise pymysql.err.OperationalError(2003, "Can't connect to MySQL server on 'x' (timed out)")
        except pymysql.err.OperationalError as e:
            raise DatabaseUnavailable("schema_upgrade: database unavailable (OperationalError)") from e
    except DatabaseUnavailable as wrapped:
        explained = explain(wrapped, CONFIG)
    assert "cannot connect to db.example:3306 (timed out)" in str(explained)


def test_sqlite_listen_and_file_errors_are_explained(tmp_path):
    config = load_config(None, {"DOWNSTREAM_DATA_DIR": str(tmp_path)})
    readonly = str(explain(sqlite3.OperationalError("attempt to write a readonly database"), config))
    assert str(tmp_path / "downstream.db") in readonly and "read-only" in readonly
    in_use = str(explain(CannotListenError("127.0.0.1", 5000, OSError(errno.EADDRINUSE, "Address already in use")),
                         config))
    assert "cannot listen on 127.0.0.1:5000: Address already in use" in in_use and "ss -ltnp" in in_use
    rofs = str(explain(OSError(errno.EROFS, "Read-only file system", "/srv/chunks"), config))
    assert rofs.startswith("/srv/chunks: Read-only file system") and "read-only" in rofs
    assert explain(RuntimeError("a bug"), config) is None  # unexpected: the traceback is logged


def test_systemd_socket_without_a_name_is_accepted_and_a_missing_one_explained():
    env = {"LISTEN_FDS": "1", "LISTEN_PID": str(os.getpid())}
    assert with_default_names(env)["LISTEN_FDNAMES"] == "unknown"
    assert with_default_names({**env, "LISTEN_FDNAMES": "api"})["LISTEN_FDNAMES"] == "api"
    with pytest.raises(StartupError, match="no socket number 0 was passed"):
        server_endpoint(None, "systemd:domain=INET:index=0", {})


@pytest.mark.e2e
def test_documented_systemd_socket_activate_command_serves(tmp_path):
    """docs/operations.md: ``systemd-socket-activate -l 5000 twistd -n --pidfile= downstream --listen
    systemd:domain=INET:index=0`` (no ``--fdname``): the first connection starts the node, which
    answers it."""
    tool = shutil.which("systemd-socket-activate")
    if tool is None:
        pytest.skip("systemd-socket-activate is not installed")
    port = free_port()
    env = daemon_env()
    # the tool passes no environment but what -E names (an installed node needs none of it)
    argv = [tool, "-l", f"127.0.0.1:{port}", "-E", "PYTHONPATH=" + env["PYTHONPATH"]]
    argv += TWISTD + ["-n", "--pidfile=", "downstream", "--listen", "systemd:domain=INET:index=0"]
    log = open(tmp_path / "out.log", "wb")
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        body = None
        deadline = time.monotonic() + 30
        while body is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as r:
                    body = json.loads(r.read())
            except (ConnectionError, urllib.error.URLError):
                time.sleep(0.05)  # the tool is not listening yet: bounded polling
        assert body is not None and body["name"] == "downstream-tx", (tmp_path / "out.log").read_text()
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    assert "IndexError" not in (tmp_path / "out.log").read_text()


# --- the real daemon -------------------------------------------------------------------------------

@pytest.mark.e2e
@pytest.mark.parametrize("args, words", [
    (["--listen", "tcp:notaport"], ["listen: the port of a tcp: endpoint must be a number"]),
    (["--max-body-size", "4XB"], ["max_body_size: expected a whole number"]),
    (["--public-url", "node.example:5000"], ["public_url: must be an http:// or https:// URL"]),
    (["--public-urll", "http://x"], ["option --public-urll not recognized", "--help"]),
])
def test_bad_settings_and_options_exit_2_in_one_line(tmp_path, args, words):
    code, lines = start(tmp_path, *args)
    assert code == 2
    assert len(lines) == 1, lines  # no help text around the error
    for word in words:
        assert word in lines[0]
    assert not (tmp_path / "downstream-data").exists()


@pytest.mark.e2e
def test_port_in_use_is_one_line_and_creates_nothing_and_leaves_no_pidfile(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, lines = start(tmp_path, "--listen", f"tcp:{port}:interface=127.0.0.1", pidfile="node.pid")
    assert code == 1
    line = the_failure(lines)
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in line
    assert not (tmp_path / "downstream-data").exists(), "the database was created before the failure"
    assert not (tmp_path / "node.pid").exists(), "stale pid file"


@pytest.mark.e2e
def test_unreachable_database_port_names_host_port_and_refusal(tmp_path):
    port = free_port()
    code, lines = start(tmp_path, "--listen", "tcp:0:interface=127.0.0.1",
                        "--db", f"mysql://node:pw@127.0.0.1:{port}/downstream", "--db-retries", "0")
    assert code == 1
    line = the_failure(lines)
    assert f"cannot connect to 127.0.0.1:{port}" in line and "Connection refused" in line
    assert "schema_upgrade: database unavailable" not in line


@pytest.mark.e2e
def test_read_only_sqlite_file_names_the_path(tmp_path):
    """An existing database on a read-only mount (a private tmpfs remounted read-only, in a mount
    namespace of its own; as non-root, a read-only file in a read-only directory)."""
    data = tmp_path / "ro"
    data.mkdir()
    argv = TWISTD + ["-n", "--pidfile=", "downstream", "--listen", "tcp:0:interface=127.0.0.1",
                     "--data-dir", str(data)]
    # an existing node's data directory: its database and its chunk directory
    make_db = (f"import os, sqlite3; os.mkdir({str(data / 'chunks')!r}); "
               f"sqlite3.connect({str(data / 'downstream.db')!r}).execute('CREATE TABLE t (x)')")
    if os.geteuid() == 0:
        if not shutil.which("unshare"):
            pytest.skip("needs unshare(1) to mount a read-only file system as root")
        script = ('mount -t tmpfs none "$1" || exit 99; "$2" -c "$3" && mount -o remount,ro "$1" && shift 3 '
                  '&& exec "$@"')
        argv = ["unshare", "-m", "sh", "-c", script, "sh", str(data), TWISTD[0], make_db] + argv
    else:
        subprocess.run([TWISTD[0], "-c", make_db], check=True)
        os.chmod(data / "downstream.db", 0o444)
        os.chmod(data, 0o555)
    result = subprocess.run(argv, cwd=tmp_path, env=daemon_env(), capture_output=True, text=True, timeout=60)
    if os.geteuid() != 0:
        os.chmod(data, 0o755)
    if result.returncode == 99 or "unshare failed" in result.stderr:
        pytest.skip(f"cannot mount a read-only file system here: {result.stderr.strip()}")
    assert result.returncode == 1
    line = the_failure([x for x in (result.stdout + result.stderr).splitlines() if x.strip()])
    assert str(data / "downstream.db") in line and "read-only" in line


@pytest.mark.e2e
@pytest.mark.mysql
def test_wrong_mysql_password_1045(tmp_path):
    url = mysql_url_with(password="not-the-password")
    code, lines = start(tmp_path, "--listen", "tcp:0:interface=127.0.0.1", "--db", url)
    assert code == 1
    line = the_failure(lines)
    assert "access denied for user" in line and "password" in line and "not-the-password" not in line


@pytest.mark.e2e
@pytest.mark.mysql
def test_mysql_database_without_access_1044(tmp_path):
    url = mysql_url_with(database="downstream_no_access_here")
    code, lines = start(tmp_path, "--listen", "tcp:0:interface=127.0.0.1", "--db", url)
    assert code == 1
    line = the_failure(lines)
    assert "may not use database 'downstream_no_access_here'" in line and "GRANT" in line


@pytest.mark.e2e
def test_unusable_log_file_is_one_line(tmp_path):
    code, lines = start(tmp_path, "--log-file", str(tmp_path / "no" / "such" / "dir" / "node.log"))
    assert code == 1 and len(lines) == 1, lines
    assert "cannot start: log_file:" in lines[0] and "No such file or directory" in lines[0]


@pytest.mark.e2e
def test_unusable_chunk_directory_fails_before_a_database_is_created(tmp_path):
    (tmp_path / "a-file").write_text("not a directory")
    code, lines = start(tmp_path, "--listen", "tcp:0:interface=127.0.0.1",
                        "--chunk-dir", str(tmp_path / "a-file" / "chunks"))
    assert code == 1
    assert str(tmp_path / "a-file") in the_failure(lines)
    assert not (tmp_path / "downstream-data" / "downstream.db").exists()
