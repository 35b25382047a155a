"""Forged v1 proofs through the HTTP answer route (issue 20, item 1), on each engine: one token, many
contracts at challenge 0, proofs built from the tags alone (tests/support/forgery.py). Before the
fix every one answered ``ok`` and counted as a heartbeat; now each is an ``Invalid proof`` (a fail of
the farmer's audit score), and the contract still takes the honest proof."""

from __future__ import annotations

import pytest

from downstream_tx.heartbeat import Challenge, Tag
from support import run
from support.forgery import splices
from support.v1 import answer, build, chunks, farmer_status, heartbeats, prove

POOL = 24  # chunks of 1 KiB; each tree of 256 challenges is forgeable at index 0 with odds of about 0.63


@pytest.fixture
def api(tmp_path, db_url, clock):
    node, api = build(tmp_path, db_url, clock, seeded_pool=f"1024:{POOL}", seeded_challenges=256,
                      max_chunks_per_request=0, vetting_audits=1)
    run(node.pool.refill())
    yield api
    node.db.close()


def test_proofs_forged_from_the_tags_are_invalid_and_count_as_fails(api):
    token = api.new_token()
    contracts = chunks(api, token, POOL * 1024)
    assert len(contracts) == POOL
    forged = []
    for c in contracts:
        assert c["challenge"]["index"] == 0
        proofs = splices(Tag.from_dict(c["tag"]).tree, 0)
        if proofs:
            forged.append((c["file_hash"], proofs[0].to_dict()))
    assert forged, "no tag was forgeable (odds of about 1e-10): nothing was tried"
    code, body = answer(api, token, forged)
    assert code == 200
    assert body["report"] == [{"file_hash": cid, "error": "Invalid proof"} for cid, _ in forged]
    assert heartbeats(api, token) == 0
    farmer = farmer_status(api, token)
    assert farmer["audits"]["passes"] == 0 and farmer["audits"]["fails"] == len(forged)
    assert farmer["vetted"] is False and farmer["audit_score"] < 1.0

    # the farmer that holds the data still passes the same challenges
    honest = [(c["file_hash"], prove(c)) for c in contracts]
    code, body = answer(api, token, honest)
    assert body["report"] == [{"file_hash": c["file_hash"], "status": "ok"} for c in contracts]
    assert heartbeats(api, token) == POOL


def test_an_honest_proof_sent_for_another_contract_is_invalid(api):
    """v1 answers are batched per contract id: a proof is judged against the challenge and state of
    the contract it is sent for, not any the token holds."""
    token = api.new_token()
    first, second = chunks(api, token, 2048)
    proof = prove(first)
    assert Challenge.from_dict(first["challenge"]).index == Challenge.from_dict(second["challenge"]).index
    code, body = answer(api, token, [(second["file_hash"], proof)])
    assert body["report"] == [{"file_hash": second["file_hash"], "error": "Invalid proof"}]
    code, body = answer(api, token, [(first["file_hash"], proof)])
    assert body["report"] == [{"file_hash": first["file_hash"], "status": "ok"}]

