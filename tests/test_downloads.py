"""Downloads are capabilities of one v0 contract (docs/protocol-v0.md, "Downloads"), through HTTP
(StubTreq) on SQLite and MariaDB: a farmer that keeps nothing and fetches the chunk for each
challenge is refused; the window, resumes, HEAD, other contracts, missing and forged capabilities,
the ``redownload`` setting, the counts in ``farmer show`` and the metrics; several node processes on
one database. (The end-to-end run through the real daemon: tests/test_e2e_v0.py.)"""

from __future__ import annotations

import hashlib
import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import task

from downstream_tx.metrics import Metrics
from downstream_tx.v0.capability import Capability, parse_capability
from support import (
    ADDRESS,
    add_test_file,
    assert_error,
    contract_row,
    make_address,
    new_token,
    run,
    snapshot,
    stored_bytes,
    v0_answer,
)
from support.admin import dispatch

INTERVAL = 60
WINDOW = 600.0
BASE = "http://node.test:5000"
SIZE = 50_000
NOT_HERE = {"status": "no_hash", "message": "no such file is stored on this node"}


@pytest.fixture
def api(make_v0_api):
    """``api(**config_overrides) -> (node, client)`` with this module's public URL and window."""
    def make(**overrides):
        return make_v0_api(**{"public_url": BASE, "download_window": WINDOW, **overrides})
    return make


class V0Farmer:
    """A v0 farmer over HTTP that follows the URL its contract hands out."""

    def __init__(self, node, client, address: str = ADDRESS):
        self.node = node
        self.client = client
        self.token = new_token(client, address)

    def chunk(self) -> dict:
        r = self.client.get(f"/api/downstream/chunk/{self.token}")
        assert r.code == 200, r
        return r.json()

    def fetch(self, url: str, method: str = "GET", headers: dict | None = None):
        assert url.startswith(BASE + "/api/download/"), url
        return self.client.request(method, url.removeprefix(BASE), headers=headers)

    def due(self) -> dict[str, str]:
        return {d["hash"]: d["challenge"] for d in
                self.client.get(f"/api/downstream/due/{self.token}").json()["due_contracts"]}

    def answer(self, file_hash: str, data: bytes, challenge: str) -> str:
        r = self.client.get(f"/api/downstream/challenge/{self.token}/{file_hash}/{v0_answer(data, challenge)}")
        assert r.code == 200, r
        return r.json()["status"]

    def contract(self, file_hash: str) -> dict:
        return contract_row(self.node, self.token, file_hash)

    def shown(self) -> dict:
        farmer_id = hashlib.sha256(bytes.fromhex(self.token)).hexdigest()[:20]
        return json.loads(dispatch(self.node, "farmer", "show", farmer_id, "--json"))


def tick(node, clock, seconds: float = INTERVAL) -> None:
    clock.advance(seconds)
    run(node.supply.issue_due())


def cap_of(url: str) -> Capability:
    cap = parse_capability(url.partition("?cap=")[2])
    assert cap is not None, url
    return cap


# --- the attack -----------------------------------------------------------------------------------

def test_a_farmer_that_keeps_nothing_cannot_fetch_the_chunk_for_each_challenge(api, tmp_path, clock):
    """The farmer deletes its copy and downloads the chunk again whenever a challenge arrives. Before
    downloads were capabilities each of its answers passed; now the chunk is served once, the
    refetches are refused (403, counted), the challenges go unanswered and the contract fails."""
    node, client = api(max_failures=3)
    file_hash = add_test_file(node, tmp_path, interval=INTERVAL, size=SIZE)
    farmer = V0Farmer(node, client)
    contract = farmer.chunk()
    challenge = contract["challenge"]
    told = []
    for _ in range(5):
        r = farmer.fetch(contract["url"])  # fetched for this challenge, thrown away after the answer
        told.append(farmer.answer(file_hash, r.body, challenge) if r.code == 200 else f"{r.code} {r.json()['status']}")
        tick(node, clock)
        challenge = farmer.due().get(file_hash)
        if challenge is None:
            break
    assert told == ["pass", "403 download_closed", "403 download_closed", "403 download_closed"]
    row = farmer.contract(file_hash)
    assert (row["state"], row["passes"], row["misses"]) == ("failed", 1, 3)
    # the contract is over: its URL now gets the 404 of an unknown file, and is still counted
    r = farmer.fetch(contract["url"])
    assert (r.code, r.json()) == (404, NOT_HERE)
    shown = farmer.shown()["contracts"]
    assert (shown["downloads"], shown["redownloads"], shown["downloads_refused"]) == (1, 0, 4)


