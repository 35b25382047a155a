"""Farmer reputation (docs/operations.md, "Reputation"), on each engine, time from task.Clock:
results recorded in their own transactions, containment (v0 and v1), disqualification and
reinstatement, suspension, the vetting share. The rules alone (the score math against a written
table, standing, containment, vetting) are tested in tests/test_domain_*.py."""

from __future__ import annotations

import orjson
import pytest

from downstream_tx.config import load_config
from downstream_tx.core.reputation import rules_of
from downstream_tx.core.tokens import hash_token
from downstream_tx.db import reputation
from downstream_tx.domain import vetting
from downstream_tx.domain.rules import Rules
from downstream_tx.domain.scores import Tally
from downstream_tx.errors import NodeError
from downstream_tx.v0.hashes import parse_response
from support import (
    ADDRESS,
    add_test_file,
    challenges_of,
    file_replicas,
    make_address,
    make_config,
    report_of,
    run,
)
from support.v0_farmer import V0Farmer
from support.v1 import INTERVAL as V1_INTERVAL
from support.v1 import prove

INTERVAL = 60

def test_the_rules_have_one_default_the_configurations(tmp_path):
    """``Rules()`` is what a node with the default settings runs by (``core.reputation.rules_of``)."""
    assert rules_of(load_config(None, environ={}, overrides={"data_dir": str(tmp_path)})) == Rules()


# --- helpers ------------------------------------------------------------------------------------

@pytest.fixture
def make(nodes):
    return nodes


class Farmer(V0Farmer):
    def rep(self) -> reputation.Reputation:
        return run(self.node.stores.reputation.of_addresses([self.address]))[self.address]


def tick(node, clock, seconds: float = INTERVAL):
    clock.advance(seconds)
    return run(node.supply.issue_due())


def refused(call) -> NodeError:
    with pytest.raises(NodeError) as e:
        run(call)
    return e.value


# --- recorded with the results ------------------------------------------------------------------

def test_v0_results_follow_the_worked_example(make, clock, tmp_path):
    node = make()
    h = add_test_file(node, tmp_path, interval=INTERVAL)
    farmer = Farmer(node)
    assert farmer.rep().audit_score == 1.0 and farmer.rep().passes == 0
    farmer.chunk()
    # the first four rows of the worked example (tests/test_domain_scores.py, docs/operations.md)
    for result, alpha, beta in (("pass", 1000.0, 0.0), ("fail", 999.0, 1.0), ("fail", 998.001, 1.999),
                                ("pass", 998.002999, 1.997001)):
        assert farmer.answer(h, right=result == "pass") == result
        rep = farmer.rep()
        assert (round(rep.audit_alpha, 6), round(rep.audit_beta, 6)) == (alpha, beta)
        tick(node, clock)
    assert (rep.passes, rep.fails, rep.misses) == (2, 2, 0)
    # the online score counts answers, right or wrong, as successes
    assert rep.online_score == 1.0 and rep.unknown_score == 1.0


def test_every_token_of_an_address_shares_one_reputation(make, clock, tmp_path):
    node = make()
    h = add_test_file(node, tmp_path, interval=INTERVAL)
    first = Farmer(node)
    first.chunk()
    first.answer(h, right=False)
    second = Farmer(node)  # a new token for the same address
    assert second.rep() == first.rep() and second.rep().fails == 1
    other = Farmer(node, make_address(7))
    assert other.rep().fails == 0


def test_v1_results_and_expiry_are_recorded(make, clock):
    # late_grace 0: the expiry job acts at the expiration (the grace: tests/test_late_answers.py)
    node = make(seeded_pool="4096:4", seeded_challenges=4, seeded_interval=V1_INTERVAL, max_tokens_per_ip=0,
                late_grace=0)
    run(node.pool.refill())
    token = run(node.v1.new_token(ADDRESS, None))["token"]
    a, b, c = orjson.loads(orjson.dumps(run(node.v1.chunks(token, None, 3 * 4096))))
    transactions: list[str] = []
    node.db.observers.append(lambda desc, seconds, ok: transactions.append(desc))
    report = report_of(node.v1.answer(token, None, [{"file_hash": a["file_hash"], "proof": prove(a)},
                                                    {"file_hash": b["file_hash"], "proof": prove(c)},
                                                    {"file_hash": c["file_hash"], "proof": {"broken": 1}}]))
    assert [r.get("status") or r.get("error") for r in report] == ["ok", "Invalid proof", "Proof corrupted"]
    # the corrupted proof's error is counted in the answers' own transaction, not one of its own
    assert transactions == ["v1_answer_read", "v1_answer"]
    rep = run(node.stores.reputation.of_addresses([ADDRESS]))[ADDRESS]
    assert (rep.passes, rep.fails, rep.misses, rep.errors) == (1, 1, 0, 1)
    assert round(rep.audit_score, 6) == 0.999 and rep.unknown_score < 1.0
    clock.advance(V1_INTERVAL)
    # b (a wrong proof leaves the challenge open in v1) and c were not proven in time: misses
    # (containment is off here)
    run(node.expiry.expire())
    rep = run(node.stores.reputation.of_addresses([ADDRESS]))[ADDRESS]
    # the farmer was active (it answered): audit misses; the online score counts windows, not misses
    assert (rep.misses, rep.retries) == (2, 0) and rep.online_score == 1.0


