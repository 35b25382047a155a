"""One data dir for the daemon and downstream-admin: every setting in the config file the systemd unit
names (data_dir too), downstream-admin given that file opens the daemon's database, a node is never
created silently under whatever directory a command runs in, and a daemon that starts a new node
while its data dir holds another node's database says so."""

from __future__ import annotations

import json
import shlex
import subprocess
import urllib.request

import pytest

from support import ADDRESS, MYSQL_URL, fresh_mysql_database
from support.admin import ADMIN
from support.daemon import ROOT, Daemon, daemon_env

UNIT = ROOT / "contrib" / "systemd" / "downstream.service"


def admin(cwd, *argv, env=None):
    return subprocess.run(ADMIN + list(argv), cwd=cwd, env=daemon_env(env), capture_output=True, text=True,
                          timeout=60)


def test_a_node_is_created_only_where_the_operator_named_it(tmp_path):
    csv = tmp_path / "wl.csv"
    csv.write_text(f"address,balance\n{ADDRESS},1\n")
    # no --config, --db, --data-dir: not a new node under the current directory
    done = admin(tmp_path, "whitelist", "import", str(csv))
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert (f"no downstream-tx database at {tmp_path / 'downstream-data' / 'downstream.db'} (data_dir from "
            "default)") in done.stderr
    assert "only where one of these names it" in done.stderr
    assert not (tmp_path / "downstream-data").exists()
    # a config file that names no place: said so
    bare = tmp_path / "bare.toml"
    bare.write_text('listen = "tcp:5001"\n')
    done = admin(tmp_path, "--config", str(bare), "whitelist", "import", str(csv))
    assert done.returncode == 1 and f"{bare} sets neither data_dir nor db" in done.stderr
    assert not (tmp_path / "downstream-data").exists()
    # named by the file, the environment or an option: created there, and said so
    node = tmp_path / "node.toml"
    node.write_text(f'data_dir = "{tmp_path / "from-file"}"\n')
    for argv, env, where in ((["--config", str(node)], None, "from-file"),
                             ([], {"DOWNSTREAM_DATA_DIR": str(tmp_path / "from-env")}, "from-env"),
                             (["--data-dir", str(tmp_path / "from-flag")], None, "from-flag")):
        done = admin(tmp_path, *argv, "whitelist", "import", str(csv), env=env)
        assert done.returncode == 0, done.stderr
        assert f"created a new database at {tmp_path / where / 'downstream.db'}" in done.stderr
    assert not (tmp_path / "downstream-data").exists()


def unit_command(config_path: str) -> list[str]:
    """The options the systemd unit gives ``twistd … downstream`` (its config file replaced)."""
    text = UNIT.read_text().replace("\\\n", " ")
    [line] = [x for x in text.splitlines() if x.startswith("ExecStart=")]
    words = shlex.split(line.split("=", 1)[1])
    options = words[words.index("downstream") + 1:]
    assert options == ["--config", "/etc/downstream/downstream.toml"], options  # nothing but the file
    return ["--config", config_path]


@pytest.mark.e2e
def test_downstream_admin_given_the_units_config_opens_the_daemons_database(tmp_path):
    config = tmp_path / "etc" / "downstream.toml"
    config.parent.mkdir()
    config.write_text(f'data_dir = "{tmp_path / "var" / "lib" / "downstream"}"\n')
    with Daemon(tmp_path / "cwd-of-the-daemon", unit_command(str(config))) as daemon:
        with urllib.request.urlopen(f"{daemon.url}/api/downstream/new/{ADDRESS}", timeout=10) as resp:
            token = json.loads(resp.read())["token"]
        elsewhere = tmp_path / "home" / "operator"
        elsewhere.mkdir(parents=True)
        listed = admin(elsewhere, "--config", str(config), "farmer", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        assert [json.loads(x)["address"] for x in listed.stdout.splitlines()] == [ADDRESS]
        shown = admin(elsewhere, "--config", str(config), "farmer", "show", token)
        assert shown.returncode == 0 and "created a new database" not in shown.stderr
    assert not (elsewhere / "downstream-data").exists()


@pytest.mark.e2e
@pytest.mark.parametrize("engine", ["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def test_a_daemon_starting_a_new_node_names_the_other_database_in_its_data_dir(tmp_path, engine):
    data = tmp_path / "data"
    csv = tmp_path / "wl.csv"
    csv.write_text(f"address,balance\n{ADDRESS},1\n")
    assert admin(tmp_path, "--data-dir", str(data), "whitelist", "import", str(csv)).returncode == 0
    if engine == "mysql":
        fresh_mysql_database(MYSQL_URL)
        db = MYSQL_URL
    else:
        db = "sqlite:///" + str(data / "new.db")
    args = ["--data-dir", str(data), "--db", db]
    with Daemon(tmp_path / "first", args) as first:
        pass
    lines = [x for x in first.log().splitlines() if "another node's database" in x]
    assert len(lines) == 1, first.log()
    assert f"the data dir holds another node's database, {data / 'downstream.db'} (schema version" in lines[0]
    assert f"downstream-admin --db sqlite:///{data / 'downstream.db'} copy --to <this database>" in lines[0]
    assert "dtx-test" not in lines[0]  # the password is never logged
    with Daemon(tmp_path / "second", args) as second:  # not a new node any more: nothing to say
        pass
    assert "another node's database" not in second.log()
