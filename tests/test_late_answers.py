"""Late answers: the node's own slowness never counts against a farmer (db/late.py,
docs/protocol-v0.md "Late answers", docs/protocol-v1.md "Expiry").

An answer is judged by when its request arrived, against the current and the previous challenge.
Clock-driven, on SQLite and MariaDB; the rule itself (``domain.verdicts.judge``) against a written
table is in tests/test_domain_verdicts.py."""

from __future__ import annotations

import pytest
from twisted.web.test.requesthelper import DummyRequest

from downstream_tx.errors import NodeError
from downstream_tx.http.facts import arrived_at
from downstream_tx.http.site import DownstreamSite
from downstream_tx.v0.hashes import parse_response
from support import ADDRESS, add_test_file, contract_row, report_of, run, stored_bytes, v0_answer

INTERVAL = 60
GRACE = 5.0


# --- v0, clock-driven, both engines -------------------------------------------------------------------

@pytest.fixture
def make(nodes):
    return nodes


class Farmer:
    def __init__(self, node, tmp_path):
        self.node = node
        self.file_hash = add_test_file(node, tmp_path, interval=INTERVAL)
        self.token = run(node.v0.create_token(ADDRESS))
        self.first = run(node.v0.get_chunk(self.token)).challenge.hex()

    def outstanding(self) -> str:
        _, due = run(self.node.v0.due(self.token))
        return due[0]["challenge"].hex()

    def answer(self, challenge: str, arrived: float | None = None, right: bool = True) -> str:
        response = v0_answer(stored_bytes(self.node, self.file_hash), challenge) if right else "0" * 64
        return run(self.node.v0.answer(self.token, self.file_hash, parse_response(response), arrived))

    def state(self) -> dict:
        return contract_row(self.node, self.token, self.file_hash)

    def late_passes(self) -> int:
        return run(self.node.stores.db.run("late", lambda txn: txn.scalar(
            "SELECT late_passes FROM contracts WHERE id = ?", (self.state()["id"],))))


def test_an_answer_that_arrived_in_time_passes_although_the_timer_turned_the_window(make, clock, tmp_path):
    node = make(late_grace=GRACE)
    farmer = Farmer(node, tmp_path)
    arrived = clock.seconds() + INTERVAL - 1  # the request arrives a second before the deadline …
    clock.advance(INTERVAL + 2)  # … and its transaction runs after the timer counted a miss
    assert run(node.supply.issue_due()).missed == 1
    assert farmer.state()["misses"] == 1
    assert farmer.answer(farmer.first, arrived) == "pass"
    state = farmer.state()
    assert (state["passes"], state["misses"], state["fails"], state["run"]) == (1, 0, 0, 0)
    assert farmer.late_passes() == 0  # it arrived in time: not even late
    # the new challenge is still outstanding and answerable
    assert farmer.answer(farmer.outstanding()) == "pass"
    assert farmer.state()["passes"] == 2


def test_the_timer_keeps_only_an_outstanding_challenge_as_the_previous_one(make, clock, tmp_path):
    node = make(late_grace=GRACE)
    farmer = Farmer(node, tmp_path)

    def prev():
        return run(node.stores.db.run("prev", lambda txn: txn.execute(
            "SELECT prev_challenge_id IS NOT NULL, prev_deadline, prev_missed FROM contracts WHERE id = ?",
            (farmer.state()["id"],)).fetchone()))

    deadline = farmer.state()["deadline"]
    clock.advance(INTERVAL)
    run(node.supply.issue_due())  # unanswered: kept, its miss counted
    assert tuple(prev()) == (1, deadline, 1)
    assert farmer.answer(farmer.outstanding()) == "pass"
    clock.advance(INTERVAL)
    assert run(node.supply.issue_due()).issued == 0  # answered: not visited
    farmer.outstanding()  # the farmer reads the next window: nothing kept
    assert tuple(prev())[0::2] == (0, 0)