def test_a_malformed_v0_answer_counts_as_an_error_of_the_farmer(make, tmp_path):
    node = make()
    add_test_file(node, tmp_path, interval=INTERVAL)
    farmer = Farmer(node)
    h = farmer.chunk()
    assert refused(node.v0.answer(farmer.token, h, parse_response("not hex"))).status == "invalid_response"
    assert farmer.rep().errors == 1 and farmer.rep().passes == 0
    # no token: not counted
    assert refused(node.v0.answer("z" * 32, h, parse_response("not hex"))).status == "invalid_response"


# --- containment --------------------------------------------------------------------------------

def test_v0_offline_across_a_challenge_is_contained_asked_the_same_challenge_and_recovers(make, clock, tmp_path):
    node = make(containment_retries=3)
    h = add_test_file(node, tmp_path, interval=INTERVAL, redundancy=1)
    other_file = add_test_file(node, tmp_path, interval=INTERVAL, redundancy=1)
    farmer = Farmer(node)
    assert farmer.chunk() == h
    asked = farmer.outstanding()[h]
    result = tick(node, clock)  # offline: the deadline passes unanswered
    assert (result.contained, result.missed) == (1, 0)
    assert farmer.outstanding() == {h: asked}  # the SAME challenge, in the new window
    state = farmer.state(h)
    assert (state["misses"], state["run"], state["state"]) == (0, 0, "active")
    rep = farmer.rep()
    assert (rep.contained, rep.retries, rep.misses, rep.audit_score) == (1, 1, 0, 1.0)
    # no escape: a new token for the same address gets no contract while contained
    again = Farmer(node)
    assert refused(node.v0.get_chunk(again.token)).status == "contained"
    assert refused(node.v0.get_chunk(farmer.token)).status == "contained"
    assert file_replicas(node, other_file) == 0
    # back online: the answer to the same challenge passes and lifts the containment
    assert farmer.answer(h) == "pass"
    assert farmer.rep().contained == 0 and farmer.rep().passes == 1
    assert again.chunk() == other_file
    assert again.answer(other_file) == "pass"
    assert tick(node, clock).contained == 0


def test_v0_containment_counts_the_miss_after_the_retries(make, clock, tmp_path):
    node = make(containment_retries=2, max_failures=3)
    h = add_test_file(node, tmp_path, interval=INTERVAL)
    farmer = Farmer(node)
    farmer.chunk()
    asked = farmer.outstanding()[h]
    assert tick(node, clock).contained == 1
    assert tick(node, clock).contained == 1
    assert farmer.outstanding() == {h: asked}  # asked twice again
    result = tick(node, clock)  # the third deadline unanswered: the miss counts
    assert (result.contained, result.missed, result.issued) == (0, 1, 1)
    assert farmer.outstanding()[h] != asked  # a new challenge, containment over
    rep = farmer.rep()
    assert (rep.contained, rep.retries, rep.misses) == (0, 2, 1) and rep.audit_score < 1.0
    assert farmer.state(h)["misses"] == 1


@pytest.mark.parametrize("retries", [0, 1])
def test_a_pass_in_small_pages_counts_each_miss_once_in_the_reputation(make, clock, tmp_path, retries):
    """Pages of the v0 pass hold answered contracts too, so one can end before the containment
    step's page: the farmer's counted misses must still equal its contracts' misses."""
    node = make(containment_retries=retries, max_failures=10)
    files = [add_test_file(node, tmp_path, interval=INTERVAL) for _ in range(6)]
    farmer = Farmer(node)
    for _ in files:
        farmer.chunk()
    for h in files[:3]:
        assert farmer.answer(h) == "pass"
    contracts = node.stores.contracts
    for _ in range(retries + 1):  # the deadlines pass unanswered (retries times asked again first)
        clock.advance(INTERVAL)
        while run(contracts.issue_due(clock.seconds(), 10, 2, None)).more:
            pass
    misses = sum(farmer.state(h)["misses"] for h in files)
    assert misses == 3 and farmer.rep().misses == misses


