"""The jobs lease in process (``db/lease.py``, ``jobs/leader.py``), on SQLite and MariaDB: two
node instances over one database and one ``task.Clock``; exactly one runs the periodic jobs, a
dead leader's lease is taken over within ``lease_ttl`` + one tick, a paused leader's job changes
nothing once it lost the lease, and the downtime rule covers the gap in which no instance ran the
jobs (and nothing else)."""

from __future__ import annotations

import pytest

from downstream_tx.db.lease import JOBS, LeaseLost
from downstream_tx.jobs.leader import JobsLeader, poll_interval
from downstream_tx.runtime import jobs_leader
from downstream_tx.v0.hashes import parse_response
from support import ADDRESS, add_test_file, contract_row, make_config, make_node, run, snapshot, stored_bytes, v0_answer

TTL = 3.0
TICK = 1.0
INTERVAL = 10


@pytest.fixture
def pair(tmp_path, db_url, clock):
    """Two instances (``a``, ``b``) over one database, their leaders not started."""
    config = make_config(tmp_path, db_url, tick=TICK, lease_ttl=TTL, seeded_pool="4096:2", seeded_challenges=4,
                         challenge_batch=20, challenge_low_water=5)
    nodes = [make_node(config.replace(instance_name=name), clock) for name in ("a", "b")]
    leaders = [jobs_leader(node) for node in nodes]
    yield nodes, leaders
    for leader in leaders:
        if leader.running:
            run(leader.stopService())
    for node in nodes:
        node.db.close()


def crash(leader: JobsLeader) -> None:
    """What SIGKILL leaves: no more lease checks, no more job passes, nothing released."""
    leader._loop.stop()
    for job in leader.jobs:
        job._loop.stop()


def test_poll_interval_is_a_third_of_the_ttl_at_most_one_tick():
    assert poll_interval(15, 1) == 1
    assert poll_interval(1.5, 1) == 0.5
    assert poll_interval(15, 0) == 5


def test_exactly_one_instance_runs_the_jobs(pair, clock):
    (a, b), (la, lb) = pair
    la.startService()
    lb.startService()
    assert (la.role, lb.role) == ("leader", "follower")
    assert [j.name for j in la.jobs] == ["contracts", "seeded_pool", "reputation", "uptime", "archive",
                                         "txn_outcomes", "challenge_prune"]
    assert lb.jobs == []
    for _ in range(10):
        clock.advance(TICK)
    assert (la.role, lb.role) == ("leader", "follower")
    assert la.jobs[0].runs == 11 and la.jobs[0].failures == 0
    assert run(a.stores.seeded.pool_counts()) == {4096: 2}  # refilled once, by the leader
    health = lb.describe()
    assert health["role"] == "follower" and health["lease"]["generation"] == 1
    assert health["lease"]["holder"] == la.holder and la.holder.startswith("a~")
    assert 0 <= health["lease"]["age"] <= TICK
    assert la.describe()["role"] == "leader"


def test_a_dead_leaders_jobs_move_within_ttl_and_one_tick(pair, clock):
    (a, b), (la, lb) = pair
    la.startService()
    lb.startService()
    clock.advance(TICK)
    crash(la)
    died = clock.seconds()
    while lb.role != "leader":
        clock.advance(lb.poll)
        assert clock.seconds() - died <= TTL + TICK
    assert lb.last.generation == 2 and lb.jobs[0].runs == 1  # the contract timer ran at once


def test_a_clean_stop_hands_the_jobs_over_at_the_next_check(pair, clock):
    (a, b), (la, lb) = pair
    la.startService()
    lb.startService()
    run(la.stopService())
    assert la.jobs == [] and run(a.stores.leases.state(JOBS)).expires == 0
    clock.advance(lb.poll)
    assert lb.role == "leader"


