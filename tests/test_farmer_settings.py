"""The farmer's command line (0.1.8's options, same meanings), its TOML config, and what it says about
a bad setting; the pieces under it: sizes, Retry-After, the backoff, the status view and log lines."""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
import time
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import task
from twisted.logger import LogLevel

from downstream_tx.farmer import logs, status
from downstream_tx.farmer.backoff import Backoff
from downstream_tx.farmer.client import MAX_RETRY_AFTER, retry_after
from downstream_tx.farmer.farm import Farm
from downstream_tx.farmer.files import SignedMessage
from downstream_tx.farmer.main import main
from downstream_tx.farmer.settings import DEFAULT_SIZE, SettingsError, load_settings, parse_size
from downstream_tx.version import full_version
from support import ADDRESS, inline_blocking, make_address
from support.daemon import ROOT, daemon_env

TOKEN = "ab" * 16
FARMER = [sys.executable, "-m", "downstream_tx.farmer"]


def test_the_018_command_line_means_what_it_meant():
    s = load_settings(["http://node:5000/", "-n", "5", "-p", "h.json", "-s", "1000", "-a", ADDRESS, "-t", TOKEN.upper(),
                       "-f", "-i", "id.json", "-d", "chunks", "--ssl-no-verify", "--log-path", "x.log", "--quiet",
                       "--print-log"])
    [node] = s.nodes
    assert (node.url, node.address, node.token, node.size, node.protocol) == \
        ("http://node:5000", ADDRESS, TOKEN, 1000, "auto")
    assert (s.number, s.history, s.identity, s.data_directory, s.log_path) == \
        (5, "h.json", "id.json", "chunks", "x.log")
    assert s.forcenew and s.ssl_no_verify and s.quiet and s.print_log
    long = load_settings(["http://node:5000", "--number", "5", "--history", "h.json", "--size", "1000", "--address",
                          ADDRESS, "--token", TOKEN, "--forcenew", "--identity", "id.json", "--data-directory",
                          "chunks"])
    assert long.nodes == s.nodes and (long.number, long.history, long.identity, long.data_directory) == \
        (5, "h.json", "id.json", "chunks")


def test_the_defaults_are_018s():
    s = load_settings(["http://node:5000"])
    assert (s.history, s.identity, s.data_directory, s.log_path) == \
        ("data/history.json", "data/identities.json", "data/chunks", "farmer.log")
    assert s.nodes[0].size == DEFAULT_SIZE == 33554432 and s.number is None and not s.forcenew


def test_several_nodes_and_what_only_one_may_have():
    s = load_settings(["http://a:5000", "https://b.example", "--protocol", "v0", "--size", "2GiB"])
    assert [n.url for n in s.nodes] == ["http://a:5000", "https://b.example"]
    assert all(n.protocol == "v0" and n.size == 2 << 30 for n in s.nodes)
    with pytest.raises(SettingsError, match="--token names the token of one node"):
        load_settings(["http://a:5000", "http://b:5000", "-t", TOKEN])
    with pytest.raises(SettingsError, match="given twice"):
        load_settings(["http://a:5000", "http://a:5000/"])


@pytest.mark.parametrize("argv, message", [
    (["ftp://a"], "expected http://host"),
    (["http://a", "-s", "0"], "positive size"),
    (["http://a", "-s", "12 parsecs"], "500MB or 2GiB"),
    (["http://a", "-n", "0"], "number: must be at least 1"),
    (["http://a", "-a", "1BadAddress"], "not a valid SJCX address"),
    (["http://a", "-t", "xyz"], "32 hexadecimal"),
    (["http://a", "--message", "m"], "message and signature go together"),
    (["http://a", "--threads", "0"], "threads: must be at least 1"),
])
def test_a_bad_setting_is_one_line_naming_it(argv, message):
    with pytest.raises(SettingsError, match=message):
        load_settings(argv)


def test_the_toml_config_and_the_command_line_over_it(tmp_path):
    config = tmp_path / "farmer.toml"
    config.write_text(f'''
address = "{ADDRESS}"
size = "64MiB"
data_directory = "/srv/chunks"
json_log = true
threads = 3

[[node]]
url = "http://a:5000"

[[node]]
url = "http://b:5000"
size = 1048576
protocol = "v1"
message = "downstream-farmer http://b:5000"
signature = "sig"
''')
    s = load_settings(["-c", str(config)])
    a, b = s.nodes
    assert (a.url, a.address, a.size, a.protocol) == ("http://a:5000", ADDRESS, 64 << 20, "auto")
    assert (b.size, b.protocol, b.signed) == (1 << 20, "v1", SignedMessage("downstream-farmer http://b:5000", "sig"))
    assert s.data_directory == "/srv/chunks" and s.json_log and s.threads == 3
    other = make_address(3)
    s = load_settings(["-c", str(config), "--threads", "1", "-a", other, "http://c:5000"])
    assert [n.url for n in s.nodes] == ["http://c:5000"] and s.nodes[0].address == other and s.threads == 1