def test_v0_a_wrong_answer_in_containment_counts_at_once(make, clock, tmp_path):
    node = make(containment_retries=3)
    h = add_test_file(node, tmp_path, interval=INTERVAL)
    farmer = Farmer(node)
    farmer.chunk()
    tick(node, clock)
    assert farmer.rep().contained == 1
    assert farmer.answer(h, right=False) == "fail"
    rep = farmer.rep()
    assert (rep.contained, rep.fails) == (0, 1)


def test_v0_removing_a_contract_in_containment_counts_the_miss(make, clock, tmp_path):
    node = make(containment_retries=3)
    h = add_test_file(node, tmp_path, interval=INTERVAL)
    farmer = Farmer(node)
    farmer.chunk()
    tick(node, clock)
    run(node.v0.end_contract(farmer.token, h))
    rep = farmer.rep()
    assert (rep.contained, rep.misses) == (0, 1)


def test_v0_the_nodes_own_downtime_does_not_contain(make, clock, tmp_path):
    from downstream_tx.runtime import contract_timer

    node = make(containment_retries=3)
    h = add_test_file(node, tmp_path, interval=INTERVAL)
    farmer = Farmer(node)
    farmer.chunk()
    run(contract_timer(node)())  # a pass: the node is alive
    clock.advance(5 * INTERVAL)  # then it is down across several deadlines
    timer = contract_timer(node)  # restarted
    summary = run(timer())
    assert summary.forgiven == 1 and farmer.rep().contained == 0 and farmer.rep().retries == 0
    assert farmer.outstanding()[h]


def test_v1_unanswered_challenge_is_asked_again_in_containment(make, clock):
    node = make(seeded_pool="4096:4", seeded_challenges=4, seeded_interval=V1_INTERVAL, max_tokens_per_ip=0,
                containment_retries=1, late_grace=0)  # late_grace 0: expiry acts at the expiration
    run(node.pool.refill())
    token = run(node.v1.new_token(ADDRESS, None))["token"]
    [a, b] = orjson.loads(orjson.dumps(run(node.v1.chunks(token, None, 2 * 4096))))
    clock.advance(V1_INTERVAL)
    result = run(node.expiry.expire())
    assert (result.contained, result.failed) == (2, 0)
    # /challenge gives the same challenge again, due one interval later; an honest proof passes
    again = challenges_of(node.v1.challenges(token, None))
    assert [orjson.loads(orjson.dumps(e["challenge"])) for e in again] == [a["challenge"], b["challenge"]]
    assert all(e["due"] == V1_INTERVAL for e in again)
    token2 = run(node.v1.new_token(ADDRESS, None))["token"]  # no escape with a new token
    assert run(node.v1.chunks(token2, None, 4096)) == []  # the client's "nothing fits now"
    proofs = [{"file_hash": a["file_hash"], "proof": prove(a)}]
    assert report_of(node.v1.answer(token, None, proofs))[0]["status"] == "ok"
    rep = run(node.stores.reputation.of_addresses([ADDRESS]))[ADDRESS]
    assert (rep.contained, rep.retries, rep.passes) == (1, 2, 1)
    clock.advance(V1_INTERVAL)
    result = run(node.expiry.expire())  # b's retries are used up: it fails, its miss counts
    assert (result.contained, result.failed) == (0, 1)
    rep = run(node.stores.reputation.of_addresses([ADDRESS]))[ADDRESS]
    assert (rep.contained, rep.misses) == (0, 1)


# --- disqualification ---------------------------------------------------------------------------

def test_disqualification_ends_the_contracts_and_the_files_go_to_other_farmers(make, clock, tmp_path):
    # 0.9995: one failure (score 0.999) disqualifies a new farmer
    node = make(dq_threshold=0.9995)
    files = [add_test_file(node, tmp_path, interval=INTERVAL, redundancy=2) for _ in range(2)]
    bad, good = Farmer(node), Farmer(node, make_address(2))
    held = [bad.chunk(), bad.chunk()]
    assert sorted(held) == sorted(files) and sorted([good.chunk(), good.chunk()]) == sorted(files)
    good_before = {h: good.state(h) for h in files}
    assert bad.answer(held[0], right=False) == "fail"
    assert bad.rep().status == "disqualified" and "audit score" in bad.rep().status_reason
    assert refused(node.v0.get_chunk(bad.token)).status == "disqualified"
    assert refused(node.v0.get_chunk(Farmer(node).token)).status == "disqualified"  # a new token: the same
    swept = run(node.reputation.sweep())
    assert swept.ended == {ADDRESS: 2}
    assert all(bad.state(h)["state"] == "failed" and bad.state(h)["end_reason"] == "disqualified" for h in files)
    assert [file_replicas(node, h) for h in files] == [1, 1]
    third = Farmer(node, make_address(3))
    assert sorted([third.chunk(), third.chunk()]) == sorted(files)
    assert [file_replicas(node, h) for h in files] == [2, 2]
    assert {h: good.state(h) for h in files} == good_before  # the well-behaved farmer: unchanged
    assert good.rep().status == "ok"
    assert run(node.reputation.sweep()).ended == {}  # nothing twice
    # the operator reinstates: fresh audit score, new contracts again
    assert run(node.reputation.reinstate(ADDRESS)) == "disqualified"
    assert bad.rep().status == "ok" and bad.rep().audit_score == 1.0 and bad.rep().fails == 1
    add_test_file(node, tmp_path, interval=INTERVAL)
    assert bad.chunk()
    with pytest.raises(NodeError):
        run(node.reputation.reinstate(make_address(9)))


