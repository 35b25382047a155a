"""Every list route answers a page of bounded size (issue 20, item 4): the v1 status list (100 farmers
without a limit, at most 1,000 with one) and v0 ``/due`` (``?limit=`` and ``?page=``), on each engine.
The dashboard's pages and the metrics' bounded labels have their own tests (test_dashboard.py,
test_metrics_health.py)."""

from __future__ import annotations

import os

import pytest

from downstream_tx.http import v0 as v0_routes
from downstream_tx.v1.status import DEFAULT_PAGE, MAX_PAGE
from support import StubClient, add_test_file, make_address, make_config, make_node, make_resource, run

V1 = "/api/downstream/v1"


@pytest.fixture
def api(tmp_path, db_url, clock):
    node = make_node(make_config(tmp_path, db_url, max_tokens_per_ip=0), clock)
    yield node, StubClient(make_resource(node))
    node.db.close()


def add_farmers(node, n: int) -> None:
    rows = [(os.urandom(32), f"{i:020x}", make_address(1)) for i in range(n)]
    run(node.db.run("fill", lambda txn: txn.executemany(
        "INSERT INTO tokens (token_hash, farmer_id, address, created) VALUES (?, ?, ?, 0)", rows)))


def ids(r) -> list[str]:
    assert r.code == 200, r
    return [f["id"] for f in r.json()["farmers"]]


def test_the_status_list_is_a_page_of_at_most_1000_farmers(api):
    node, client = api
    add_farmers(node, MAX_PAGE + 50)
    every = [f"{i:020x}" for i in range(MAX_PAGE + 50)]
    assert ids(client.get(f"{V1}/status/list/")) == every[:DEFAULT_PAGE]
    assert ids(client.get(f"{V1}/status/list/by/id")) == every[:DEFAULT_PAGE]
    assert ids(client.get(f"{V1}/status/list/online/")) == []
    assert ids(client.get(f"{V1}/status/list/{10 * MAX_PAGE}")) == every[:MAX_PAGE]
    assert ids(client.get(f"{V1}/status/list/{MAX_PAGE}/1")) == every[MAX_PAGE:]
    assert ids(client.get(f"{V1}/status/list/by/d/id/{MAX_PAGE + 1}/0")) == every[::-1][:MAX_PAGE]
    assert ids(client.get(f"{V1}/status/list/7/3")) == every[21:28]


@pytest.fixture
def v0(api, tmp_path, monkeypatch):
    """A v0 token holding five contracts; /due pages of at most two."""
    node, client = api
    monkeypatch.setattr(v0_routes, "DUE_PAGE", 2)
    token = client.get("/api/downstream/new/" + make_address(5)).json()["token"]
    hashes = []
    for _ in range(5):
        add_test_file(node, tmp_path, size=1024)
        r = client.get(f"/api/downstream/chunk/{token}")
        assert r.code == 200, r
        hashes.append(r.json()["file_hash"])
    return client, token, hashes


def due_hashes(client, path: str) -> tuple[list[str], list[str]]:
    r = client.get(path)
    assert r.code == 200, r
    body = r.json()
    return [c["hash"] for c in body["all_contracts"]], [c["hash"] for c in body["due_contracts"]]


def test_v0_due_is_a_page_of_the_tokens_contracts(v0):
    client, token, hashes = v0
    base = f"/api/downstream/due/{token}"
    assert due_hashes(client, base) == (hashes[:2], hashes[:2])  # the default page, oldest first
    assert due_hashes(client, base + "?page=1") == (hashes[2:4], hashes[2:4])
    assert due_hashes(client, base + "?page=2&limit=2") == (hashes[4:], hashes[4:])
    assert due_hashes(client, base + "?limit=1&page=3") == (hashes[3:4], hashes[3:4])
    assert due_hashes(client, base + "?page=3") == ([], [])


@pytest.mark.parametrize("query", ["limit=3", "limit=0", "limit=x", "page=-1", "page=1000001", "limit="])
def test_v0_due_refuses_a_page_out_of_range(v0, query):
    client, token, _ = v0
    r = client.get(f"/api/downstream/due/{token}?{query}")
    assert r.code == 400, r
    assert r.json()["status"] == "invalid_query"