@pytest.mark.parametrize("text, message", [
    ("colour = 1", "unknown setting 'colour'"),
    ("threads = 'two'", "threads: expected a whole number"),
    ("[[node]]\nsize = 5", "a node needs a url"),
    ("[[node]]\nurl = 'http://a'\nport = 5", "unknown setting 'port'"),
    ("node = 'http://a'", "nodes are \\[\\[node\\]\\] tables"),
    ("quiet = 'yes'", "quiet: expected true or false"),
    ("x = ", "config"),
])
def test_a_bad_config_says_what_is_wrong(tmp_path, text, message):
    config = tmp_path / "farmer.toml"
    config.write_text(text)
    with pytest.raises(SettingsError, match=message):
        load_settings(["-c", str(config)])


def test_without_a_node_the_history_files_last_node(tmp_path):
    history = tmp_path / "history.json"
    history.write_text(json.dumps({"last_node": "http://old:5000", "nodes": {}}))
    s = load_settings(["-p", str(history), "-i", str(tmp_path / "none.json"), "-d", str(tmp_path / "d")])
    farm = Farm(s, None, task.Clock(), inline_blocking)
    assert [n.url for n in farm.nodes] == ["http://old:5000"]
    empty = load_settings(["-p", str(tmp_path / "nothing.json"), "-i", str(tmp_path / "none.json")])
    with pytest.raises(SettingsError, match="give a node URL"):
        Farm(empty, None, task.Clock(), inline_blocking)


@settings(max_examples=100)
@given(st.integers(1, 10**15), st.sampled_from(["", "B", "KB", "kib", "MB", "MiB", "GB", "GiB", "TiB"]))
def test_sizes_with_units(n, unit):
    factor = {"": 1, "B": 1, "KB": 1000, "kib": 1024, "MB": 10**6, "MiB": 1 << 20, "GB": 10**9, "GiB": 1 << 30,
              "TiB": 1 << 40}[unit]
    assert parse_size(f"{n}{unit}") == parse_size(f" {n} {unit} ") == n * factor


def test_retry_after_in_seconds_or_as_a_date():
    assert retry_after(b"7", 0) == 7 and retry_after("0", 0) == 0
    assert retry_after("99999", 0) == MAX_RETRY_AFTER
    now = 1_700_000_000
    date = format_datetime(datetime.fromtimestamp(now + 30, UTC), usegmt=True)
    assert retry_after(date, now) == 30
    assert retry_after(format_datetime(datetime.fromtimestamp(now - 30, UTC), usegmt=True), now) == 0
    for garbage in (None, "", "soon", "-5", "1.5", "Mon, 99 Foo"):
        assert retry_after(garbage, now) is None


@settings(max_examples=200)
@given(st.floats(0.1, 10), st.floats(10, 600), st.integers(1, 80), st.one_of(st.none(), st.floats(0.01, 3600)),
       st.integers(0, 2**32))
def test_backoff_stays_in_its_bounds_and_never_before_retry_after(base, cap, failures, after, seed):
    b = Backoff(base, cap, random.Random(seed))
    for _ in range(failures - 1):
        b.failed()
    delay = b.failed(after)
    if after is None:
        assert min(base / 2, cap) <= delay <= cap
    else:
        assert after <= delay <= after + max(base / 2, after / 4)
    b.succeeded()
    assert b.failed() <= base  # a success starts again from the first step


def test_backoff_grows_then_is_capped():
    b = Backoff(1.0, 60.0, random.Random(1))
    early = sum(Backoff(1.0, 60.0, random.Random(n)).failed() for n in range(200)) / 200
    for _ in range(20):
        late = b.failed()
    assert early < 1.0 and 0.5 <= late <= 60.0


# --- the status view and the log lines -------------------------------------------------------------

ROWS = [status.Row("http://node.example:5000", "v1", "farming", 10, 10 << 20, 123, 1, 2, 42.5, ""),
        status.Row("http://node.example:5000", "v0", "node down", 1, 50_000, 4, 0, 0, None,
                   "retrying: connection refused")]


def test_the_status_screen_redraws_with_every_node_and_protocol():
    screen = status.render(ROWS, 3725, 127, "2026-01-31T12:00:00Z something happened")
    assert screen.startswith("\x1b[H\x1b[J")
    assert "up 1:02:05" in screen and "127 proofs passed" in screen
    lines = screen.splitlines()
    [v1] = [line for line in lines if " v1 " in line]
    assert "farming" in v1 and "10.0 MiB" in v1 and " 123 " in v1 and "42 s" in v1
    assert "retrying: connection refused" in screen and "last: 2026-01-31T12:00:00Z something happened" in screen
    assert all(len(line) <= 100 for line in lines)


