"""Logging: text and JSON lines, one line per request without secrets, SIGHUP reopens the file."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, LogPublisher

from downstream_tx.logs import LogOutput, LogSetup, json_line, make_observer, text_line
from support import ADDRESS
from support.daemon import Daemon, daemon_env
from support.fault_load import DbView


def _event(**kw):
    event = {"log_level": LogLevel.info, "log_namespace": "test", "log_time": 1_700_000_000.25,
             "log_format": "hello {who}", "who": "world"}
    event.update(kw)
    return event


def test_text_line_is_readable():
    line = text_line(_event())
    assert line == "2023-11-14T22:13:20.250Z [test#info] hello world\n"


def test_json_line_is_one_object_per_line_with_fields():
    line = json_line(_event(count=3))
    assert line.endswith("\n") and line.count("\n") == 1
    obj = json.loads(line)
    assert obj == {"time": "2023-11-14T22:13:20.250Z", "level": "info", "namespace": "test",
                   "message": "hello world", "who": "world", "count": 3}


def test_json_line_carries_tracebacks_in_one_line():
    out = io.StringIO()
    publisher = LogPublisher(make_observer(LogOutput(stream=out), "json"))
    log = Logger(namespace="t", observer=publisher)
    try:
        raise ValueError("boom\nwith a newline")
    except ValueError:
        log.failure("it failed for {who}", who="x")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    obj = json.loads(lines[0])
    assert obj["level"] == "critical" and obj["message"] == "it failed for x"
    assert "ValueError: boom" in obj["traceback"]


def test_debug_is_filtered_and_reopen_switches_files(tmp_path):
    path = tmp_path / "node.log"
    output = LogOutput(str(path))
    log = Logger(namespace="t", observer=LogPublisher(make_observer(output, "text")))
    log.debug("hidden")
    log.info("first")
    os.rename(path, tmp_path / "node.log.1")
    log.info("second")
    output.reopen()
    log.info("third")
    output.close()
    assert "first" in (tmp_path / "node.log.1").read_text() and "second" in (tmp_path / "node.log.1").read_text()
    assert "third" in path.read_text() and "first" not in path.read_text()
    assert "hidden" not in (tmp_path / "node.log.1").read_text()


class Flushes(io.StringIO):
    """A stream that keeps what was flushed apart from what was only written."""

    def __init__(self):
        super().__init__()
        self.flushed = ""

    def flush(self) -> None:
        self.flushed = self.getvalue()


def test_a_buffered_log_writes_out_by_size_by_timer_and_at_once_for_a_warning():
    stream, clock = Flushes(), Clock()
    setup = LogSetup("text", stream=stream, buffer_bytes=200)
    log = Logger(namespace="t", observer=LogPublisher(setup.observer))
    flusher = setup.start_flushing(clock, 1.0)
    log.info("first")
    assert "first" in stream.getvalue() and stream.flushed == ""  # pending
    clock.advance(1.0)
    assert "first" in stream.flushed  # the timer wrote it out
    for n in range(10):
        log.info("line {n}", n=n)
        if len(stream.getvalue()) - len(stream.flushed) >= 200:
            break
    assert stream.flushed == stream.getvalue() and "line" in stream.flushed  # the size wrote it out
    log.info("quiet")
    log.warn("loud")
    assert "loud" in stream.flushed and "quiet" in stream.flushed  # a warning writes out at once
    flusher.stop()
    assert not clock.getDelayedCalls()


def test_an_unbuffered_log_writes_out_each_line():
    stream = Flushes()
    log = Logger(namespace="t", observer=LogPublisher(make_observer(LogOutput(stream=stream), "text")))
    log.info("one")
    assert "one" in stream.flushed


def _get(url: str, method: str = "GET", data: bytes | None = None) -> int:
    request = urllib.request.Request(url, method=method, data=data)
    try:
        with urllib.request.urlopen(request) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        e.read()
        return e.code


def _admin(workdir, *args: str) -> str:
    argv = [sys.executable, "-c", "from downstream_tx.admin import entry; entry()", *args]
    return subprocess.run(argv, cwd=workdir, env=daemon_env(), check=True, capture_output=True,
                          text=True).stdout


@pytest.mark.e2e
def test_full_run_logs_requests_as_json_lines_without_secrets(tmp_path):
    log_file = tmp_path / "logs" / "node.log"
    log_file.parent.mkdir()
    args = ["--log-format", "json", "--metrics-listen", "tcp:0:interface=127.0.0.1"]
    with Daemon(tmp_path, args, log_file=log_file) as d:
        # a token through the API when the node has the route, else through downstream-admin
        token = None
        try:
            with urllib.request.urlopen(f"{d.url}/api/downstream/new/{ADDRESS}") as r:
                token = json.loads(r.read()).get("token")
        except urllib.error.HTTPError:
            pass
        if not token:
            token = json.loads(_admin(tmp_path, "token", "create", ADDRESS, "--json"))["token"]
        assert len(token) == 32
        chunk = tmp_path / "chunk.bin"
        chunk.write_bytes(os.urandom(4096))
        file_hash = _admin(tmp_path, "file", "add", str(chunk), "--redundancy", "2", "--interval", "60").split()[-1]
        urls = [
            f"/api/downstream/chunk/{token}", f"/api/downstream/due/{token}",
            f"/api/downstream/challenge/{token}/{file_hash}/{'0' * 64}",
            f"/api/downstream/remove/{token}/{file_hash}", f"/api/downstream/v1/heartbeat/{token}",
            f"/api/downstream/v1/chunk/{token}", f"/api/downstream/v1/challenge/{token}",
            f"/?token={token}", f"/no/such/route/{token}",
        ]
        statuses = [_get(d.url + u) for u in urls]
        statuses.append(_get(f"{d.url}/api/downstream/v1/answer/{token}", "POST", b'{"proofs": []}'))
        # logrotate: move the file away, SIGHUP, and the daemon writes a new one
        os.rename(log_file, tmp_path / "logs" / "node.log.1")
        d.signal(signal.SIGHUP)
        d.wait_for_log(r"SIGHUP: log file reopened")
        assert _get(d.url + f"/api/downstream/due/{token}") in (200, 404)
        _get(d.metrics_url)
        assert d.stop() == 0
    rotated = (tmp_path / "logs" / "node.log.1").read_text()
    current = log_file.read_text()
    assert "log file reopened" in current and "listening on" in rotated
    text = rotated + current + d.output()

    secret = DbView("sqlite:///" + str(tmp_path / "downstream-data" / "downstream.db")).node_secret()
    token_hash = hashlib.sha256(bytes.fromhex(token)).hexdigest()
    forbidden_strings = (token, token.upper(), token_hash, bytes(secret).hex(),
                         hashlib.sha256(token.encode()).hexdigest())
    for forbidden in forbidden_strings:
        assert forbidden not in text

    records = [json.loads(line) for line in (rotated + current).splitlines()]  # every line is one object
    requests = [r for r in records if r["namespace"] == "downstream_tx.requests"]
    assert len(requests) >= len(urls) + 2
    for r in requests:
        assert set(r) >= {"method", "route", "status", "duration_ms"}
        assert r["route"] == "unmatched" or r["route"].startswith("/")
        if "<token>" in r["route"]:
            assert r["farmer_id"] == token_hash[:20]
    # in order: [/new], the urls, the answer POST, the /due after SIGHUP
    assert [r["status"] for r in requests[-len(statuses) - 1:-1]] == statuses
    # a pass and a fail are told apart in the request log (a 200 either way), never by the token
    answered = [r for r in requests if r["route"].startswith("/api/downstream/challenge/") and r["status"] == 200]
    assert all(r["outcome"] == "fail" and "outcome=fail" in r["message"] for r in answered)
    assert [r["outcome"] for r in requests if r["route"] == "/api/downstream/v1/answer/<token>"] == ["empty"]


@pytest.mark.e2e
def test_the_tac_logs_through_the_same_observer(tmp_path):
    with Daemon(tmp_path, tac=True, env={"DOWNSTREAM_LOG_FORMAT": "json"}) as d:
        assert _get(d.url + "/health") == 200
        d.wait_for_log(r'"route":"/health"')
        assert d.stop() == 0
    lines = [json.loads(line) for line in d.log().splitlines() if line.strip()]
    assert any(x["namespace"] == "downstream_tx.tap" and "listening on" in x["message"] for x in lines)


def test_legacy_events_show_a_namespace_never_a_dash():
    """Twisted's own legacy lines (``Site starting on …``) used to read ``[-]``."""
    legacy = {"log_namespace": "log_legacy", "log_system": "-", "log_level": LogLevel.info, "log_time": 1_700_000_000.0,
              "log_format": "{log_text}", "log_text": "DownstreamSite starting on 5000", "system": "-"}
    line = text_line(legacy)
    assert "[-]" not in line and "[twisted#info] DownstreamSite starting on 5000" in line
    assert json.loads(json_line(legacy))["namespace"] == "twisted"
    named = {**legacy, "log_system": "downstream_tx.x", "system": "downstream_tx.x"}
    assert "[downstream_tx.x#info]" in text_line(named)
    assert "[test#warn] hello world" in text_line(_event(log_level=LogLevel.warn))