def test_an_honest_farmer_downloads_once_resumes_and_keeps_passing(api, tmp_path, clock):
    node, client = api()
    file_hash = add_test_file(node, tmp_path, interval=INTERVAL, size=SIZE)
    data = stored_bytes(node, file_hash)
    farmer = V0Farmer(node, client)
    contract = farmer.chunk()
    head = farmer.fetch(contract["url"], "HEAD")
    assert head.code == 200 and head.header("accept-ranges") == "bytes"
    first = farmer.fetch(contract["url"], headers={"Range": "bytes=0-19999"})  # the connection drops here
    clock.advance(INTERVAL / 2)  # and resumes later
    rest = farmer.fetch(contract["url"], headers={"Range": "bytes=20000-"})
    assert (first.code, rest.code) == (206, 206) and first.body + rest.body == data
    challenge = contract["challenge"]
    for _ in range(3):
        assert farmer.answer(file_hash, data, challenge) == "pass"
        tick(node, clock)
        challenge = farmer.due()[file_hash]
    row = farmer.contract(file_hash)
    assert (row["state"], row["passes"], row["misses"], row["fails"]) == ("active", 3, 0, 0)
    shown = farmer.shown()["contracts"]
    assert (shown["downloads"], shown["redownloads"], shown["downloads_refused"]) == (2, 0, 0)


# --- the window -----------------------------------------------------------------------------------

def test_the_window_starts_at_the_first_download_and_closes_after_download_window(api, tmp_path, clock):
    node, client = api()
    add_test_file(node, tmp_path, size=SIZE)
    farmer = V0Farmer(node, client)
    url = farmer.chunk()["url"]
    assert farmer.fetch(url, "HEAD").code == 200  # a HEAD starts nothing
    clock.advance(WINDOW + 100)
    assert farmer.fetch(url, headers={"Range": "bytes=0-99"}).code == 206  # the first download
    clock.advance(WINDOW - 0.5)
    assert farmer.fetch(url).code == 200
    assert farmer.fetch(url, "HEAD").code == 200
    clock.advance(0.5)
    assert_error(farmer.fetch(url), 403, "download_closed")
    assert_error(farmer.fetch(url, headers={"Range": "bytes=100-199"}), 403, "download_closed")
    assert farmer.fetch(url, "HEAD").code == 403


def test_the_first_pass_closes_the_window(api, tmp_path, clock):
    """Once the contract passed a challenge the farmer has shown it holds the bytes: a download
    now could only stand in for them."""
    node, client = api()
    file_hash = add_test_file(node, tmp_path, size=SIZE)
    farmer = V0Farmer(node, client)
    contract = farmer.chunk()
    data = farmer.fetch(contract["url"]).body
    assert farmer.fetch(contract["url"], headers={"Range": "bytes=0-9"}).code == 206  # still open
    assert farmer.answer(file_hash, b"wrong bytes", contract["challenge"]) == "fail"  # a fail closes nothing
    assert farmer.fetch(contract["url"], headers={"Range": "bytes=0-9"}).code == 206
    tick(node, clock)
    assert farmer.answer(file_hash, data, farmer.due()[file_hash]) == "pass"
    assert_error(farmer.fetch(contract["url"], headers={"Range": "bytes=0-9"}), 403, "download_closed")


def test_a_range_past_the_end_is_neither_a_download_nor_a_change(api, tmp_path, clock):
    node, client = api()
    add_test_file(node, tmp_path, size=SIZE)
    farmer = V0Farmer(node, client)
    url = farmer.chunk()["url"]
    before = snapshot(node)
    assert_error(farmer.fetch(url, headers={"Range": f"bytes={SIZE}-"}), 416, "range_not_satisfiable")
    assert snapshot(node) == before
    clock.advance(WINDOW * 2)
    assert farmer.fetch(url).code == 200  # the window had not started