def test_a_disqualified_v1_farmer_gets_no_chunks_and_its_contracts_end(make, clock):
    node = make(seeded_pool="4096:4", seeded_challenges=4, seeded_interval=V1_INTERVAL, max_tokens_per_ip=0,
                dq_threshold=0.9995)
    run(node.pool.refill())
    token = run(node.v1.new_token(ADDRESS, None))["token"]
    a, b = orjson.loads(orjson.dumps(run(node.v1.chunks(token, None, 2 * 4096))))
    report_of(node.v1.answer(token, None, [{"file_hash": a["file_hash"], "proof": prove(b)}]))  # wrong: disqualified
    assert run(node.v1.chunks(token, None, 4096)) == []
    assert run(node.reputation.sweep()).ended == {ADDRESS: 2}
    assert run(node.v1.tags(token)) == []  # no live contract left
    assert run(node.db.run("tags", lambda txn: txn.scalar("SELECT COUNT(*) FROM contract_tags"))) == 0


# --- suspension ---------------------------------------------------------------------------------

def test_suspension_recovery_and_disqualification_after_the_grace(make, clock, tmp_path):
    node = make(suspension_threshold=0.99905, suspension_grace=1000, unknown_lambda=0.999)
    add_test_file(node, tmp_path, interval=INTERVAL)
    farmer = Farmer(node)
    h = farmer.chunk()
    refused(node.v0.answer(farmer.token, h, parse_response("bad")))  # unknown score 0.999 < 0.99905: suspended
    assert farmer.rep().status == "suspended"
    add_test_file(node, tmp_path, interval=INTERVAL)
    assert refused(node.v0.get_chunk(farmer.token)).status == "suspended"
    # recovery: enough well-formed answers lift it (store level: 60 answers in one transaction)
    rules = node.stores.reputation.rules
    run(node.db.run("t", reputation.record_txn, rules, clock.seconds(), {ADDRESS: Tally(passes=60)}))
    assert farmer.rep().status == "ok" and farmer.rep().status_reason is None
    assert farmer.chunk()
    # suspended again, and this time it does not recover within the grace: disqualified
    refused(node.v0.answer(farmer.token, h, parse_response("bad")))
    refused(node.v0.answer(farmer.token, h, parse_response("bad")))
    assert farmer.rep().status == "suspended"
    clock.advance(999)
    assert run(node.reputation.sweep()).expired == []
    clock.advance(1)
    swept = run(node.reputation.sweep())
    assert swept.expired == [ADDRESS] and swept.ended == {ADDRESS: 2}
    assert farmer.rep().status == "disqualified" and "suspension_grace" in farmer.rep().status_reason


# --- vetting ------------------------------------------------------------------------------------

def test_unvetted_farmers_get_at_most_the_vetting_share(make, clock, tmp_path):
    node = make(vetting_audits=1, vetting_share=0.25)
    for _ in range(15):
        add_test_file(node, tmp_path, interval=INTERVAL, redundancy=1)
    vetted = Farmer(node, make_address(1))
    first = vetted.chunk()  # nobody is vetted yet: served
    assert vetted.answer(first) == "pass" and vetted.rep().passes == 1
    newcomer = Farmer(node, make_address(2))
    got = {"vetted": 1, "new": 0}
    for _ in range(10):
        got["vetted"] += 1 if vetted.chunk() else 0
        try:
            newcomer.chunk()
            got["new"] += 1
        except NodeError as e:
            assert e.status == "no_chunks"
    total, unvetted = run(node.stores.reputation.vetting())[0]
    # the first contract went to a farmer not vetted then (nobody was): not counted at all; the
    # counters forget 1/vetting_window per assignment
    assert total == pytest.approx(sum(got.values()) - 1, rel=0.01) and unvetted == pytest.approx(got["new"], rel=0.01)
    assert unvetted <= 0.25 * total and got["new"] == 3


