"""``--workers N`` (``workers.py``): what a worker is told, which settings are refused, the child's
command line, the notifications a worker sends its parent. End to end: tests/test_scale_out.py."""

from __future__ import annotations

import os
import socket

import pytest

from downstream_tx import tap
from downstream_tx.systemd import PipeNotifier
from downstream_tx.workers import refusal, shifted_endpoint, worker_config, worker_from_environ
from support import make_config

MYSQL = "mysql://u:p@127.0.0.1:3306/db"


def test_a_worker_knows_itself_from_its_environment():
    assert worker_from_environ({}) is None
    w = worker_from_environ({"DTX_WORKER_INDEX": "1", "DTX_WORKER_COUNT": "3", "DTX_WORKER_FAMILY": "AF_INET6"})
    assert (w.index, w.count, w.family, w.listen_fd, w.status_fd) == (1, 3, socket.AF_INET6, 3, 4)


def test_each_worker_has_its_own_name_and_metrics_port(tmp_path):
    config = make_config(tmp_path, MYSQL, instance_name="node-a", metrics_listen="tcp:9100:interface=127.0.0.1")
    w = worker_from_environ({"DTX_WORKER_INDEX": "2"})
    mine = worker_config(config, w)
    assert mine.instance_name == "node-a/2" and mine.metrics_listen == "tcp:9102:interface=127.0.0.1"
    assert worker_config(make_config(tmp_path, MYSQL), w).instance_name is None  # host:pid is its own
    assert shifted_endpoint("tcp:port=9100:interface=\\:\\:1", 1) == "tcp:port=9101:interface=\\:\\:1"
    assert shifted_endpoint("tcp:0:interface=127.0.0.1", 3) == "tcp:0:interface=127.0.0.1"


@pytest.mark.parametrize("overrides, words", [
    ({"db": None}, "needs MySQL/MariaDB"),
    ({"listen": "ssl:5000:privateKey=k.pem"}, "terminate TLS in front"),
    ({"metrics_listen": "unix:/tmp/m.sock"}, "needs a tcp: metrics_listen"),
])
def test_refused_settings_say_why_in_one_line(tmp_path, overrides, words):
    config = make_config(tmp_path, MYSQL, workers=2, **overrides)
    reason = refusal(config)
    assert words in reason and "\n" not in reason
    assert refusal(make_config(tmp_path, MYSQL, workers=2)) is None
    assert refusal(make_config(tmp_path, None, workers=1)) is None


def test_sqlite_with_workers_stops_with_one_line_and_status_2(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    options = tap.Options()
    options.parseOptions(["--workers", "2", "--data-dir", str(tmp_path / "data")])
    with pytest.raises(SystemExit) as stop:
        tap.makeService(options)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "workers > 1 needs MySQL/MariaDB" in err
    assert not (tmp_path / "data").exists()  # nothing created


def test_the_child_command_line_repeats_the_options_given(tmp_path):
    options = tap.Options()
    options.parseOptions(["--config", "node.toml", "--workers", "2", "--tick", "0.5"])
    assert tap.child_args(options) == ["-n", "--pidfile=", "downstream", "--config", "node.toml",
                                       "--tick", "0.5", "--workers", "2"]


def test_a_worker_notifies_its_parent_through_a_pipe():
    read, write = os.pipe()
    try:
        notifier = PipeNotifier(write)
        assert notifier.enabled
        assert notifier.ready() and notifier.watchdog() and notifier.stopping()
        assert os.read(read, 100) == b"READY=1\nWATCHDOG=1\nSTOPPING=1\n"
    finally:
        os.close(read)
        os.close(write)


def test_the_parents_listener_is_named_for_what_it_is():
    """Twisted logs "<factory's log prefix> starting on <port>": not an internal class name."""
    from downstream_tx.workers import _NoAccept

    assert _NoAccept().logPrefix() == "downstream-tx listener shared by the workers"
