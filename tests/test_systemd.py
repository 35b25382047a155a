"""systemd integration: sd_notify messages, the watchdog, socket activation."""

from __future__ import annotations

import json
import re
import signal
import socket
import time
import urllib.request

import pytest
from twisted.internet import defer, task

from downstream_tx.jobs.watchdog import Watchdog
from downstream_tx.systemd import Notifier, watchdog_interval
from support.daemon import Daemon


class NotifySocket:
    """A unix datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path: str):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.1)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except (TimeoutError, BlockingIOError):
                return self.messages

    def wait_for(self, predicate, timeout: float = 15.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.drain()):
                return self.messages
        raise AssertionError(f"notify messages never matched; got {self.messages}")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify(tmp_path):
    s = NotifySocket(str(tmp_path / "notify.sock"))
    yield s
    s.close()


# --- units ---------------------------------------------------------------------------------------


def test_notifier_sends_datagrams_to_a_path(notify):
    n = Notifier({"NOTIFY_SOCKET": notify.path})
    assert n.enabled
    assert n.ready() and n.watchdog() and n.stopping() and n.reloading()
    messages = notify.drain()
    assert messages[:3] == ["READY=1", "WATCHDOG=1", "STOPPING=1"]
    assert re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=\d+", messages[3])


def test_notifier_supports_abstract_sockets():
    name = f"dtx-test-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    try:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert sock.recv(100) == b"READY=1"
    finally:
        sock.close()


def test_notifier_without_socket_is_a_no_op(tmp_path):
    assert not Notifier({}).enabled
    assert Notifier({}).ready() is False
    # a socket path nobody listens on: a warning, no exception
    assert Notifier({"NOTIFY_SOCKET": str(tmp_path / "missing")}).ready() is False


def test_watchdog_interval_is_half_of_watchdog_usec_for_our_pid():
    assert watchdog_interval({"WATCHDOG_USEC": "4000000"}, pid=7) == 2.0
    assert watchdog_interval({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "7"}, pid=7) == 2.0
    assert watchdog_interval({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "8"}, pid=7) is None
    assert watchdog_interval({}, pid=7) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}, pid=7) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}, pid=7) is None


class RecordingNotifier:
    def __init__(self):
        self.pings = 0

    def watchdog(self):
        self.pings += 1
        return True


class SwitchableDb:
    """A stats store whose database's answers can be stopped: pending pings then never complete."""

    last_success = None

    def __init__(self):
        self.up = True
        self.pending: list[defer.Deferred] = []
        self.db = self

    def ping(self):
        if self.up:
            return defer.succeed(1)
        d: defer.Deferred = defer.Deferred()
        self.pending.append(d)
        return d


def test_watchdog_stops_pinging_when_the_database_is_gone_too_long():
    clock, notifier, db = task.Clock(), RecordingNotifier(), SwitchableDb()
    dog = Watchdog(notifier, db, clock, interval=1.0, unhealthy_after=5.0, ping_timeout=1.0)
    dog.startService()
    clock.pump([1.0] * 3)
    assert notifier.pings == 4  # at start and after each second
    db.up = False
    clock.pump([1.0] * 5)  # the database last answered at t=3: t=4..8 are within 5 s
    assert notifier.pings == 9
    clock.pump([1.0] * 5)  # t=9..13: more than 5 s without an answer, no pings
    assert notifier.pings == 9
    assert len(db.pending) >= 2  # it kept asking
    db.up = True
    clock.pump([1.0] * 2)  # t=14: a ping answers again, pings resume
    assert notifier.pings == 11
    dog.stopService()


# --- the real daemon -----------------------------------------------------------------------------


@pytest.mark.e2e
def test_notify_messages_around_start_watchdog_reload_and_stop(tmp_path, notify):
    env = {"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "300000"}
    with Daemon(tmp_path, env=env, watchdog_self=True) as d:
        notify.wait_for(lambda m: m.count("WATCHDOG=1") >= 3)
        assert notify.messages[0] == "READY=1", notify.messages
        # READY only once the port answers
        with urllib.request.urlopen(d.url + "/health") as r:
            assert r.status == 200
        d.signal(signal.SIGHUP)
        notify.wait_for(lambda m: sum(1 for x in m if x == "READY=1") >= 2)
        d.wait_for_log(r"SIGHUP: log file reopened")
        assert d.stop() == 0
    messages = notify.drain()
    significant = [m for m in messages if m != "WATCHDOG=1"]
    assert len(significant) == 4, messages
    assert significant[0] == "READY=1"
    assert re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=\d+", significant[1])
    assert significant[2:] == ["READY=1", "STOPPING=1"]
    assert messages[-1] == "STOPPING=1"
    # the watchdog pings come between READY and STOPPING, every 0.15 s
    assert messages.index("WATCHDOG=1") > 0


@pytest.mark.e2e
def test_no_watchdog_pings_for_another_process(tmp_path, notify):
    env = {"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}
    with Daemon(tmp_path, env=env) as d:
        notify.wait_for(lambda m: "READY=1" in m)
        with urllib.request.urlopen(d.url + "/health") as r:  # the daemon has run for a while
            assert r.status == 200
        assert d.stop() == 0
    assert notify.drain() == ["READY=1", "STOPPING=1"]


@pytest.mark.e2e
def test_socket_activation_with_an_inherited_listening_socket(tmp_path, notify):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    try:
        with Daemon(tmp_path, listen="systemd:domain=INET:index=0", listen_socket=listener,
                    env={"NOTIFY_SOCKET": notify.path}) as d:
            assert d.port == port
            notify.wait_for(lambda m: "READY=1" in m)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/") as r:
                assert json.loads(r.read())["name"] == "downstream-tx"
            assert d.stop() == 0
    finally:
        listener.close()