def test_head_is_checked_but_never_counted(api, tmp_path):
    node, client = api()
    file_hash = add_test_file(node, tmp_path, size=SIZE)
    farmer = V0Farmer(node, client)
    url = farmer.chunk()["url"]
    for _ in range(3):
        assert farmer.fetch(url, "HEAD").code == 200
    assert farmer.fetch(url.partition("?")[0], "HEAD").code == 404
    row = farmer.contract(file_hash)
    assert farmer.shown()["contracts"]["downloads"] == 0 and row["state"] == "active"


# --- who may download -----------------------------------------------------------------------------

def test_a_capability_opens_only_its_own_contracts_file(api, tmp_path):
    node, client = api()
    first = add_test_file(node, tmp_path, size=SIZE)
    second = add_test_file(node, tmp_path, size=SIZE + 1)
    farmer = V0Farmer(node, client)
    urls = {c["file_hash"]: c["url"] for c in (farmer.chunk(), farmer.chunk())}
    assert set(urls) == {first, second}
    cap_first = urls[first].partition("?")[2]
    before = snapshot(node)
    r = farmer.fetch(f"{BASE}/api/download/{second}?{cap_first}")  # the token's other contract's file
    assert (r.code, r.json()) == (404, NOT_HERE)
    assert snapshot(node) == before  # refused without a trace: the key was not this file's
    assert farmer.fetch(urls[second]).body == stored_bytes(node, second)
    assert farmer.fetch(urls[first]).body == stored_bytes(node, first)


@pytest.mark.parametrize("query", [
    "", "?", "?cap", "?cap=", "?cap=abc", "?other=1", "?cap=0.{key}", "?cap=01.{key}", "?cap={id}.{key}x",
    "?cap={id}.{key}.", "?cap={id}.{short}", "?cap=%ff{id}.{key}", "?cap={id}:{key}",
    "?cap=-{id}.{key}", "?cap=+{id}.{key}", "?cap=%20{id}.{key}", "?cap={id}.{forged}", "?cap={other_id}.{key}",
    "?cap=99999999999.{key}", "?cap=999999999999999999.{key}", "?cap=9999999999999999999.{key}",
])
def test_no_capability_a_wrong_one_or_a_forged_one_is_the_404_of_an_unknown_file(api, tmp_path, query):
    node, client = api()
    file_hash = add_test_file(node, tmp_path, size=SIZE)
    farmer = V0Farmer(node, client)
    cap = cap_of(farmer.chunk()["url"])
    other = V0Farmer(node, client, make_address(1))
    add_test_file(node, tmp_path, size=SIZE + 2)
    other_cap = cap_of(other.chunk()["url"])
    query = query.format(id=cap.contract_id, key=cap.key.hex(), short=cap.key.hex()[:-2], forged="ab" * 16,
                         other_id=other_cap.contract_id)
    unknown = farmer.fetch(f"{BASE}/api/download/{'ab' * 32}")
    before = snapshot(node)
    for method in ("GET", "HEAD"):
        r = farmer.fetch(f"{BASE}/api/download/{file_hash}{query}", method)
        assert r.code == 404, (method, query, r)
        if method == "GET":
            assert r.json() == NOT_HERE and r.body == unknown.body
    assert snapshot(node) == before


def test_the_published_shape_of_the_url(api, tmp_path):
    """The path stays the seed's ``/api/download/<hash>``; the capability is the query string."""
    node, client = api()
    file_hash = add_test_file(node, tmp_path, size=SIZE)
    contract = V0Farmer(node, client).chunk()
    assert re.fullmatch(rf"{BASE}/api/download/{file_hash}\?cap=[1-9][0-9]*\.[0-9a-f]{{32}}", contract["url"])


def test_a_contract_that_is_over_downloads_nothing(api, tmp_path):
    node, client = api()
    file_hash = add_test_file(node, tmp_path, size=SIZE)
    removed = V0Farmer(node, client)
    url = removed.chunk()["url"]
    assert client.get(f"/api/downstream/remove/{removed.token}/{file_hash}").code == 200
    r = removed.fetch(url)
    assert (r.code, r.json()) == (404, NOT_HERE)
    deleted = V0Farmer(node, client, make_address(1))
    url = deleted.chunk()["url"]
    run(node.farmers.delete_token(deleted.token))
    assert (deleted.fetch(url).code, deleted.fetch(url, "HEAD").code) == (404, 404)
    assert removed.shown()["contracts"]["downloads_refused"] == 1