def test_an_answer_within_the_grace_after_the_deadline_is_a_late_pass(make, clock, tmp_path):
    node = make(late_grace=GRACE)
    counted = []
    node.results.observers.append(lambda result, n, protocol: counted.append(result))
    farmer = Farmer(node, tmp_path)
    clock.advance(INTERVAL + 1)
    run(node.supply.issue_due())
    assert farmer.answer(farmer.first) == "late_pass"
    state = farmer.state()
    assert (state["passes"], state["misses"], state["run"]) == (1, 0, 0)
    assert farmer.late_passes() == 1
    assert counted == ["miss", "late_pass"]
    # one attempt: the same answer again is judged against the current challenge (a fail)
    assert farmer.answer(farmer.first) == "fail"


def test_a_late_pass_before_the_timer_ran_keeps_the_challenge_from_being_missed(make, clock, tmp_path):
    node = make(late_grace=GRACE)
    farmer = Farmer(node, tmp_path)
    clock.advance(INTERVAL + 1)
    assert farmer.answer(farmer.first) == "late_pass"
    assert run(node.supply.issue_due()).missed == 0
    assert (farmer.state()["passes"], farmer.state()["misses"]) == (1, 0)


def test_an_answer_past_the_grace_is_judged_against_the_new_challenge(make, clock, tmp_path):
    node = make(late_grace=GRACE)
    farmer = Farmer(node, tmp_path)
    clock.advance(INTERVAL + GRACE)
    run(node.supply.issue_due())
    assert farmer.answer(farmer.first) == "fail"
    state = farmer.state()
    assert (state["passes"], state["misses"], state["fails"], state["run"]) == (0, 1, 1, 2)


def test_a_wrong_answer_that_arrived_in_the_previous_window_turns_its_miss_into_a_fail(make, clock, tmp_path):
    node = make(late_grace=GRACE)
    farmer = Farmer(node, tmp_path)
    arrived = clock.seconds() + 10
    clock.advance(INTERVAL + 1)
    run(node.supply.issue_due())
    assert farmer.answer(farmer.first, arrived, right=False) == "fail"
    state = farmer.state()
    assert (state["passes"], state["misses"], state["fails"], state["run"]) == (0, 0, 1, 1)
    assert farmer.answer(farmer.outstanding()) == "pass"  # the current challenge is untouched


def test_a_late_pass_after_a_fail_of_the_current_challenge_leaves_a_run_of_one(make, clock, tmp_path):
    node = make(late_grace=GRACE)
    farmer = Farmer(node, tmp_path)
    clock.advance(INTERVAL + 1)
    run(node.supply.issue_due())
    assert farmer.answer(farmer.outstanding(), right=False) == "fail"
    assert farmer.state()["run"] == 2
    assert farmer.answer(farmer.first) == "late_pass"
    state = farmer.state()
    assert (state["passes"], state["misses"], state["fails"], state["run"]) == (1, 0, 1, 1)


def test_without_grace_the_old_rule_holds(make, clock, tmp_path):
    node = make(late_grace=0)
    farmer = Farmer(node, tmp_path)
    clock.advance(INTERVAL)
    with pytest.raises(Exception) as e:
        farmer.answer(farmer.first)
    assert getattr(e.value, "status", None) == "not_due"


def test_a_forgiven_challenge_answered_late_takes_back_no_miss(make, clock, tmp_path):
    """The node was down across the deadline: the timer forgave the challenge (no miss); a late
    pass on it is a pass and leaves the miss count alone."""
    node = make(late_grace=GRACE)
    farmer = Farmer(node, tmp_path)
    start = clock.seconds()
    clock.advance(INTERVAL + 1)
    result = run(node.stores.contracts.issue_due(clock.seconds(), 3, 5000, (start, clock.seconds())))
    assert (result.forgiven, result.missed) == (1, 0)
    assert farmer.answer(farmer.first) == "late_pass"
    assert (farmer.state()["passes"], farmer.state()["misses"]) == (1, 0)


