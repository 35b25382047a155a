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
from support.admin import cli, dispatch

# --- in-process, on both engines ---------------------------------------------------------------

def test_commands_in_process(node, tmp_path):
    chunk = tmp_path / "c.bin"
    chunk.write_bytes(os.urandom(4096))
    created = json.loads(dispatch(node, "token", "create", ADDRESS, "--json"))
    token = created["token"]
    farmer_id = __import__("hashlib").sha256(bytes.fromhex(token)).hexdigest()[:20]
    assert len(token) == 32 and created["farmer_id"] == farmer_id
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
    assert json.loads(dispatch(node, "farmer", "show", farmer_id, "--json"))["address"] == ADDRESS
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


@pytest.mark.parametrize("balance", ["¹", "٣", "１２"])
def test_a_balance_of_non_ascii_digits_is_bad_input(tmp_path, balance):
    path = tmp_path / "w.csv"
    path.write_text(f"address,balance\n19qVgG8C6eXwKMMyvVegsi3xCsKyk3Z3jV,{balance}\n", encoding="utf-8")
    with pytest.raises(admin.BadInput, match="whole number"):
        admin.parse_whitelist(str(path))


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
    added = cli(tmp_path, "file", "add", str(chunk), "--redundancy", "1", "--interval", "60")
    assert added.returncode == 0, added.stderr
    assert (tmp_path / "data" / "downstream.db").exists()
    assert f"created a new database at {tmp_path / 'data' / 'downstream.db'}" in added.stderr
    created = cli(tmp_path, "token", "create", ADDRESS)
    assert created.returncode == 0, created.stderr
    token_line, id_line = created.stdout.splitlines()
    assert token_line.split()[0] == "token" and len(token_line.split()[1]) == 32
    assert id_line.split() == ["farmer_id", __import__("hashlib").sha256(bytes.fromhex(token_line.split()[1]))
                               .hexdigest()[:20]]
    bad = cli(tmp_path, "token", "create", "not-an-address")
    assert bad.returncode == 2 and "invalid address" in bad.stderr and "Traceback" not in bad.stderr
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
    refused = cli(tmp_path, "token", "create", ADDRESS, db=url)
    assert refused.returncode == 1 and "no downstream-tx database at mysql://" in refused.stderr
    assert "Traceback" not in refused.stderr and url.split("@")[0].split(":")[-1] not in refused.stderr
    csv = tmp_path / "wl.csv"
    csv.write_text(ADDRESS + ",1\n")
    assert cli(tmp_path, "whitelist", "import", str(csv), db=url).returncode == 0  # sets a node up
    created = cli(tmp_path, "token", "create", ADDRESS, db=url)
    assert created.returncode == 0, created.stderr
    listed = cli(tmp_path, "file", "list", "--json", db=url)
    assert listed.returncode == 0 and json.loads(listed.stdout) == []
    # the password kept out of the URL and the command line: db_password_file
    parts = __import__("urllib.parse", fromlist=["urlsplit"]).urlsplit(url)
    (tmp_path / "db-password").write_text(__import__("urllib.parse", fromlist=["unquote"]).unquote(parts.password)
                                          + "\n")
    no_password = url.replace(f":{parts.password}@", "@", 1)
    listed = cli(tmp_path, "file", "list", "--json", db=no_password,
                 env={"DOWNSTREAM_DB_PASSWORD_FILE": str(tmp_path / "db-password")})
    assert listed.returncode == 0 and json.loads(listed.stdout) == [], listed.stderr
    shown = cli(tmp_path, "config", db=url)
    assert url.split("@")[0].split(":")[-1] not in shown.stdout.replace("***", "")  # password masked


def test_cli_database_unreachable_is_failure_not_bad_input(tmp_path):
    result = cli(tmp_path, "file", "list", db="mysql://nobody:x@127.0.0.1:1/none")
    assert result.returncode == 1 and "Traceback" not in result.stderr