def test_a_contract_made_before_download_keys_has_none(api, tmp_path):
    """Contracts from before schema version 9 hold no key: no capability opens their file."""
    node, client = api()
    file_hash = add_test_file(node, tmp_path, size=SIZE)
    token = new_token(client)
    _, assignment = run(node.stores.contracts.assign(hashlib.sha256(bytes.fromhex(token)).digest(),
                                                          node.clock.seconds()))
    for key in (b"\0" * 16, b"\xab" * 16):
        r = client.get(f"/api/download/{file_hash}?cap={Capability(assignment.contract_id, key)}")
        assert (r.code, r.json()) == (404, NOT_HERE)


def test_the_key_is_not_in_the_database(api, tmp_path):
    """A copy of the database cannot mint a capability: it holds only the key's SHA-256."""
    node, client = api()
    add_test_file(node, tmp_path, size=SIZE)
    cap = cap_of(V0Farmer(node, client).chunk()["url"])
    rows = [row for table in snapshot(node).values() for row in table]  # each row's repr
    assert not any(cap.key.hex() in row or repr(cap.key) in row for row in rows)
    assert any(repr(hashlib.sha256(cap.key).digest()) in row for row in rows)


def test_the_operators_export_is_not_a_download(api, tmp_path, clock):
    node, client = api()
    file_hash = add_test_file(node, tmp_path, size=SIZE)
    farmer = V0Farmer(node, client)
    url = farmer.chunk()["url"]
    farmer.fetch(url)
    clock.advance(WINDOW)
    assert farmer.fetch(url).code == 403
    assert run(node.files.export(file_hash, str(tmp_path / "out.bin"))) > 0


# --- the operator's setting, what the operator sees -------------------------------------------------

def test_redownload_serves_again_and_counts(api, tmp_path, clock):
    node, client = api(redownload=True)
    metrics = Metrics(task.Clock())
    node.downloads.observers.append(metrics.count_download)
    file_hash = add_test_file(node, tmp_path, size=SIZE)
    farmer = V0Farmer(node, client)
    contract = farmer.chunk()
    data = farmer.fetch(contract["url"]).body
    assert farmer.answer(file_hash, data, contract["challenge"]) == "pass"
    assert farmer.fetch(contract["url"], headers={"Range": "bytes=0-9"}).code == 206
    clock.advance(WINDOW * 3)
    assert farmer.fetch(contract["url"]).body == data
    shown = farmer.shown()["contracts"]
    assert (shown["downloads"], shown["redownloads"], shown["downloads_refused"]) == (3, 2, 0)
    assert [metrics.registry.get_sample_value("downstream_downloads_total", {"kind": kind})
            for kind in ("first", "resume", "again")] == [1, None, 2]
    # a contract that is over is refused whatever the setting
    assert client.get(f"/api/downstream/remove/{farmer.token}/{file_hash}").code == 200
    assert farmer.fetch(contract["url"]).code == 404