def test_each_term_makes_new_jobs_over_the_one_fenced_graph(pair, clock):
    """The jobs' services are built once, over the fenced database the leader gives each term's
    fence; a term makes only new job objects (their state: the downtime rule, the uptime summary)."""
    (a, b), (la, lb) = pair
    la.startService()
    first = {job.name: job for job in la.jobs}
    pool = first["seeded_pool"].func.__self__  # the jobs' pool service
    assert pool is not a.pool and pool.store.db is la.fenced
    assert la.fenced.fence.generation == 1
    run(la.step_down("a test"))
    assert la.fenced.fence is None
    with pytest.raises(LeaseLost):  # between terms the jobs' services change nothing
        run(pool.refill())
    clock.advance(la.poll)  # the lease is still its own: a new term
    assert la.role == "leader" and la.terms == 2
    again = {job.name: job for job in la.jobs}
    assert again["seeded_pool"].func.__self__ is pool
    assert all(again[name] is not first[name] for name in first)
    assert again["contracts"].func is not first["contracts"].func  # a new contract timer
    assert again["uptime"].func is not first["uptime"].func  # a new uptime summary
    assert la.fenced.fence.generation == 1


def test_a_paused_leader_writes_nothing_after_losing_its_lease(pair, clock, tmp_path):
    (a, b), (la, lb) = pair
    file_hash = add_test_file(a, tmp_path, redundancy=1, interval=INTERVAL)
    token = run(a.v0.create_token(ADDRESS))
    run(a.v0.get_chunk(token))
    la.startService()
    lb.startService()
    paused_jobs = list(la.jobs)
    crash(la)  # SIGSTOP: its timers do not fire while b takes over
    while lb.role != "leader":
        clock.advance(lb.poll)
    clock.advance(INTERVAL)  # b issues the next challenge
    assert contract_row(a, token, file_hash)["seq"] >= 1
    before = snapshot(a)
    # SIGCONT: the paused leader's jobs run a pass before its next lease check: fenced, nothing changes
    for job in paused_jobs:
        run(job.run_now())
        assert job.failures == 1
    assert snapshot(a) == before
    run(la.check())  # then its lease check makes it a follower
    assert la.role == "follower" and la.jobs == []


def test_the_downtime_rule_covers_only_the_gap_without_a_leader(pair, clock, tmp_path):
    (a, b), (la, lb) = pair
    file_hash = add_test_file(a, tmp_path, redundancy=1, interval=INTERVAL)
    token = run(a.v0.create_token(ADDRESS))
    assignment = run(a.v0.get_chunk(token))
    data = stored_bytes(a, file_hash)
    assert run(a.v0.answer(token, file_hash, parse_response(v0_answer(data, assignment.challenge)))) == "pass"
    la.startService()
    crash(la)  # the only instance dies; its challenge's deadline passes while no instance runs
    clock.advance(3 * INTERVAL)
    lb.startService()  # another instance starts: its first pass forgives what fell in the gap
    row = contract_row(a, token, file_hash)
    assert (row["state"], row["misses"]) == ("active", 0)
    # while b runs the jobs, an unanswered challenge is a miss again
    for _ in range(2 * INTERVAL + 1):
        clock.advance(TICK)
    assert lb.terms == 1 and contract_row(a, token, file_hash)["misses"] == 1


def test_health_and_metrics_show_the_role_and_the_lease(pair, clock):
    from downstream_tx.metrics import Metrics
    from downstream_tx.runtime import build_server
    from support import StubClient

    (a, b), (la, lb) = pair
    la.startService()
    lb.startService()
    clock.advance(0.25)
    for leader, node, role in ((la, a, "leader"), (lb, b, "follower")):
        server = build_server(node, leadership=leader.describe)
        body = StubClient(server.resource()).get("/health").json()
        assert body["role"] == role and body["instance"] == leader.holder
        assert body["lease"]["holder"] == la.holder and body["lease"]["generation"] == 1
        assert body["lease"]["age"] == 0.25 and body["lease"]["expires_in"] == TTL - 0.25
        metrics = Metrics(clock)
        metrics.bind_leader(leader, worker=1)
        text = metrics.render().decode()
        assert f'downstream_instance_info{{instance="{leader.holder}",worker="1"}} 1.0' in text
        assert f"downstream_jobs_leader {1.0 if role == 'leader' else 0.0}" in text
        assert "downstream_jobs_lease_age_seconds 0.25" in text
