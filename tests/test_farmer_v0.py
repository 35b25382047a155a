"""The farmer client on protocol v0, in-process against the node's own Klein resource (StubTreq, one
task.Clock, the node's challenge timer run on it), on both engines: the download followed exactly as
given and resumed with Range, answers over the stored bytes, restarts, lost data, give-backs."""

from __future__ import annotations

import os
from urllib.parse import parse_qs, urlsplit

import pytest

from support import add_test_file, contract_row, make_resource, stored_bytes
from support.farmer import FaultyNode, InProcessFarm

INTERVAL = 20
SIZE = 50_000


@pytest.fixture
def v0node(nodes, tmp_path):
    node = nodes(max_tokens_per_ip=0, public_url="http://node.test")
    file_hash = add_test_file(node, tmp_path, redundancy=1, interval=INTERVAL, size=SIZE)
    return node, file_hash, FaultyNode(make_resource(node))


def start(tmp_path, node, clock, resource, **kw) -> InProcessFarm:
    kw.setdefault("size", 4 * SIZE)
    kw.setdefault("protocol", "v0")
    return InProcessFarm(tmp_path, node, clock, resource=resource, **kw).start()


def test_a_v0_farmer_downloads_once_and_answers_every_challenge(tmp_path, clock, v0node):
    node, file_hash, resource = v0node
    farm = start(tmp_path, node, clock, resource)
    farm.pump(4 * INTERVAL + 3, step=0.5)
    farmer = farm.farmer
    c = farmer.book.get("v0", file_hash)
    assert c is not None and c.stored and c.problem is None
    with open(farmer.book.path(c, ".chunk"), "rb") as fh:
        assert fh.read() == stored_bytes(node, file_hash)
    row = contract_row(node, farmer.token, file_hash)
    assert row["state"] == "active" and row["passes"] == farmer.results["v0"][0] == 5
    assert row["misses"] == row["fails"] == 0
    assert len(resource.paths("/api/download/")) == 1  # downloaded once, never again to answer
    answers = resource.paths("/api/downstream/challenge/")
    assert len(answers) == 5 and all(p.count("/") == 6 for p in answers)
    assert farm.stop() == 0


def test_the_download_url_is_followed_exactly_with_its_query_string(tmp_path, clock, v0node):
    """The node hands out capability URLs (``/api/download/<hash>?cap=...``): the farmer downloads
    from the URL exactly as given, once."""
    node, file_hash, resource = v0node
    farm = start(tmp_path, node, clock, resource)
    farm.pump(INTERVAL, step=0.5)
    contract = farm.farmer.book.get("v0", file_hash)
    assert contract.stored
    given = urlsplit(contract.url)
    assert parse_qs(given.query).keys() == {"cap"}
    assert resource.paths("/api/download/") == [f"{given.path}?{given.query}"]
    farm.stop()


def test_an_interrupted_download_is_resumed_with_range(tmp_path, clock, v0node):
    node, file_hash, resource = v0node
    resource.only, resource.cut_after = "/api/download/", 20_000
    farm = start(tmp_path, node, clock, resource)
    farm.pump(INTERVAL, step=0.5)
    downloads = [(h, p) for _, p, h, _ in resource.requests if "/api/download/" in p]
    assert len(downloads) == 2
    assert "range" not in downloads[0][0] and downloads[1][0]["range"] == "bytes=20000-"
    c = farm.farmer.book.get("v0", file_hash)
    assert c.stored and farm.farmer.results["v0"][0] == 1
    with open(farm.farmer.book.path(c, ".chunk"), "rb") as fh:
        assert fh.read() == stored_bytes(node, file_hash)
    farm.stop()


def test_a_download_that_is_refused_gives_the_contract_back(tmp_path, clock, v0node):
    node, file_hash, resource = v0node
    def gone(request):
        if request.path.startswith(b"/api/download/"):
            request.setResponseCode(410)
            return b'{"status": "gone", "message": "downloaded already"}'
        return None

    resource.override = gone
    farm = start(tmp_path, node, clock, resource)
    farm.pump(5, step=0.5)
    assert farm.farmer.book.get("v0", file_hash) is None
    assert resource.paths(f"/remove/{farm.farmer.token}/{file_hash}")
    assert contract_row(node, farm.farmer.token, file_hash)["state"] == "ended"
    farm.stop()


def test_a_chunk_over_the_size_left_is_given_back_and_not_asked_for_again(tmp_path, clock, v0node):
    node, file_hash, resource = v0node
    farm = start(tmp_path, node, clock, resource, size=SIZE - 1)
    farm.pump(30, step=0.5)
    assert len(farm.farmer.book) == 0
    assert len(resource.paths("/api/downstream/chunk/")) == 1 and len(resource.paths("/remove/")) == 1
    assert not resource.paths("/api/download/")
    farm.stop()