class FakeTty(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_only_on_a_terminal():
    tty = FakeTty()
    bar = admin.ProgressBar("adding", stream=tty, delay=0)
    bar(50, 100)
    bar(100, 100)
    bar.close()
    assert "adding" in tty.getvalue() and "100%" in tty.getvalue()
    pipe = io.StringIO()
    not_a_tty = admin.ProgressBar("adding", stream=pipe, delay=0)
    not_a_tty(1, 2)
    not_a_tty.close()
    assert pipe.getvalue() == ""


def test_progress_of_challenges_generate_on_a_terminal(node, tmp_path, monkeypatch):
    chunk = tmp_path / "c.bin"
    chunk.write_bytes(os.urandom(300_000))
    file_hash = dispatch(node, "file", "add", str(chunk), "--redundancy", "1", "--interval", "30").strip()
    tty = FakeTty()
    monkeypatch.setattr(admin.sys, "stderr", tty)
    monkeypatch.setattr(admin.ProgressBar.__init__, "__defaults__", (None, 0.0))  # show at once
    batch = json.loads(dispatch(node, "challenges", "generate", file_hash, "--count", "5"))
    assert batch["count"] == 5
    assert "hashing" in tty.getvalue() and "100%" in tty.getvalue()


# --- the operator's first hour: no silent new database, farmers, times, versions ---------------------

@pytest.mark.parametrize("argv", [["file", "list"], ["farmer", "list"], ["token", "create", ADDRESS],
                                  ["challenges", "update"], ["farmer", "show", "0" * 20]])
def test_commands_refuse_a_database_that_does_not_exist(tmp_path, argv):
    done = cli(tmp_path, *argv)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert f"no downstream-tx database at {tmp_path / 'data' / 'downstream.db'} (data_dir from flag --data-dir)" \
        in done.stderr
    assert not (tmp_path / "data").exists() and done.stdout == ""


def test_farmer_list_show_and_times(node, tmp_path, clock):
    assert dispatch(node, "farmer", "list").splitlines()[0].split()[:3] == ["farmer_id", "address", "protocol"]
    first = json.loads(dispatch(node, "token", "create", ADDRESS, "--json"))
    second = json.loads(dispatch(node, "token", "create", ADDRESS, "--json"))
    chunk = tmp_path / "c.bin"
    chunk.write_bytes(os.urandom(4096))
    dispatch(node, "file", "add", str(chunk), "--redundancy", "1", "--interval", "30")
    run(node.v0.get_chunk(first["token"]))
    table = dispatch(node, "farmer", "list").splitlines()
    assert len(table) == 3
    row = table[1].split()
    assert row[:4] == [first["farmer_id"], ADDRESS, "v0", "1"]
    assert row[-4] == "2023-11-14T22:13:20Z" and row[-3] == "yes"  # ISO 8601 UTC, online
    assert row[-2:] == ["1.0000", "vetting"]  # audit score, standing (not vetted yet)
    assert table[2].split()[2:4] == ["-", "0"] and table[2].split()[-3] == "no"
    lines = [json.loads(line) for line in dispatch(node, "farmer", "list", "--json").splitlines()]
    assert [x["farmer_id"] for x in lines] == [first["farmer_id"], second["farmer_id"]]
    assert lines[0]["last_seen"] == 1_700_000_000 and lines[0]["contracts"] == 1  # raw numbers in --json
    assert len(dispatch(node, "farmer", "list", "--json", "--limit", "1").splitlines()) == 1
    by_id = dispatch(node, "farmer", "show", first["farmer_id"])
    assert by_id == dispatch(node, "farmer", "show", first["token"])  # a token works as well as an id
    assert "created       2023-11-14T22:13:20Z" in by_id and "contracts     1 active, 0 ended, 0 failed" in by_id
    assert first["token"] not in by_id
    by_address = json.loads(dispatch(node, "farmer", "show", ADDRESS, "--json"))
    assert [x["farmer_id"] for x in by_address] == [first["farmer_id"], second["farmer_id"]]
    assert by_address[0]["created"] == 1_700_000_000 and by_address[0]["online"] is True


def test_farmer_list_pages_through_many(node, monkeypatch):
    made = [json.loads(dispatch(node, "token", "create", ADDRESS, "--json"))["farmer_id"] for _ in range(7)]
    calls = []
    real = node.farmers.page

    async def recorded(after, limit):
        calls.append((after, limit))
        return await real(after, limit)

    monkeypatch.setattr(node.farmers, "page", recorded)
    monkeypatch.setattr(admin, "FARMER_PAGE", 3)
    lines = dispatch(node, "farmer", "list", "--json").splitlines()
    assert [json.loads(x)["farmer_id"] for x in lines] == made
    assert len(calls) == 3 and all(limit == 3 for _, limit in calls)
    assert len(dispatch(node, "farmer", "list", "--json", "--limit", "5").splitlines()) == 5


def test_farmer_show_refuses_what_is_no_farmer(tmp_path):
    done = cli(tmp_path, "farmer", "show", "not-a-farmer")
    assert done.returncode == 2 and "farmer id (20 hex characters), a token (32) or an SJCX address" in done.stderr


def test_version_and_config_sources(tmp_path):
    out = io.StringIO()
    with pytest.raises(SystemExit) as e:
        admin.build_parser().parse_args(["--version"])
    assert e.value.code == 0
    toml = tmp_path / "node.toml"
    toml.write_text('listen = "tcp:6000"\n')
    assert admin.main(["--config", str(toml), "--data-dir", "/srv/dtx", "config"],
                      environ={"DOWNSTREAM_TICK": "2"}, out=out) == 0
    text = out.getvalue()
    assert text.startswith("# settings as this downstream-admin resolves them")
    rows = {line.split(" = ")[0]: line for line in text.splitlines()[1:]}
    assert rows["listen"].endswith(f"# file {toml}") and "tcp:6000" in rows["listen"]
    assert rows["tick"].endswith("# env DOWNSTREAM_TICK")
    assert rows["data_dir"].endswith("# flag --data-dir")
    assert "chunk_dir = /srv/dtx/chunks" in rows["chunk_dir"] and rows["chunk_dir"].endswith("(<data_dir>/chunks)")
    assert "public_url = http://127.0.0.1:6000" in rows["public_url"]
    out = io.StringIO()
    assert admin.main(["config", "--json"], environ={}, out=out) == 0
    assert json.loads(out.getvalue())["max_failures"] == {"value": "3", "source": "default"}


def test_farmer_show_list_and_reinstate_the_reputation(node, tmp_path, clock):
    """The standing of a farmer's address in show (people and --json) and list, and reinstate by
    address, farmer id or token."""
    from downstream_tx.db import reputation
    from downstream_tx.domain.scores import Tally

    first = json.loads(dispatch(node, "token", "create", ADDRESS, "--json"))
    shown = json.loads(dispatch(node, "farmer", "show", first["farmer_id"], "--json"))
    assert shown["reputation"] == {"audit_score": 1.0, "online_score": 1.0, "unknown_score": 1.0,
                                   "reputation": "ok", "vetted": False, "contained": 0,
                                   "audits": {"passes": 0, "fails": 0, "misses": 0, "retries": 0, "errors": 0},
                                   "status_since": None, "status_reason": None}
    text = dispatch(node, "farmer", "show", first["token"])
    # a farmer in good standing reads as one: its score stands at or above the threshold
    assert "standing      ok, not vetted yet (0 of 100 passes)\n" in text
    assert "audit_score   1.000000 (at or above the dq_threshold, 0.96)\n" in text
    assert "unknown_score 1.000000 (at or above the suspension_threshold, 0.6)\n" in text
    rules = node.stores.reputation.rules
    run(node.db.run("results", reputation.record_txn, rules, clock.seconds(),
                    {ADDRESS: Tally(passes=1, fails=41)}))  # 41 fails: below 0.96
    text = dispatch(node, "farmer", "show", first["token"])
    assert "standing      disqualified since 2023-11-14T22:13:20Z: audit score below 0.96\n" in text
    assert "audit_score   0.959809 (below the dq_threshold, 0.96)\n" in text
    assert "1 passes, 41 fails, 0 misses, 0 asked again in containment, 0 errors" in text
    [line] = dispatch(node, "farmer", "list").splitlines()[1:]
    assert line.split()[-2:] == ["0.9598", "disqualified"]
    listed = json.loads(dispatch(node, "farmer", "list", "--json"))
    assert listed["reputation"]["reputation"] == "disqualified"
    done = dispatch(node, "farmer", "reinstate", first["farmer_id"])
    assert done == f"farmer {ADDRESS} reinstated (was disqualified)\n"
    assert json.loads(dispatch(node, "farmer", "show", ADDRESS, "--json"))[0]["reputation"]["audit_score"] == 1.0


def test_farmer_reinstate_cli(tmp_path):
    assert cli(tmp_path, "whitelist", "import", str(_csv(tmp_path))).returncode == 0
    created = cli(tmp_path, "token", "create", ADDRESS)
    assert created.returncode == 0, created.stderr
    # a farmer in good standing: refused, one line, exit 1, its scores untouched
    done = cli(tmp_path, "farmer", "reinstate", ADDRESS)
    assert done.returncode == 1 and done.stdout == "" and done.stderr.count("\n") == 1
    assert f"farmer {ADDRESS} is not disqualified or suspended (its status is ok): nothing to reinstate" in done.stderr
    unknown = cli(tmp_path, "farmer", "reinstate", "0" * 20)
    assert unknown.returncode == 2 and "unknown farmer id" in unknown.stderr
    assert cli(tmp_path, "farmer", "reinstate", "nonsense").returncode == 2


def _csv(tmp_path):
    path = tmp_path / "wl.csv"
    path.write_text(f"address,balance\n{ADDRESS},1\n")
    return path


def test_farmer_show_reports_the_nodes_own_vetted_verdict(nodes, tmp_path, clock):
    """``vetted`` is what the node decided with its settings, not what this command's settings
    would say (here the node vets after one pass, the command's own setting is the default 100)."""
    from downstream_tx.v0.hashes import parse_response
    from support import add_test_file, stored_bytes, v0_answer

    node = nodes(vetting_audits=1)
    h = add_test_file(node, tmp_path)
    add_test_file(node, tmp_path)
    token = run(node.v0.create_token(ADDRESS))
    assert run(node.v0.get_chunk(token)).file_hash == h
    [due] = run(node.v0.due(token))[1]
    assert run(node.v0.answer(token, h, parse_response(v0_answer(stored_bytes(node, h), due["challenge"].hex())))) \
        == "pass"
    run(node.v0.get_chunk(token))  # the node judges the farmer as it asks for work: vetted
    command = nodes()  # the command's own settings: vetting_audits 100
    assert json.loads(dispatch(command, "farmer", "show", token, "--json"))["reputation"]["vetted"] is True
    assert "vetted        yes (the node's verdict; 1 passes)\n" in dispatch(command, "farmer", "show", token)