def test_the_files_in_most_danger_go_to_preferred_farmers(make, clock, tmp_path):
    node = make(vetting_audits=1, vetting_share=1.0)
    urgent = add_test_file(node, tmp_path, interval=INTERVAL, redundancy=3)
    calm = add_test_file(node, tmp_path, interval=INTERVAL, redundancy=1)
    assert Farmer(node, make_address(5)).chunk() == urgent  # nobody vetted: the most urgent first
    vetted = Farmer(node, make_address(1))
    run(node.db.run("vet", reputation.record_txn, node.stores.reputation.rules, clock.seconds(),
                    {vetted.address: Tally(passes=1)}))
    newcomer = Farmer(node, make_address(2))
    assert newcomer.chunk() == calm  # not vetted: the file closest to its target
    assert vetted.chunk() == urgent


def test_a_vetted_farmer_on_probation_shares_the_vetting_share(make, clock, tmp_path):
    node = make(vetting_audits=1, vetting_share=0.0)  # nothing for farmers that are not preferred
    add_test_file(node, tmp_path, interval=INTERVAL)
    rules = node.stores.reputation.rules
    assert vetting.probation_mark(rules) == pytest.approx(0.98)
    good, shaky = Farmer(node, make_address(1)), Farmer(node, make_address(2))
    # shaky: vetted, but 30 fails in a row put it at 0.970 (above dq 0.96, under the 0.98 mark)
    run(node.db.run("r", reputation.record_txn, rules, clock.seconds(),
                    {good.address: Tally(passes=1), shaky.address: Tally(passes=1, fails=30)}))
    assert 0.96 < shaky.rep().audit_score < 0.98 and shaky.rep().status == "ok"
    assert refused(node.v0.get_chunk(shaky.token)).status == "no_chunks"
    assert good.chunk()


@pytest.mark.parametrize(("total", "unvetted", "preferred"), [(10000.0, 300.0, True), (40.0, 1.0, False),
                                                            (40.0, 3.0, False), (0.0, 0.0, False)])
def test_the_vetting_counters_forget_as_the_rule_says(make, clock, tmp_path, total, unvetted, preferred):
    """The guarded UPDATE and domain/vetting.py agree: what it counts, and whether it allows."""
    node = make(vetting_window=100, vetting_share=0.05)
    rules = node.stores.reputation.rules
    vetted = Farmer(node, make_address(1))
    run(node.db.run("vet", reputation.record_txn, rules, clock.seconds(), {vetted.address: Tally(passes=100)}))
    run(node.db.run("set", lambda txn: txn.execute("UPDATE vetting SET total = ?, unvetted = ? WHERE protocol = 0",
                                                   (total, unvetted))))
    took = run(node.db.run("take", reputation.take_share_txn, rules, 0, preferred))
    allowed = preferred or vetting.within_share(total, unvetted, rules)
    assert took == allowed
    want = vetting.counted(total, unvetted, not preferred, rules) if allowed else (total, unvetted)
    assert run(node.stores.reputation.vetting())[0] == pytest.approx(want)
    if took:  # given back: as before
        run(node.db.run("untake", reputation.untake_share_txn, rules, 0, preferred))
        assert run(node.stores.reputation.vetting())[0] == pytest.approx((total, unvetted), abs=1e-9)


def test_the_upgrade_gives_existing_farmers_their_counts(tmp_path, empty_db_url, clock):
    from downstream_tx.db import schema
    from support import open_test_db

    db = open_test_db(make_config(tmp_path, empty_db_url), clock, upgrade=False)
    steps = schema.load_steps(db.engine.name)
    version = next(s.version for s in steps if "reputation" in s.name)
    run(db.run("before", schema.upgrade_txn, steps[:version - 1]))

    def fill(txn):
        for token_id, address in ((1, ADDRESS), (2, ADDRESS), (3, make_address(2))):
            txn.execute("INSERT INTO tokens (id, token_hash, farmer_id, address, created) VALUES (?, ?, ?, ?, 0)",
                        (token_id, bytes([token_id]) * 32, f"{token_id:020d}", address))
        txn.execute("INSERT INTO files (id, file_hash, kind, size, redundancy, interval_s, added) "
                    "VALUES (1, ?, 'stored', 10, 3, 60, 0)", ("ab" * 32,))
        for token_id, passes, fails, misses in ((1, 150, 2, 1), (2, 5, 0, 3)):
            txn.execute("INSERT INTO contracts (token_id, file_id, state, start, interval_s, passes, fails, misses) "
                        "VALUES (?, 1, 'active', 0, 60, ?, ?, ?)", (token_id, passes, fails, misses))

    run(db.run("fill", fill))
    run(db.run("upgrade", schema.upgrade_txn, steps))
    found = run(db.run("read", reputation.of_addresses_txn, [ADDRESS, make_address(2)]))
    assert (found[ADDRESS].passes, found[ADDRESS].fails, found[ADDRESS].misses) == (155, 2, 4)
    assert (found[make_address(2)].passes, found[ADDRESS].audit_score, found[ADDRESS].status) == (0, 1.0, "ok")
    assert run(db.run("vetting", lambda txn: txn.execute(
        "SELECT protocol, total, unvetted FROM vetting ORDER BY protocol").fetchall())) == [(0, 0, 0), (1, 0, 0)]
    db.close()