def test_counts_in_farmer_show_and_the_metrics(api, tmp_path, clock):
    node, client = api()
    metrics = Metrics(task.Clock())
    node.downloads.observers.append(metrics.count_download)
    node.db.observers.append(metrics.observe_transaction)  # as the daemon opens its database
    metrics.bind_db(node.db, 1)
    file_hash = add_test_file(node, tmp_path, size=SIZE)
    farmer = V0Farmer(node, client)
    url = farmer.chunk()["url"]
    farmer.fetch(url)
    farmer.fetch(url, headers={"Range": "bytes=5-"})
    farmer.fetch(url, "HEAD")
    clock.advance(WINDOW)
    farmer.fetch(url)
    farmer.fetch(url, "HEAD")
    farmer.fetch(url.partition("?")[0])
    farmer.fetch(url[:-1] + ("0" if url[-1] != "0" else "1"))
    assert client.get(f"/api/downstream/remove/{farmer.token}/{file_hash}").code == 200
    farmer.fetch(url)

    def sample(name: str, **labels) -> float:
        return metrics.registry.get_sample_value(name, labels) or 0.0

    assert sample("downstream_downloads_total", kind="first") == 1
    assert sample("downstream_downloads_total", kind="resume") == 1
    assert sample("downstream_downloads_total", kind="again") == 0
    assert sample("downstream_download_refused_total", reason="window_closed") == 2  # a GET and a HEAD
    assert sample("downstream_download_refused_total", reason="missing") == 1
    assert sample("downstream_download_refused_total", reason="invalid") == 1
    assert sample("downstream_download_refused_total", reason="ended") == 1
    assert metrics.registry.get_sample_value("downstream_db_transaction_duration_seconds_count",
                                             {"transaction": "download"}) == 7  # a HEAD's too; none without a cap
    shown = farmer.shown()["contracts"]
    assert (shown["downloads"], shown["redownloads"], shown["downloads_refused"]) == (2, 0, 2)  # GETs only
    farmer_id = hashlib.sha256(bytes.fromhex(farmer.token)).hexdigest()[:20]
    text = dispatch(node, "farmer", "show", farmer_id)
    assert re.search(r"^downloads +2 served \(0 after their window\), 2 refused", text, re.M), text


def test_counts_survive_archiving(api, tmp_path, clock):
    node, client = api(contract_retention=10)
    file_hash = add_test_file(node, tmp_path, size=SIZE)
    farmer = V0Farmer(node, client)
    url = farmer.chunk()["url"]
    farmer.fetch(url)
    assert client.get(f"/api/downstream/remove/{farmer.token}/{file_hash}").code == 200
    farmer.fetch(url)
    before = farmer.shown()["contracts"]
    clock.advance(20)
    assert run(node.stores.archive.archive(clock.seconds() - 10, 100)).archived == 1
    assert farmer.contract(file_hash) is None
    after = farmer.shown()["contracts"]
    assert after == before and (after["downloads"], after["downloads_refused"]) == (1, 1)


# --- many processes --------------------------------------------------------------------------------

def test_processes_sharing_the_database_give_one_answer(api, tmp_path, clock):
    """No process keeps state that decides a download: a URL handed out by one process is served,
    and its window closed, by another."""
    one, client_one = api()
    two, client_two = api()
    file_hash = add_test_file(one, tmp_path, size=SIZE)
    farmer = V0Farmer(one, client_one)
    url = farmer.chunk()["url"]
    farmer.client = client_two
    assert farmer.fetch(url).body == stored_bytes(two, file_hash)
    farmer.client = client_one
    assert farmer.fetch(url, headers={"Range": "bytes=0-0"}).code == 206
    clock.advance(WINDOW)
    assert farmer.fetch(url).code == 403
    farmer.client = client_two
    assert farmer.fetch(url).code == 403


# --- the capability's text ---------------------------------------------------------------------------

@given(st.integers(1, 10 ** 18 - 1), st.binary(min_size=16, max_size=16))
def test_a_capability_reads_back_as_written(contract_id, key):
    cap = Capability(contract_id, key)
    assert parse_capability(str(cap)) == cap
    assert parse_capability(str(cap).upper()) == cap  # hex in either case
    assert cap.key_hash == hashlib.sha256(key).digest()


@given(st.text(max_size=80))
def test_any_other_text_is_no_capability(text):
    cap = parse_capability(text)
    if cap is not None:  # only the one shape reads as a capability, and it reads back the same
        assert str(cap) == text.lower() and re.fullmatch(r"[1-9][0-9]{0,17}\.[0-9a-f]{32}", text.lower())


@given(st.integers(1, 10 ** 18 - 1), st.binary(min_size=16, max_size=16),
       st.sampled_from(["", " ", "\n", ".", "0", "a"]), st.sampled_from(["", " ", "\n", "+", "0"]))
def test_a_capability_with_anything_around_it_is_none(contract_id, key, after, before):
    text = str(Capability(contract_id, key))
    if after or before:
        assert parse_capability(before + text + after) is None


def test_no_capability_at_all():
    assert parse_capability(None) is None
    assert parse_capability("") is None
