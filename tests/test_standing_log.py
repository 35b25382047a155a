"""Farmer standing as an operator reads the log: each change of a farmer's standing is one clear line,
written once its transaction commits (``Txn.note``, ``core/reputation.announce``) — contained, out
of containment (pass, fail, the miss counted), suspended, no longer suspended, disqualified — and the
contract timer's summary line counts the challenges asked again in containment."""

from __future__ import annotations

import orjson
import pytest
from twisted.logger import formatEvent, globalLogPublisher

from downstream_tx.db.reputation import record_txn
from downstream_tx.domain.scores import Tally
from downstream_tx.runtime import contract_timer
from downstream_tx.v0.hashes import parse_response
from support import ADDRESS, add_test_file, report_of, run, stored_bytes, v0_answer
from support.v1 import prove

INTERVAL = 60


@pytest.fixture
def lines():
    """The log lines written while the test runs."""
    seen: list[str] = []

    def observe(event):
        text = formatEvent(event)
        if text:
            seen.append(text)

    globalLogPublisher.addObserver(observe)
    yield seen
    globalLogPublisher.removeObserver(observe)


def about(lines: list[str], farmer: str) -> list[str]:
    return [line for line in lines if f"farmer {farmer}" in line]


def test_v0_containment_in_the_log_and_the_timer_summary(nodes, clock, tmp_path, lines):
    node = nodes(containment_retries=2)
    h = add_test_file(node, tmp_path, interval=INTERVAL)
    token = run(node.v0.create_token(ADDRESS))
    contract = run(node.v0.get_chunk(token)).contract_id
    timer = contract_timer(node)
    run(timer())
    clock.advance(INTERVAL)
    summary = run(timer())
    assert (summary.contained, summary.missed) == (1, 0)
    assert "1 asked again in containment" in summary.describe()  # the summary line says it
    [line] = about(lines, ADDRESS)
    assert line == (f"farmer {ADDRESS} is contained: contract {contract} missed the challenge's deadline; the same "
                    "challenge is asked again, up to 2 times, before the miss counts, and the farmer gets no new "
                    "contracts meanwhile")
    clock.advance(INTERVAL)
    assert run(timer()).contained == 1
    assert len(about(lines, ADDRESS)) == 1  # asked again, still contained: not a change
    _, due = run(node.v0.due(token))
    right = parse_response(v0_answer(stored_bytes(node, h), due[0]["challenge"]))
    assert run(node.v0.answer(token, h, right)) == "pass"
    assert about(lines, ADDRESS)[1] == (f"farmer {ADDRESS}: contract {contract} (v0) answered the challenge asked "
                                        "again: pass; out of containment")


def test_v0_containment_used_up_counts_the_miss_in_the_log(nodes, clock, tmp_path, lines):
    node = nodes(containment_retries=1, max_failures=5)
    add_test_file(node, tmp_path, interval=INTERVAL)
    token = run(node.v0.create_token(ADDRESS))
    contract = run(node.v0.get_chunk(token)).contract_id
    timer = contract_timer(node)
    run(timer())
    clock.advance(INTERVAL)
    run(timer())
    clock.advance(INTERVAL)
    assert run(timer()).missed == 1
    assert about(lines, ADDRESS)[-1] == (f"farmer {ADDRESS}: contract {contract} did not answer the challenge asked "
                                         "again: the miss counts; out of containment")


def test_v1_containment_in_the_log(nodes, clock, lines):
    node = nodes(seeded_pool="4096:4", seeded_challenges=4, seeded_interval=INTERVAL, max_tokens_per_ip=0,
                 containment_retries=1, late_grace=0)
    run(node.pool.refill())
    token = run(node.v1.new_token(ADDRESS, None))["token"]
    [a] = orjson.loads(orjson.dumps(run(node.v1.chunks(token, None, 4096))))
    clock.advance(INTERVAL)
    summary = run(contract_timer(node)())
    assert summary.v1_contained == 1 and "v1: 0 ended, 0 failed, 1 asked again in containment" in summary.describe()
    assert f"farmer {ADDRESS} is contained: contract " in about(lines, ADDRESS)[0]
    proofs = [{"file_hash": a["file_hash"], "proof": prove(a)}]
    assert report_of(node.v1.answer(token, None, proofs))[0]["status"] == "ok"
    assert about(lines, ADDRESS)[-1].endswith("(v1) answered the challenge asked again: pass; out of containment")


def test_suspension_recovery_and_disqualification_are_one_line_each(nodes, clock, lines):
    node = nodes(suspension_threshold=0.99905, unknown_lambda=0.999)
    run(node.v0.create_token(ADDRESS))
    rules = node.stores.reputation.rules

    def record(**tally):
        run(node.db.run("t", record_txn, rules, clock.seconds(), {ADDRESS: Tally(**tally)}))

    record(passes=5)
    assert about(lines, ADDRESS) == []  # results that change nothing say nothing
    record(errors=1)
    assert about(lines, ADDRESS) == [
        f"farmer {ADDRESS} is suspended (unknown-error score below 0.99905; was ok): no new contracts until its "
        "unknown-error score recovers (disqualified if still suspended after suspension_grace)"]
    record(passes=1)  # not enough to recover: no change, no line
    assert len(about(lines, ADDRESS)) == 1
    record(passes=60)
    assert about(lines, ADDRESS)[-1] == f"farmer {ADDRESS} is no longer suspended: back to ok"
    record(fails=50)
    assert about(lines, ADDRESS)[-1] == (f"farmer {ADDRESS} is disqualified (audit score below 0.96; was ok): no new "
                                         "contracts for any of its tokens, its contracts end")
    record(fails=5)
    assert len(about(lines, ADDRESS)) == 3  # disqualified already: no second line


def test_a_transaction_that_rolls_back_announces_nothing(nodes, clock, lines):
    node = nodes()
    run(node.v0.create_token(ADDRESS))
    rules = node.stores.reputation.rules

    def body(txn):
        record_txn(txn, rules, clock.seconds(), {ADDRESS: Tally(fails=50)})
        raise RuntimeError("the rest of the transaction failed")

    with pytest.raises(RuntimeError):
        run(node.db.run("t", body))
    assert about(lines, ADDRESS) == []
    assert run(node.stores.reputation.of_addresses([ADDRESS]))[ADDRESS].status == "ok"