def test_a_restarted_farmer_resumes_its_contract_and_a_partial_download(tmp_path, clock, v0node):
    node, file_hash, resource = v0node
    resource.only, resource.mode = "/api/download/", "drop"
    farm = start(tmp_path, node, clock, resource, size=SIZE)  # room for this contract only
    farm.pump(2, step=0.5)
    c = farm.farmer.book.get("v0", file_hash)
    assert c is not None and not c.stored
    with open(farm.farmer.book.path(c, ".part"), "wb") as fh:  # what arrived before the farmer stopped
        fh.write(stored_bytes(node, file_hash)[:30_000])
    token = farm.farmer.token
    assert farm.stop() == 0
    resource.mode = None
    n = len(resource.requests)
    again = farm.restarted()
    again.start()
    again.pump(3 * INTERVAL, step=0.5)
    later = resource.requests[n:]
    assert not [p for _, p, _, _ in later if "/new/" in p or "/chunk/" in p]
    [headers] = [h for _, p, h, _ in later if "/api/download/" in p]
    assert headers["range"] == "bytes=30000-"
    c = again.farmer.book.get("v0", file_hash)
    assert again.farmer.token == token and c.stored
    assert contract_row(node, token, file_hash)["passes"] == again.farmer.results["v0"][0] >= 2
    again.stop()


@pytest.mark.parametrize("harm", ["delete", "damage"])
def test_lost_data_is_never_answered_and_the_node_fails_the_contract(tmp_path, clock, v0node, harm):
    node, file_hash, resource = v0node
    # chunk_retry: no new contract within the test (the node would hand the freed file out again)
    farm = start(tmp_path, node, clock, resource, chunk_retry=1000.0)
    farm.pump(INTERVAL / 2, step=0.5)
    farmer = farm.farmer
    c = farmer.book.get("v0", file_hash)
    path = farmer.book.path(c, ".chunk")
    if harm == "delete":
        os.unlink(path)
    else:
        with open(path, "r+b") as fh:
            fh.seek(100)
            fh.write(b"\0" * 10)
    n = len(resource.requests)
    farm.pump(5 * INTERVAL, step=0.5)
    assert not [p for _, p, _, _ in resource.requests[n:] if "/api/downstream/challenge/" in p]
    row = contract_row(node, farmer.token, file_hash)
    assert row["state"] == "failed" and row["misses"] == 3 and row["fails"] == 0  # max_failures misses
    assert farmer.book.get("v0", file_hash) is None  # the farmer saw it end, and did not crash
    assert farmer.state == "farming"
    farm.stop()


def test_a_v0_node_that_forgot_the_token_says_what_to_do(tmp_path, clock, v0node):
    from support import run
    node, file_hash, resource = v0node
    farm = start(tmp_path, node, clock, resource)
    farm.pump(3, step=0.5)
    run(node.farmers.delete_token(farm.farmer.token))
    farm.pump(INTERVAL + 2, step=0.5)
    assert farm.farmer.state == "failed" and "--forcenew" in farm.farmer.error
    assert run(farm.farm.done) == 1


def test_a_give_back_is_finished_after_a_restart_and_the_file_not_taken_again(tmp_path, clock, v0node):
    node, file_hash, resource = v0node

    def refuse(request):
        path = request.path.decode()
        if path.startswith("/api/download/"):
            request.setResponseCode(410)
            return b'{"status": "gone", "message": "downloaded already"}'
        if "/remove/" in path and refuse.busy:
            request.setResponseCode(503)
            request.setHeader(b"Retry-After", b"1000")
            return b'{"status": "unavailable", "message": "try again soon"}'
        return None

    refuse.busy = True
    resource.override = refuse
    farm = start(tmp_path, node, clock, resource, chunk_retry=1.0)
    farm.pump(5, step=0.5)
    assert farm.farmer.book.get("v0", file_hash).given_back and len(resource.paths("/remove/")) == 1
    assert farm.stop() == 0
    refuse.busy = False
    again = farm.restarted()
    again.start()
    again.pump(10, step=0.5)
    assert len(resource.paths("/remove/")) >= 2 and again.farmer.book.get("v0", file_hash) is None
    assert contract_row(node, again.farmer.token, file_hash)["state"] == "ended"
    # offered again, it is given back at once, not downloaded
    assert len(resource.paths("/api/download/")) == 1
    again.stop()