def test_request_line_carries_the_outcome_of_an_answer():
    from twisted.web.test.requesthelper import DummyRequest

    from downstream_tx.http import site as site_module
    from downstream_tx.http.facts import facts_of, set_outcome
    from downstream_tx.http.routing import report_outcome
    from downstream_tx.v1.reports import AnswerReport, ProofOutcome, ProofResult

    events = []
    original = site_module.request_log
    site_module.request_log = Logger(namespace="downstream_tx.requests", observer=events.append)
    try:
        site = site_module.DownstreamSite(None)
        for outcome in ("pass", "fail", report_outcome(AnswerReport([
                ProofResult(1, ProofOutcome.OK), ProofResult(2, ProofOutcome.INVALID),
                ProofResult(3, ProofOutcome.NOT_FOUND)]))):
            request = DummyRequest([b"x"])
            request.code = 200
            facts_of(request).route = "/api/downstream/challenge/<token>/<file_hash>/<hash_response>"
            facts_of(request).farmer = "0123456789abcdef0123"
            set_outcome(request, outcome)
            site.request_finished(request, None)
    finally:
        site_module.request_log = original
    lines = [text_line(e) for e in events]
    assert "farmer=0123456789abcdef0123 outcome=pass" in lines[0]
    assert lines[1].rstrip().endswith("outcome=fail")
    assert lines[2].rstrip().endswith("outcome=pass:1,fail:1,other:1")
    assert [e["outcome"] for e in events][:2] == ["pass", "fail"]