# --- HTTP: the arrival time --------------------------------------------------------------------------

def test_the_site_stamps_each_request_with_its_arrival_on_the_reactor_clock(clock):
    site = DownstreamSite(None, reactor=clock)
    request = DummyRequest([b"x"])
    site.request_started(request)
    clock.advance(30)  # the request waited for the reactor, a thread, the database
    assert arrived_at(request, clock) == 1_700_000_000
    assert arrived_at(DummyRequest([b"y"]), clock) == 1_700_000_030  # not through the site: now


def test_the_challenge_route_answers_a_late_pass_as_a_pass(make, clock, tmp_path):
    from treq.testing import StubTreq

    from support import make_resource

    node = make(late_grace=GRACE)
    farmer = Farmer(node, tmp_path)
    clock.advance(INTERVAL + 1)
    response = v0_answer(stored_bytes(node, farmer.file_hash), farmer.first)
    client = StubTreq(make_resource(node))
    r = run(client.get(f"http://node/api/downstream/challenge/{farmer.token}/{farmer.file_hash}/{response}"))
    assert r.code == 200
    assert run(r.json()) == {"status": "pass", "late": True}


# --- v1 -----------------------------------------------------------------------------------------------

IP = "10.1.2.3"


def v1_contract(node):
    import orjson

    token = run(node.v1.new_token(ADDRESS, IP))["token"]
    [c] = run(node.v1.chunks(token, IP, 4096))
    return token, orjson.loads(orjson.dumps(c))


def test_v1_an_answer_that_arrived_before_the_expiration_counts_and_the_timer_waits_for_it(seeded_nodes, clock):
    from support.v1 import prove

    node = seeded_nodes(late_grace=GRACE)
    token, c = v1_contract(node)
    arrived = clock.seconds() + c["due"] - 0.5
    clock.advance(c["due"] + 1)  # expired when the transaction runs, not when the request arrived
    assert run(node.expiry.expire()).failed == 0  # the timer waits late_grace
    report = report_of(node.v1.answer(token, IP, [{"file_hash": c["file_hash"], "proof": prove(c)}], arrived))
    assert report == [{"file_hash": c["file_hash"], "status": "ok"}]
    clock.advance(GRACE)
    assert run(node.expiry.expire()).failed == 0  # answered: the expiration moved on


def test_v1_an_answer_that_arrived_after_the_expiration_is_refused_and_the_contract_fails(seeded_nodes, clock):
    from support.v1 import prove

    node = seeded_nodes(late_grace=GRACE)
    token, c = v1_contract(node)
    clock.advance(c["due"] + 1)
    report = report_of(node.v1.answer(token, IP, [{"file_hash": c["file_hash"], "proof": prove(c)}]))
    assert report == [{"file_hash": c["file_hash"], "error": "Answer failed: contract expired."}]
    assert run(node.expiry.expire()).failed == 0
    clock.advance(GRACE)
    assert run(node.expiry.expire()).failed == 1


# --- late answers and the farmer's reputation (db/late.py reputation_txn, docs/operations.md) ---------

def reputation_of(node):
    return run(node.stores.reputation.of_addresses([ADDRESS]))[ADDRESS]


def contained(node, farmer) -> int:
    return run(node.stores.db.run("contained", lambda txn: txn.scalar(
        "SELECT contained FROM contracts WHERE id = ?", (farmer.state()["id"],))))


def test_a_late_pass_counts_for_the_farmer_and_takes_back_its_miss_count(make, clock, tmp_path):
    node = make(late_grace=GRACE)  # containment off (support's default): the miss counts at once
    farmer = Farmer(node, tmp_path)
    clock.advance(INTERVAL + 1)
    run(node.supply.issue_due())
    missed = reputation_of(node)
    assert (missed.passes, missed.misses) == (0, 1)
    assert farmer.answer(farmer.first) == "late_pass"
    rep = reputation_of(node)
    assert (rep.passes, rep.fails, rep.misses) == (1, 0, 0)  # the count follows the contract's
    # the scores are not rewound (forgetting): the miss's failure stays, the pass is added on top
    assert rep.audit_beta == pytest.approx(missed.audit_beta * 0.999)
    assert rep.audit_alpha == pytest.approx(missed.audit_alpha * 0.999 + 1)