def test_a_result_for_a_farmer_without_a_reputation_row_makes_one(make, tmp_path):
    node = make()
    add_test_file(node, tmp_path, interval=INTERVAL)
    farmer = Farmer(node)
    h = farmer.chunk()
    run(node.db.run("drop", lambda txn: txn.execute("DELETE FROM reputation")))
    assert farmer.answer(h) == "pass"
    assert farmer.rep().passes == 1 and farmer.rep().audit_score == 1.0


def test_an_error_of_a_farmer_without_a_reputation_row_makes_one(make, clock):
    node = make()
    farmer = Farmer(node)
    run(node.db.run("drop", lambda txn: txn.execute("DELETE FROM reputation")))
    assert run(node.stores.reputation.record_errors(hash_token(farmer.token), 2, clock.seconds())) == ADDRESS
    # a new row's unknown score starts at the steady state of its own factor (0.98): two errors, 0.98²
    assert (farmer.rep().errors, farmer.rep().unknown_score) == (2, pytest.approx(0.98 ** 2))


def test_a_share_given_back_leaves_the_counters_as_they_were(make):
    """An assignment that did not happen (the v1 pool ran dry, a chunk was unusable) gives its share
    back in the same transaction."""
    node = make()
    rules = node.stores.reputation.rules

    def body(txn):
        counters = "SELECT total, unvetted FROM vetting WHERE protocol = 1"
        txn.execute("UPDATE vetting SET total = 10, unvetted = 1 WHERE protocol = 1")
        seen = []
        for preferred in (True, False):
            assert reputation.take_share_txn(txn, rules, 1, preferred)
            seen.append(tuple(float(x) for x in txn.execute(counters).fetchone()))
            reputation.untake_share_txn(txn, rules, 1, preferred)
            seen.append(tuple(float(x) for x in txn.execute(counters).fetchone()))
        return seen

    # (nobody is vetted here: a farmer not preferred is served and nothing is counted)
    keep = vetting.keep(rules)
    seen = [x for pair in run(node.db.run("share", body)) for x in pair]
    assert seen == pytest.approx([10 * keep + 1, keep, 10.0, 1.0, 10.0, 1.0, 10.0, 1.0])


# --- offline is not failing (issue 24) ------------------------------------------------------------

def sweep_windows(node, clock, windows: int, every=None, seconds: float = INTERVAL):
    """Advance ``windows`` online windows (of ``seconds``), calling ``every()`` in each (a farmer's
    request), with a timer pass and a reputation pass after each."""
    for _ in range(windows):
        if every is not None:
            every()
        clock.advance(seconds)
        run(node.supply.issue_due())
        run(node.reputation.sweep())


def test_v0_a_silent_farmer_is_offline_not_failing_an_active_one_is_contained_then_failing(make, clock, tmp_path):
    node = make(containment_retries=1, max_failures=2, last_seen_every=10, online_window=INTERVAL,
                online_lambda=0.9, offline_threshold=0.01)
    files = [add_test_file(node, tmp_path, interval=INTERVAL, redundancy=2) for _ in range(3)]
    silent, active = Farmer(node, make_address(1)), Farmer(node, make_address(2))
    for farmer in (silent, active):
        assert sorted(farmer.chunk() for _ in files) == sorted(files)
    run(node.reputation.sweep())  # the first online windows pass: the start is not counted
    # window 1: both made requests in it (their chunks): both contained; then only `active` keeps
    # asking for its due challenges (and never answers)
    sweep_windows(node, clock, 1)
    assert (silent.rep().contained, active.rep().contained) == (3, 3)
    sweep_windows(node, clock, 3, every=active.outstanding)
    quiet = silent.rep()
    # the silent farmer: its contracts missed twice and failed (their files go to others), but no
    # audit failure, no disqualification; its online score lost one window per window (3 windows
    # without a request), not per contract
    assert all(silent.state(h)["state"] == "failed" for h in files)
    assert (quiet.audit_score, quiet.misses, quiet.status, quiet.contained) == (1.0, 0, "ok", 0)
    assert quiet.online_score == pytest.approx(0.9 ** 3)
    # the active farmer: asked again once, then each miss an audit failure
    busy = active.rep()
    assert busy.misses == 3 * 2 and busy.audit_score < 1.0 and busy.online_score == pytest.approx(1.0)
    assert [file_replicas(node, h) for h in files] == [0, 0, 0]
    spare = Farmer(node, make_address(3))
    assert sorted(spare.chunk() for _ in files) == sorted(files)  # repaired on another farmer