def test_plain_status_lines_when_not_on_a_terminal():
    assert status.summary(ROWS[0]) == ("http://node.example:5000 v1: farming, 10 contracts, 10.0 MiB stored, 123 "
                                       "passed, 1 failed, 2 lost, next deadline in 42 s")
    clock = task.Clock()
    screen = io.StringIO()
    view = status.StatusView(clock, lambda: [], lambda: 0, screen, 60)
    view.start()
    clock.advance(1)
    clock.advance(1)
    assert screen.getvalue().count("\x1b[H\x1b[J") == 2
    view.stop()


def test_log_lines_as_text_or_json():
    event = {"log_format": "{node} v1: contract {cid} ended", "node": "http://n", "cid": 7, "protocol": "v1",
             "log_level": LogLevel.warn, "log_time": 1_700_000_000}
    assert logs.text_line(event) == "2023-11-14T22:13:20Z [warn] http://n v1: contract 7 ended\n"
    assert json.loads(logs.json_line(event)) == {"time": "2023-11-14T22:13:20Z", "level": "warn",
                                                 "message": "http://n v1: contract 7 ended", "node": "http://n",
                                                 "protocol": "v1", "cid": 7}


# --- the command -----------------------------------------------------------------------------------

def farmer(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(FARMER + list(args), cwd=cwd or ROOT, env=daemon_env(), capture_output=True, text=True,
                          timeout=60)


def test_version_help_and_a_bad_option(tmp_path):
    assert farmer("--version").stdout.strip() == f"downstream-farmer {full_version()}"
    text = " ".join(farmer("--help").stdout.split())
    for option in ("-n NUMBER, --number NUMBER", "-p HISTORY, --history HISTORY", "-s SIZE, --size SIZE",
                   "-a ADDRESS, --address ADDRESS", "-t TOKEN, --token TOKEN", "-f, --forcenew",
                   "-i IDENTITY, --identity IDENTITY", "-d DATA_DIRECTORY, --data-directory DATA_DIRECTORY",
                   "--ssl-no-verify", "--log-path LOG_PATH", "--quiet", "--print-log", "--config CONFIG",
                   "--protocol {auto,v0,v1}", "--json-log"):
        assert option in text, option
    bad = farmer("http://a:5000", "--size", "0", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr == "downstream-farmer: error: size: must be a positive size to farm\n"


def test_main_returns_2_for_a_bad_setting(capsys):
    assert main(["http://a", "-t", "nope"]) == 2
    assert capsys.readouterr().err == "downstream-farmer: error: token: expected 32 hexadecimal characters\n"


def test_every_option_and_config_key_is_in_docs_farmer_md():
    from downstream_tx.farmer.settings import NODE_KEYS, SCALARS, parser

    doc = (ROOT / "docs" / "farmer.md").read_text()
    for action in parser()._actions:
        for option in action.option_strings:
            if option not in ("-h", "--help"):
                assert f"`{option}" in doc, option
    for key in [*SCALARS, *NODE_KEYS]:
        assert f"`{key}`" in doc, key


def test_the_command_line_overrides_a_node_table_too(tmp_path):
    config = tmp_path / "farmer.toml"
    config.write_text('size = "1MiB"\n[[node]]\nurl = "http://a:5000"\nsize = "2MiB"\nprotocol = "v0"\n'
                      'message = "m"\nsignature = "s"\n')
    [node] = load_settings(["-c", str(config)]).nodes
    assert (node.size, node.protocol) == (2 << 20, "v0")  # the table over the file's top level
    [node] = load_settings(["-c", str(config), "-s", "3MiB", "--message", "n", "--signature", "t"]).nodes
    assert (node.size, node.protocol, node.signed) == (3 << 20, "v0", SignedMessage("n", "t"))


def test_on_a_terminal_the_status_view_redraws_and_sigterm_stops_it_with_0(tmp_path):
    import os
    import pty
    import select
    import signal

    main_fd, tty = pty.openpty()
    proc = subprocess.Popen(FARMER + ["http://127.0.0.1:1", "--address", ADDRESS, "--log-path", ""], cwd=tmp_path,
                            env=daemon_env(), stdin=tty, stdout=tty, stderr=subprocess.PIPE)
    os.close(tty)
    seen = b""
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (seen.count(b"\x1b[H\x1b[J") >= 2 and b"node down" in seen):
            ready, _, _ = select.select([main_fd], [], [], 0.5)
            if ready:
                seen += os.read(main_fd, 65536)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(main_fd)
    text = seen.decode(errors="replace")
    assert text.count("\x1b[H\x1b[J") >= 2 and "http://127.0.0.1:1" in text and "node down" in text
    assert "retrying: connection refused" in text and "[info]" not in text  # the view, not log lines