def test_a_late_wrong_answer_turns_the_farmers_miss_into_a_fail_without_a_second_failure(make, clock, tmp_path):
    node = make(late_grace=GRACE)
    farmer = Farmer(node, tmp_path)
    arrived = clock.seconds() + 10
    clock.advance(INTERVAL + 1)
    run(node.supply.issue_due())
    missed = reputation_of(node)
    assert farmer.answer(farmer.first, arrived, right=False) == "fail"
    rep = reputation_of(node)
    assert (rep.passes, rep.fails, rep.misses) == (0, 1, 0)
    assert (rep.audit_alpha, rep.audit_beta) == (missed.audit_alpha, missed.audit_beta)


def test_a_challenge_asked_again_in_containment_is_one_pass_counted_once(make, clock, tmp_path):
    node = make(late_grace=GRACE, containment_retries=1)
    farmer = Farmer(node, tmp_path)
    clock.advance(INTERVAL + 1)  # missed: the same challenge is asked again, no miss
    run(node.supply.issue_due())
    assert contained(node, farmer) == 1 and farmer.outstanding() == farmer.first
    assert farmer.answer(farmer.first) == "pass"  # the re-ask's deadline is ahead: not late
    state, rep = farmer.state(), reputation_of(node)
    assert (state["passes"], state["misses"], farmer.late_passes(), contained(node, farmer)) == (1, 0, 0, 0)
    assert (rep.passes, rep.misses, rep.retries) == (1, 0, 1)
    with pytest.raises(NodeError, match="no challenge is outstanding"):  # one attempt: nothing twice
        farmer.answer(farmer.first)
    clock.advance(INTERVAL)
    run(node.supply.issue_due())  # answered: the next window, nothing kept as "previous"
    assert farmer.answer(farmer.first) == "fail"  # judged against the new challenge, not a late pass
    assert (farmer.state()["passes"], farmer.late_passes(), reputation_of(node).passes) == (1, 0, 1)


def test_a_wrong_answer_that_arrived_before_the_re_ask_is_a_fail_of_the_contained_challenge(make, clock, tmp_path):
    node = make(late_grace=GRACE, containment_retries=1)
    farmer = Farmer(node, tmp_path)
    arrived = clock.seconds() + 10  # inside the challenge's first window …
    clock.advance(INTERVAL + 1)
    run(node.supply.issue_due())  # … its transaction runs after containment asked it again
    assert contained(node, farmer) == 1
    assert farmer.answer(farmer.first, arrived, right=False) == "fail"
    rep = reputation_of(node)
    assert (farmer.state()["fails"], rep.fails, contained(node, farmer)) == (1, 1, 0)


def test_a_late_pass_after_containment_counted_the_miss_takes_it_back(make, clock, tmp_path):
    node = make(late_grace=GRACE, containment_retries=1)
    farmer = Farmer(node, tmp_path)
    clock.advance(INTERVAL + 1)
    run(node.supply.issue_due())  # asked again
    clock.advance(INTERVAL)
    run(node.supply.issue_due())  # retries used up: the miss counts, a new challenge
    assert farmer.outstanding() != farmer.first
    assert (farmer.state()["misses"], reputation_of(node).misses) == (1, 1)
    assert farmer.answer(farmer.first) == "late_pass"  # within the grace of the re-ask's deadline
    rep = reputation_of(node)
    assert (farmer.state()["misses"], farmer.state()["passes"], farmer.late_passes()) == (0, 1, 1)
    assert (rep.passes, rep.misses, rep.retries) == (1, 0, 1)