def test_offline_suspension_after_the_threshold_and_grace_never_disqualification(make, clock, tmp_path):
    node = make(online_window=INTERVAL, online_lambda=0.5, offline_threshold=0.3, offline_grace=2 * INTERVAL,
                suspension_grace=1, last_seen_every=1, max_failures=1000)
    add_test_file(node, tmp_path, interval=3600)
    farmer = Farmer(node)
    farmer.chunk()
    run(node.reputation.sweep())
    sweep_windows(node, clock, 1)  # the window of its chunk: online
    sweep_windows(node, clock, 1)
    assert farmer.rep().online_score == pytest.approx(0.5) and farmer.rep().status == "ok"
    sweep_windows(node, clock, 1)  # 0.25 < 0.3, unseen for 2 windows: suspended for being offline
    assert farmer.rep().status == "offline" and "online score" in farmer.rep().status_reason
    add_test_file(node, tmp_path, interval=3600)
    assert refused(node.v0.get_chunk(farmer.token)).status == "offline"
    sweep_windows(node, clock, 5)
    assert run(node.reputation.sweep()).expired == [] and farmer.rep().status == "offline"  # never disqualified
    sweep_windows(node, clock, 1, every=farmer.outstanding)  # back: a window online lifts it
    assert farmer.rep().status == "ok" and farmer.chunk()


def test_last_seen_is_written_at_most_once_per_last_seen_every_and_once_per_window(make, clock, tmp_path):
    node = make(last_seen_every=30, online_window=3600)
    farmer = Farmer(node)
    seen = lambda: run(node.stores.reputation.of_addresses([ADDRESS]))[ADDRESS].last_seen  # noqa: E731
    clock.advance(3600 - clock.seconds() % 3600 - 40)  # 40 s before an online window starts
    farmer.outstanding()
    first = clock.seconds()
    assert seen() == first
    for _ in range(5):  # requests 5 s apart: none writes
        clock.advance(5)
        farmer.outstanding()
    assert seen() == first
    clock.advance(10)  # 35 s after the write: the next request writes
    farmer.outstanding()
    assert seen() == clock.seconds()
    clock.advance(10)  # a new online window began: its first request writes, 10 s after the last write
    farmer.outstanding()
    assert seen() == clock.seconds()


def test_a_farmer_that_sends_only_malformed_answers_is_suspended_after_26(make, tmp_path):
    node = make()  # the default unknown_lambda (0.98) and suspension_threshold (0.6)
    h = add_test_file(node, tmp_path)
    farmer = Farmer(node)
    farmer.chunk()
    for n in range(1, 27):
        refused(node.v0.answer(farmer.token, h, parse_response("bad")))
        assert farmer.rep().status == ("suspended" if n >= 26 else "ok"), n


def test_a_new_farmer_gets_work_soon_after_the_start(make, clock, tmp_path):
    """Contracts handed out while nobody was vetted do not count against farmers not vetted: the
    first new farmer gets one after 1 / vetting_share assignments of the vetted farmer."""
    node = make(vetting_audits=1, vetting_share=0.05)
    for _ in range(60):
        add_test_file(node, tmp_path, interval=INTERVAL)
    first = Farmer(node, make_address(1))
    held = [first.chunk() for _ in range(20)]  # nobody is vetted yet
    assert first.answer(held[0]) == "pass"
    newcomer = Farmer(node, make_address(2))
    assert refused(node.v0.get_chunk(newcomer.token)).status == "no_chunks"
    taken = 0
    while True:
        first.chunk()
        taken += 1
        try:
            newcomer.chunk()
            break
        except NodeError:
            pass
    # 1 / vetting_share, and one more as the counters forget (it was 20 × (1 + 20) - 20 = 400 when
    # the start's contracts counted)
    assert taken == 20


def test_vetting_waits_for_the_minimum_age(make, clock, tmp_path):
    node = make(vetting_audits=1, vetting_min_age=3600)
    for _ in range(3):
        add_test_file(node, tmp_path, interval=INTERVAL)
    farmer = Farmer(node)
    assert farmer.answer(farmer.chunk()) == "pass"
    farmer.chunk()
    assert farmer.rep().vetted is False  # one pass, but its first token is not an hour old
    clock.advance(3600)
    farmer.chunk()
    assert farmer.rep().vetted is True


