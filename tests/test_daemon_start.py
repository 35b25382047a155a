"""The twistd plugin and the .tac start the real daemon; SIGTERM stops it with status 0."""

import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from support import MYSQL_ENV, fresh_mysql_database
from support.daemon import ROOT, TWISTD, Daemon, daemon_env

pytestmark = pytest.mark.e2e


def get_json(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json"
        return json.loads(response.read())


def check_root_and_stop(daemon):
    body = get_json(daemon.url + "/")
    assert body["name"] == "downstream-tx" and body["version"] and "v0" in body["protocols"]
    started = time.monotonic()
    assert daemon.stop(timeout=5) == 0
    assert time.monotonic() - started < 5


def test_plugin_defaults_create_database_under_cwd(tmp_path):
    daemon = Daemon(tmp_path).start()
    assert (tmp_path / "downstream-data" / "downstream.db").exists()
    assert (tmp_path / "downstream-data" / "chunks").is_dir()
    check_root_and_stop(daemon)


def test_default_listener_is_loopback_port_5000():
    from downstream_tx.config import load_config

    assert load_config(None, {}).listen == "tcp:5000:interface=127.0.0.1"


def test_tac_starts_the_same_node(tmp_path):
    daemon = Daemon(tmp_path, tac=True, env={"DOWNSTREAM_DATA_DIR": str(tmp_path / "d")}).start()
    assert (tmp_path / "d" / "downstream.db").exists()
    check_root_and_stop(daemon)


def test_paths_configurable(tmp_path):
    args = ["--data-dir", str(tmp_path / "dd"), "--db", "sqlite:///" + str(tmp_path / "elsewhere.db"),
            "--chunk-dir", str(tmp_path / "cc")]
    daemon = Daemon(tmp_path / "run", args).start()
    assert (tmp_path / "elsewhere.db").exists() and (tmp_path / "cc").is_dir()
    check_root_and_stop(daemon)


@pytest.mark.mysql
def test_plugin_on_mysql(tmp_path):
    url = os.environ.get(MYSQL_ENV)
    if not url:
        pytest.skip(f"needs {MYSQL_ENV}")
    fresh_mysql_database(url)
    daemon = Daemon(tmp_path, ["--db", url]).start()
    assert "mysql://" in daemon.log() and url.split("@")[0].split(":")[-1] not in daemon.log().replace("***", "")
    check_root_and_stop(daemon)


@pytest.mark.parametrize("args, env, message", [
    (["--tick", "never"], {}, "tick:"),
    ([], {"DOWNSTREAM_DB": "oracle://x"}, "db: must start with"),
])
def test_invalid_setting_stops_with_one_line(tmp_path, args, env, message):
    result = subprocess.run(TWISTD + ["-n", "--pidfile=", "downstream"] + args, cwd=tmp_path,
                            env=daemon_env(env), capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in lines[0]


def test_unusable_listener_stops_non_zero(tmp_path):
    with Daemon(tmp_path / "a") as first:
        taken = f"tcp:{first.port}:interface=127.0.0.1"
        result = subprocess.run(TWISTD + ["-n", "--pidfile=", "downstream", "--listen", taken], cwd=tmp_path,
                                env=daemon_env(), capture_output=True, text=True, timeout=30)
        assert result.returncode != 0
        assert "cannot start" in result.stdout + result.stderr


def test_installed_plugin_listed_by_twistd(tmp_path):
    """With the package installed (the README's commands), twistd lists the plugin from
    site-packages; from a bare checkout it is found through the project root."""
    env = daemon_env()
    installed = subprocess.run([sys.executable, "-c", "import downstream_tx, sys; print(downstream_tx.__file__)"],
                               cwd=tmp_path, env={k: v for k, v in env.items() if k != "PYTHONPATH"},
                               capture_output=True, text=True)
    if installed.returncode != 0:
        env["PYTHONPATH"] = str(ROOT)
    else:
        env.pop("PYTHONPATH", None)
    result = subprocess.run(TWISTD + ["--help"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "downstream" in result.stdout
