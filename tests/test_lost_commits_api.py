"""Every farmer call that writes, with a fault injected exactly at COMMIT (``support.lost_commits``):
the acknowledgement lost after the server committed, the connection lost before COMMIT reached
it, or COMMIT refused (a deadlock). For each call, the fault is put on its first write commit, then
its second, … until the call makes no more; each time the answer the farmer gets must match what
the database holds: no 500, a token that exists is the token the farmer got, a contract that exists
is one the farmer was told about, a pass recorded is a pass reported.

On both engines (SQLite as if its commits could be lost); the MariaDB runs are the ones that
matter (tests/test_lost_commits.py has the mechanism itself)."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from downstream_tx.core.tokens import hash_token
from support import StubClient, add_test_file, make_address, make_config, make_resource, run, stored_bytes, v0_answer
from support.lost_commits import MODES, faulty_node
from support.v1 import INTERVAL, prove

V1 = "/api/downstream/v1"
_addresses = itertools.count(100)


@dataclass
class Farm:
    """A node whose commits fail on demand, and a client of its HTTP API."""

    node: Any
    faults: Any
    client: StubClient
    clock: Any
    tmp_path: Any

    def sql(self, query: str, args: tuple = ()) -> list[tuple]:
        return run(self.node.db.run("read", lambda txn: txn.execute(query, args).fetchall()))

    def get(self, path: str):
        return self.client.get(path)

    def post(self, path: str, body: Any):
        return self.client.request("POST", path, headers={"Content-Type": "application/json"},
                                    data=orjson.dumps(body))

    def address(self) -> str:
        return make_address(next(_addresses))

    def tokens_of(self, address: str) -> set[bytes]:
        return {bytes(h) for h, in self.sql("SELECT token_hash FROM tokens WHERE address = ?", (address,))}

    def contracts_of(self, token: str) -> list[tuple]:
        """(id, file hash, state, passes, answered) of every contract of the token."""
        return [tuple(r) for r in self.sql(
            "SELECT c.id, f.file_hash, c.state, c.passes, c.answered FROM contracts c "
            "JOIN tokens k ON k.id = c.token_id JOIN files f ON f.id = c.file_id WHERE k.token_hash = ? "
            "ORDER BY c.id", (hash_token(token),))]

    def hbcount(self, token: str) -> int:
        return int(self.sql("SELECT hbcount FROM tokens WHERE token_hash = ?", (hash_token(token),))[0][0])


@pytest.fixture
def farm(tmp_path, db_url, clock):
    config = make_config(tmp_path, db_url, max_tokens_per_ip=0, token_rate=0, seeded_pool="4096:8",
                         seeded_challenges=4, seeded_interval=INTERVAL)
    node, faults = faulty_node(config, clock)
    client = StubClient(make_resource(node, config), pump=lambda: clock.advance(0))
    yield Farm(node, faults, client, clock, tmp_path)
    node.db.close()


# --- the calls: each prepares (no fault), acts (the fault armed), and checks the answer against the rows

@dataclass
class Call:
    prepare: Callable[[Farm], Any]
    act: Callable[[Farm, Any], Any]
    check: Callable[[Farm, Any, Any], None]


def v0_token(farm: Farm) -> str:
    r = farm.get(f"/api/downstream/new/{farm.address()}")
    assert r.code == 200, r
    return r.json()["token"]


def v0_contract(farm: Farm) -> tuple[str, str, str]:
    """A token with a contract on a new file: (token, file hash, challenge)."""
    token = v0_token(farm)
    add_test_file(farm.node, farm.tmp_path, redundancy=1)
    r = farm.get(f"/api/downstream/chunk/{token}")
    assert r.code == 200, r
    return token, r.json()["file_hash"], r.json()["challenge"]


def check_v0_new(farm: Farm, address: str, r) -> None:
    assert r.code == 200, r
    assert farm.tokens_of(address) == {hash_token(r.json()["token"])}


def prepare_v0_chunk(farm: Farm) -> str:
    token = v0_token(farm)
    for _ in range(2):  # a second file: a re-run of the assignment would find one
        add_test_file(farm.node, farm.tmp_path, redundancy=1)
    return token


def check_v0_chunk(farm: Farm, token: str, r) -> None:
    assert r.code == 200, r
    assert [(h, s) for _, h, s, _, _ in farm.contracts_of(token)] == [(r.json()["file_hash"], "active")]


def answer_v0(farm: Farm, prepared: tuple[str, str, str]):
    token, file_hash, challenge = prepared
    response = v0_answer(stored_bytes(farm.node, file_hash), challenge)
    return farm.get(f"/api/downstream/challenge/{token}/{file_hash}/{response}")


def check_v0_answer(farm: Farm, prepared: tuple[str, str, str], r) -> None:
    assert (r.code, r.json()) == (200, {"status": "pass"}), r
    [(_, _, state, passes, answered)] = farm.contracts_of(prepared[0])
    assert (state, passes, answered) == ("active", 1, 1)


def check_v0_remove(farm: Farm, prepared: tuple[str, str, str], r) -> None:
    assert r.code == 200, r
    assert [s for _, _, s, _, _ in farm.contracts_of(prepared[0])] == ["ended"]


def v1_token(farm: Farm) -> str:
    r = farm.get(f"{V1}/new/{farm.address()}")
    assert r.code == 200, r
    return r.json()["token"]


def check_v1_new(farm: Farm, address: str, r) -> None:
    assert r.code == 200, r
    assert farm.tokens_of(address) == {hash_token(r.json()["token"])}


def prepare_v1_chunk(farm: Farm) -> str:
    run(farm.node.pool.refill())
    return v1_token(farm)


def check_v1_chunk(farm: Farm, token: str, r) -> None:
    assert r.code == 200, r
    told = sorted(c["file_hash"] for c in r.json()["chunks"])
    assert told and [cid for cid, *_ in farm.contracts_of(token)] == told


def v1_contract(farm: Farm) -> tuple[str, dict]:
    token = prepare_v1_chunk(farm)
    r = farm.get(f"{V1}/chunk/{token}/4096")
    assert r.code == 200 and len(r.json()["chunks"]) == 1, r
    return token, r.json()["chunks"][0]


def answer_v1(farm: Farm, prepared: tuple[str, dict]):
    token, chunk = prepared
    return farm.post(f"{V1}/answer/{token}", {"proofs": [{"file_hash": chunk["file_hash"], "proof": prove(chunk)}]})


def check_v1_answer(farm: Farm, prepared: tuple[str, dict], r) -> None:
    token, chunk = prepared
    assert (r.code, r.json()) == (200, {"report": [{"file_hash": chunk["file_hash"], "status": "ok"}]}), r
    [(_, _, state, passes, answered)] = farm.contracts_of(token)
    assert (state, passes, answered) == ("active", 1, 1) and farm.hbcount(token) == 1


def prepare_v1_refresh(farm: Farm) -> tuple[str, dict]:
    prepared = v1_contract(farm)
    check_v1_answer(farm, prepared, answer_v1(farm, prepared))
    farm.clock.advance(INTERVAL)  # the challenge is due: the next is handed out
    return prepared


def refresh_v1(farm: Farm, prepared: tuple[str, dict]):
    token, chunk = prepared
    return farm.post(f"{V1}/challenge/{token}", {"hashes": [chunk["file_hash"]]})


def check_v1_refresh(farm: Farm, prepared: tuple[str, dict], r) -> None:
    """The challenge the farmer was given is the one stored: its proof passes."""
    token, chunk = prepared
    assert r.code == 200, r
    [entry] = r.json()["challenges"]
    assert entry["answered"] is False and entry["due"] > 0, entry
    farm.faults.disarm()
    again = answer_v1(farm, (token, {**chunk, "challenge": entry["challenge"]}))
    assert again.json() == {"report": [{"file_hash": chunk["file_hash"], "status": "ok"}]}, again
    assert farm.hbcount(token) == 2


CALLS = {
    "v0 /new": Call(lambda farm: farm.address(), lambda farm, a: farm.get(f"/api/downstream/new/{a}"), check_v0_new),
    "v0 /chunk": Call(prepare_v0_chunk, lambda farm, t: farm.get(f"/api/downstream/chunk/{t}"), check_v0_chunk),
    "v0 answer": Call(v0_contract, answer_v0, check_v0_answer),
    "v0 /remove": Call(v0_contract, lambda farm, p: farm.get(f"/api/downstream/remove/{p[0]}/{p[1]}"),
                       check_v0_remove),
    "v1 /new": Call(lambda farm: farm.address(), lambda farm, a: farm.get(f"{V1}/new/{a}"), check_v1_new),
    "v1 /chunk": Call(prepare_v1_chunk, lambda farm, t: farm.get(f"{V1}/chunk/{t}/8192"), check_v1_chunk),
    "v1 answer": Call(v1_contract, answer_v1, check_v1_answer),
    "v1 /challenge": Call(prepare_v1_refresh, refresh_v1, check_v1_refresh),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(CALLS))
def test_the_farmer_is_told_what_was_committed(farm, name, mode):
    call = CALLS[name]
    injected = []
    for at in range(1, 10):
        prepared = call.prepare(farm)
        farm.faults.arm(mode, at=at)
        response = call.act(farm, prepared)
        faults = farm.faults.injected
        farm.faults.disarm()
        if not faults:
            break  # the call made fewer write commits
        injected += faults
        call.check(farm, prepared, response)
    assert injected, f"{name} made no write commit"
    # every fault was one the node had to handle (the lookups themselves write nothing)
    assert farm.node.db.lost_commits["unknown"] == 0


def test_a_v0_token_lost_at_commit_does_not_count_against_the_address_limit(tmp_path, db_url, clock):
    """The orphan tokens of a blind retry counted against the per-address limit: with the limit at
    one, the token whose acknowledgement was lost is the address's one token, and the farmer has it."""
    config = make_config(tmp_path, db_url, max_tokens_per_ip=0, token_rate=0, max_tokens_per_address=1)
    node, faults = faulty_node(config, clock)
    try:
        client = StubClient(make_resource(node, config), pump=lambda: clock.advance(0))
        address = make_address(7)
        faults.arm("after")
        r = client.get(f"/api/downstream/new/{address}")
        assert faults.injected == [(1, "after")]
        assert r.code == 200, r
        token = r.json()["token"]
        assert client.get(f"/api/downstream/due/{token}").code == 200
        r = client.get(f"/api/downstream/new/{address}")
        assert (r.code, r.json()["status"]) == (429, "limit_reached")
        assert run(node.db.run("n", lambda txn: txn.scalar("SELECT COUNT(*) FROM tokens"))) == 1
        assert hashlib.sha256(bytes.fromhex(token)).digest() == bytes(run(node.db.run(
            "h", lambda txn: txn.scalar("SELECT token_hash FROM tokens"))))
    finally:
        node.db.close()
