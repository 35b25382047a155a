"""/metrics (own registry, own listener), the stats job's database gauges, and GET /health."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

import pytest
from treq.testing import StubTreq
from twisted.internet import defer, task

from downstream_tx.db import stats
from downstream_tx.http.ops import MetricsResource
from downstream_tx.jobs.stats import overdue_grace, stats_job
from downstream_tx.metrics import Metrics
from downstream_tx.v0.hashes import parse_response
from support import ADDRESS, make_resource, run
from support.daemon import Daemon


def _sample(metrics: Metrics, name: str, **labels) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


@pytest.fixture
def contract(node, tmp_path):
    """One stored file and one farmer holding one contract on it."""
    chunk = tmp_path / "chunk.bin"
    chunk.write_bytes(os.urandom(2048))
    file_hash = run(node.files.add(str(chunk), redundancy=2, interval=60))
    token = run(node.v0.create_token(ADDRESS))
    assignment = run(node.v0.get_chunk(token))
    return token, file_hash, assignment


def test_counts_on_an_empty_database(node, clock):
    counts = run(node.stores.stats.counts(clock.seconds(), 10.0))
    no_farmers = {"ok": 0, "suspended": 0, "offline": 0, "disqualified": 0, "contained": 0, "unvetted": 0}
    assert counts == stats.Counts(standing=no_farmers)
    assert run(node.stores.stats.ping()) == 1


def test_counts_contracts_due_overdue_and_farmers(node, clock, contract):
    _, _, assignment = contract
    counts = run(node.stores.stats.counts(clock.seconds(), 10.0))
    assert counts.contracts == {"active": 1}
    assert counts.due == {0: 1} and counts.overdue == {}
    assert counts.farmers_online == 1 and counts.farmers_active == 1
    # past the deadline and the grace time, with no timer pass: overdue, no longer due
    late = assignment.deadline + 11
    counts = run(node.stores.stats.counts(late, 10.0))
    assert counts.due == {} and counts.overdue == {0: 1}


def test_stats_job_sets_gauges_and_warns_about_overdue_work(node, clock, contract, config):
    metrics = Metrics(task.Clock())
    metrics.set_pool_targets(config.seeded_pool)
    job = stats_job(node.stores.stats, config.replace(stats_interval=15.0), clock, metrics)
    run(job.run_now())
    assert _sample(metrics, "downstream_contracts", state="active") == 1
    assert _sample(metrics, "downstream_contracts", state="failed") == 0
    assert _sample(metrics, "downstream_challenges_due", protocol="v0") == 1
    assert _sample(metrics, "downstream_challenges_overdue", protocol="v0") == 0
    assert _sample(metrics, "downstream_farmers_online") == 1
    assert _sample(metrics, "downstream_chunk_pool", size=str(1 << 20)) == 0
    assert _sample(metrics, "downstream_chunk_pool_target", size=str(1 << 20)) == 4
    assert _sample(metrics, "downstream_db_up") == 1
    clock.advance(contract[2].deadline - clock.seconds() + overdue_grace(config) + 1)
    run(job.run_now())
    assert _sample(metrics, "downstream_challenges_overdue", protocol="v0") == 1


def test_results_transactions_and_jobs_are_counted(node, clock, contract, config):
    token, file_hash, _ = contract
    metrics = Metrics(task.Clock())
    metrics.bind_db(node.db, config.db_pool_size)
    node.db.observers.append(metrics.observe_transaction)  # as the daemon opens its database
    node.results.observers.append(metrics.count_result)
    assert run(node.v0.answer(token, file_hash, parse_response("0" * 64))) == "fail"
    assert _sample(metrics, "downstream_challenge_results_total", protocol="v0", result="fail") == 1
    assert _sample(metrics, "downstream_db_transaction_duration_seconds_count", transaction="answer") == 1
    job = stats_job(node.stores.stats, config, clock, metrics, observer=metrics.observe_job)
    run(job.run_now())
    assert _sample(metrics, "downstream_timer_runs_total", job="stats") == 1
    assert _sample(metrics, "downstream_timer_failures_total", job="stats") is None
    metrics.observe_request("GET", "/health", 200, 0.01)
    metrics.observe_request("BREW", "unmatched", 405, 0.01)
    assert _sample(metrics, "downstream_http_requests_total", method="GET", route="/health", status="200") == 1
    assert _sample(metrics, "downstream_http_requests_total", method="other", route="unmatched", status="405") == 1


def test_metrics_use_their_own_registry():
    from prometheus_client import REGISTRY

    Metrics(task.Clock())
    assert not any(name.startswith("downstream_") for name in REGISTRY._names_to_collectors)


def test_metrics_resource_serves_only_metrics():
    stub = StubTreq(MetricsResource(Metrics(task.Clock())))
    response = run(stub.get("http://node/metrics"))
    assert response.code == 200
    assert response.headers.getRawHeaders("content-type")[0].startswith("text/plain")
    assert b"downstream_build_info" in run(stub.content(response))
    assert run(stub.get("http://node/other")).code == 404


class SilentDb:
    """A database that never answers."""

    last_success = None

    def run(self, desc, func, *args):
        return defer.Deferred()


def test_health_200_when_the_database_answers(node, config):
    stub = StubTreq(make_resource(node, config))
    response = run(stub.get("http://node/health"))
    assert response.code == 200
    body = json.loads(run(stub.content(response)))
    assert body["status"] == "ok" and body["database"] == "ok"


def test_health_503_json_when_the_database_does_not_answer_in_time(node, config, clock):
    stats = node.stores.stats
    stats.db, real_db = SilentDb(), stats.db
    try:
        stub = StubTreq(make_resource(node, config))
        responses: list = []
        stub.get("http://node/health").addBoth(responses.append)
        clock.advance(config.health_timeout - 0.1)
        stub.flush()
        assert responses == []
        clock.advance(0.2)
        stub.flush()
        response = responses[0]
        assert response.code == 503
        body = json.loads(run(stub.content(response)))
        assert body["status"] == "unavailable" and body["database"] == "timeout"
    finally:
        stats.db = real_db


@pytest.mark.e2e
def test_metrics_listener_of_the_real_daemon(tmp_path):
    args = ["--metrics-listen", "tcp:0:interface=127.0.0.1", "--stats-interval", "0.2"]
    with Daemon(tmp_path, args) as d:
        assert d.metrics_port and d.metrics_port != d.port
        for path in ("/", "/health", "/health", "/api/downstream/due/" + "ab" * 16):
            try:
                urllib.request.urlopen(d.url + path).read()
            except urllib.error.HTTPError:
                pass
        with pytest.raises(urllib.error.HTTPError):  # not on the API listener
            urllib.request.urlopen(d.url + "/metrics")
        d.wait_for_log(r"listening on")
        text = ""
        for _ in range(100):  # until the stats job has run (bounded)
            text = urllib.request.urlopen(d.metrics_url).read().decode()
            if "downstream_db_up 1.0" in text:
                break
        assert 'downstream_http_requests_total{method="GET",route="/health",status="200"} 2.0' in text
        assert 'downstream_http_requests_total{method="GET",route="unmatched",status="404"} 1.0' in text
        assert ('downstream_http_requests_total{method="GET",route="/api/downstream/due/<token>",status="404"} 1.0'
                in text)
        assert 'downstream_contracts{state="active"} 0.0' in text
        assert "downstream_db_up 1.0" in text
        assert 'downstream_timer_runs_total{job="stats"}' in text
        assert "downstream_db_pool_size 1.0" in text  # SQLite: one connection
        assert "downstream_db_transaction_duration_seconds_count{" in text  # its transactions observed
        assert "ab" * 16 not in text
        (tmp_path / "metrics-sample.txt").write_text(text)
        assert d.stop() == 0