def test_replicas_go_to_distinct_addresses_and_networks(make, clock, tmp_path):
    node = make(distinct_networks=True)
    h = add_test_file(node, tmp_path, redundancy=6)

    def chunk(address, ip):
        token = run(node.v0.create_token(address))
        try:
            return run(node.v0.get_chunk(token, ip)).file_hash
        except NodeError as e:
            return e.status

    assert chunk(make_address(1), "203.0.113.5") == h
    assert chunk(make_address(1), "198.51.100.1") == "no_chunks"  # the same payout address: one farmer
    assert chunk(make_address(2), "203.0.113.77") == "no_chunks"  # the same /24
    assert chunk(make_address(3), "::ffff:203.0.113.9") == "no_chunks"  # IPv4-mapped: the same /24
    assert chunk(make_address(4), "198.51.100.1") == h
    assert chunk(make_address(5), "2001:db8:1:2::1") == h
    assert chunk(make_address(6), "2001:db8:1:ffff::2") == "no_chunks"  # the same /48
    assert chunk(make_address(7), "2001:db8:2::1") == h
    assert file_replicas(node, h) == 4
    off = make(distinct_networks=False)  # a single-network setup (the same database): only addresses count
    tokens = [run(off.v0.create_token(make_address(i))) for i in (8, 9)]
    assert [run(off.v0.get_chunk(t, "203.0.113.5")).file_hash for t in tokens] == [h, h]


def test_the_repair_of_a_lost_replica_follows_the_same_rule(make, clock, tmp_path):
    node = make(distinct_networks=True)
    h = add_test_file(node, tmp_path, redundancy=2)
    tokens = {n: run(node.v0.create_token(make_address(n))) for n in range(1, 5)}
    assert run(node.v0.get_chunk(tokens[1], "203.0.113.5")).file_hash == h
    assert run(node.v0.get_chunk(tokens[2], "198.51.100.1")).file_hash == h
    run(node.v0.end_contract(tokens[2], h))  # a replica is lost: the file is below its target again
    assert file_replicas(node, h) == 1
    assert refused(node.v0.get_chunk(tokens[3], "203.0.113.200")).status == "no_chunks"  # the holder's /24
    assert run(node.v0.get_chunk(tokens[4], "192.0.2.1")).file_hash == h


def test_a_replica_a_farmer_lost_is_repaired_on_another_farmer_not_handed_back(make, clock, tmp_path):
    """A farmer whose contract on a file failed is not given that file again (any of its tokens),
    even when it is the only one below its target: another farmer gets it."""
    node = make(max_failures=2)
    h = add_test_file(node, tmp_path, interval=INTERVAL)
    loser = Farmer(node, make_address(1))
    assert loser.chunk() == h
    for _ in range(2):
        assert loser.answer(h, right=False) == "fail"
        tick(node, clock)
    assert loser.state(h)["state"] == "failed" and file_replicas(node, h) == 0
    assert refused(node.v0.get_chunk(loser.token)).status == "no_chunks"
    second_token = run(node.v0.create_token(make_address(1)))  # a new token of the same payout address
    assert refused(node.v0.get_chunk(second_token)).status == "no_chunks"
    assert Farmer(node, make_address(2)).chunk() == h


def test_v1_a_silent_farmer_is_offline_not_failing(make, clock):
    node = make(seeded_pool="4096:4", seeded_challenges=4, seeded_interval=V1_INTERVAL, max_tokens_per_ip=0,
                containment_retries=1, late_grace=0, last_seen_every=5)
    run(node.pool.refill())
    silent = run(node.v1.new_token(ADDRESS, None))["token"]
    active = run(node.v1.new_token(make_address(2), None))["token"]
    run(node.v1.chunks(silent, None, 4096))
    run(node.v1.chunks(active, None, 4096))
    clock.advance(V1_INTERVAL)  # both fetched their chunk in the window: both contained
    assert run(node.expiry.expire()).contained == 2
    clock.advance(V1_INTERVAL / 2)
    run(node.v1.challenges(active, None))  # the active one asks for its challenge, never answers
    clock.advance(V1_INTERVAL / 2)
    result = run(node.expiry.expire())
    assert (result.contained, result.failed) == (0, 2)  # both contracts fail
    reps = run(node.stores.reputation.of_addresses([ADDRESS, make_address(2)]))
    assert (reps[ADDRESS].misses, reps[ADDRESS].audit_score) == (0, 1.0)  # offline: no audit failure
    assert reps[make_address(2)].misses == 1 and reps[make_address(2)].audit_score < 1.0
