"""Abuse through the routes: replayed answers, one farmer reaching for another's contracts, path
traversal on downloads and on admin file paths, and body size caps on the real daemon."""

from __future__ import annotations

import hashlib
import http.client
import os
import socket

import orjson
import pytest

from support import (
    ADDRESS,
    StubClient,
    add_test_file,
    contract_row,
    make_address,
    make_config,
    make_node,
    make_resource,
    run,
    snapshot,
    stored_bytes,
    token_row,
    v0_answer,
)
from support.admin import cli
from support.daemon import Daemon
from support.v1 import V1, answer, chunks, prove

# --- v0 ---------------------------------------------------------------------------------------------

@pytest.fixture
def v0(tmp_path, db_url, clock):
    config = make_config(tmp_path, db_url, max_tokens_per_ip=0)
    node = make_node(config, clock)
    yield node, StubClient(make_resource(node, config))
    node.db.close()


def v0_token(client, address=ADDRESS) -> str:
    r = client.get(f"/api/downstream/new/{address}")
    assert r.code == 200, r
    return r.json()["token"]


def test_v0_a_pass_counts_once_and_an_old_answer_fails_the_next_challenge(v0, tmp_path, clock):
    node, client = v0
    file_hash = add_test_file(node, tmp_path, interval=60)
    token = v0_token(client)
    challenge = client.get(f"/api/downstream/chunk/{token}").json()["challenge"]
    right = v0_answer(stored_bytes(node, file_hash), challenge)
    path = f"/api/downstream/challenge/{token}/{file_hash}/{right}"
    assert client.get(path).json() == {"status": "pass"}
    for _ in range(3):  # replays
        assert client.get(path).code == 409
    assert contract_row(node, token, file_hash)["passes"] == 1

    clock.advance(60)  # challenge k+1 is issued
    run(node.supply.issue_due())
    [due] = client.get(f"/api/downstream/due/{token}").json()["due_contracts"]
    assert due["challenge"] != challenge
    r = client.get(path)  # the answer to challenge k, offered for challenge k+1
    assert (r.code, r.json()) == (200, {"status": "fail"})
    row = contract_row(node, token, file_hash)
    assert (row["passes"], row["fails"]) == (1, 1)
    assert client.get(path).code == 409  # and it was the one attempt


def test_v0_one_farmer_cannot_touch_anothers_contract(v0, tmp_path):
    node, client = v0
    file_hash = add_test_file(node, tmp_path, redundancy=1)
    alice, mallory = v0_token(client), v0_token(client, make_address(1))
    challenge = client.get(f"/api/downstream/chunk/{alice}").json()["challenge"]
    right = v0_answer(stored_bytes(node, file_hash), challenge)
    client.get(f"/api/downstream/due/{mallory}")  # her own last_seen is recorded (and not again for a while)
    before = snapshot(node)

    r = client.get(f"/api/downstream/challenge/{mallory}/{file_hash}/{right}")
    assert (r.code, r.json()["status"]) == (404, "no_hash")
    for method in ("GET", "DELETE"):
        r = client.request(method, f"/api/downstream/remove/{mallory}/{file_hash}")
        assert (r.code, r.json()["status"]) == (404, "no_hash")
    assert client.get(f"/api/downstream/due/{mallory}").json() == {"all_contracts": [], "due_contracts": []}
    assert client.get(f"/api/download/{file_hash}").code == 404  # the bytes are for contract holders only
    assert snapshot(node) == before
    # alice's contract is intact and still answerable by her
    assert client.get(f"/api/downstream/challenge/{alice}/{file_hash}/{right}").json() == {"status": "pass"}


# --- v1 ---------------------------------------------------------------------------------------------

@pytest.fixture
def v1(v1_node_api):
    return v1_node_api


def v1_heartbeats(node, token: str) -> int:
    return token_row(node, token).hbcount


def test_v1_an_ok_counts_once_and_a_proof_cannot_answer_the_next_challenge(v1, clock):
    node, api = v1
    token = api.new_token()
    a, b = chunks(api, token, 8192)
    proof_a = prove(a)
    assert answer(api, token, [(a["file_hash"], proof_a)])[1] == {"report": [{"file_hash": a["file_hash"],
                                                                               "status": "ok"}]}
    for _ in range(3):
        assert answer(api, token, [(a["file_hash"], proof_a)])[1] == {
            "report": [{"file_hash": a["file_hash"], "error": "Challenge already answered."}]}
    # the same proof twice in one batch counts once
    code, body = answer(api, token, [(b["file_hash"], prove(b)), (b["file_hash"], prove(b))])
    assert body == {"report": [{"file_hash": b["file_hash"], "status": "ok"}]}
    assert v1_heartbeats(node, token) == 2

    clock.advance(61)  # past due: the next challenge (k+1) is issued on request
    code, body = api.post(f"{V1}/challenge/{token}", {"hashes": [a["file_hash"]]})
    [entry] = body["challenges"]
    assert entry["challenge"] != a["challenge"] and entry["answered"] is False
    # the proof for challenge k offered for challenge k+1
    assert answer(api, token, [(a["file_hash"], proof_a)])[1] == {
        "report": [{"file_hash": a["file_hash"], "error": "Invalid proof"}]}
    # a proof for another contract's challenge does not answer this one either
    code, body = api.post(f"{V1}/challenge/{token}", {"hashes": [b["file_hash"]]})
    [entry_b] = body["challenges"]
    assert answer(api, token, [(a["file_hash"], prove(b, entry_b["challenge"]))])[1]["report"][0]["error"] in (
        "Invalid proof", "Challenge already answered.")
    assert v1_heartbeats(node, token) == 2


def test_v1_one_farmer_cannot_touch_anothers_contracts(v1):
    node, api = v1
    alice, mallory = api.new_token(), api.new_token(make_address(1))
    theirs = chunks(api, alice, 8192)
    ids = [c["file_hash"] for c in theirs]
    assert api.get(f"{V1}/challenge/{mallory}") == (200, {"challenges": []})  # her own last_seen is recorded
    before = snapshot(node)
    not_found = [{"file_hash": i, "error": "contract not found"} for i in ids]

    assert api.post(f"{V1}/challenge/{mallory}", {"hashes": ids}) == (200, {"challenges": not_found})
    assert api.get(f"{V1}/challenge/{mallory}/{ids[0]}") == (200, {"challenges": not_found[:1]})
    assert api.get(f"{V1}/challenge/{mallory}") == (200, {"challenges": []})
    proofs = [(c["file_hash"], prove(c)) for c in theirs]  # even with alice's valid proofs
    assert answer(api, mallory, proofs) == (200, {"report": not_found})
    assert api.post(f"{V1}/answer/{mallory}/{ids[0]}", {"proof": proofs[0][1]}) == (200, {"report": not_found[:1]})
    assert api.get(f"{V1}/tags/{mallory}") == (200, {"tags": []})
    assert snapshot(node) == before
    assert v1_heartbeats(node, alice) == 0
    # alice's contracts still answer for her
    assert [r.get("status") for r in answer(api, alice, proofs)[1]["report"]] == ["ok", "ok"]


# --- the real daemon: traversal on downloads, body caps ------------------------------------------------

CAP = 4096


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    work = tmp_path_factory.mktemp("abuse")
    (work / "secret.txt").write_text("root:x:0:0:secret\n")
    chunk = work / "chunk.bin"
    chunk.write_bytes(os.urandom(2048))
    added = cli(work, "file", "add", str(chunk), "--redundancy", "1", "--interval", "60")
    assert added.returncode == 0, added.stderr
    with Daemon(work / "run", ["--data-dir", str(work / "data"), "--max-body-size", str(CAP),
                               "--max-batch-body-size", str(CAP), "--seeded-pool", "4096:1",
                               "--seeded-challenges", "4"]) as d:
        token = orjson.loads(raw_request(d, "GET", f"/api/downstream/new/{ADDRESS}".encode())[2])["token"]
        url = orjson.loads(raw_request(d, "GET", f"/api/downstream/chunk/{token}".encode())[2])["url"]
        assert url.startswith(f"{d.url}/api/download/{added.stdout.strip()}?cap="), url
        yield d, url.removeprefix(d.url), work


def raw_request(d: Daemon, method: str, target: bytes, headers: dict[str, str] | None = None,
                body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """One request with the target sent byte for byte (no client-side normalisation)."""
    head = [b"%s %s HTTP/1.1" % (method.encode(), target), b"Host: 127.0.0.1", b"Connection: close"]
    head += [f"{k}: {v}".encode() for k, v in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", d.port), timeout=10) as s:
        s.sendall(b"\r\n".join(head) + b"\r\n\r\n" + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    header_text, _, payload = rest.partition(b"\r\n\r\n")
    headers_out = {}
    for line in header_text.split(b"\r\n"):
        k, _, v = line.partition(b":")
        headers_out[k.strip().lower().decode()] = v.strip().decode()
    if headers_out.get("transfer-encoding") == "chunked":
        decoded, buf = b"", payload
        while buf:
            size_text, _, buf = buf.partition(b"\r\n")
            size = int(size_text, 16)
            if size == 0:
                break
            decoded, buf = decoded + buf[:size], buf[size + 2:]
        payload = decoded
    return int(status_line.split()[1]), headers_out, payload


TRAVERSALS = [
    b"/api/download/../../etc/passwd", b"/api/download/..%2f..%2fetc%2fpasswd",
    b"/api/download/%2e%2e%2f%2e%2e%2fetc%2fpasswd", b"/api/download/%2e%2e/%2e%2e/etc/passwd",
    b"/api/download/..\\..\\etc\\passwd", b"/api/download/..%5c..%5cetc%5cpasswd", b"/api/download/%00",
    b"/api/download/..%00", b"/api/download/%2fetc%2fpasswd", b"/api/download//etc/passwd",
    b"/api/download/" + b"../" * 12 + b"secret.txt", b"/api/download/%252e%252e%252fsecret.txt",
    b"/api/download/..%c0%af..%c0%afetc%c0%afpasswd", b"/api/download/" + b"a" * 64 + b"/../../../etc/passwd",
    b"/api/download/" + b"a" * 64 + b"%00.bin", b"/api/download/~root", b"/../../etc/passwd",
]


@pytest.mark.e2e
@pytest.mark.parametrize("target", TRAVERSALS, ids=lambda t: t.decode("latin-1")[:60])
def test_download_path_traversal(daemon, target):
    d, download, _ = daemon
    code, headers, body = raw_request(d, "GET", target)
    assert 400 <= code < 500, (code, body[:200])
    assert headers["content-type"] == "application/json"
    assert orjson.loads(body)["status"] in ("invalid_hash", "no_hash", "not_found", "invalid_url"), body
    assert b"root:" not in body
    # the stored chunk itself is served only by its hash, to the holder of its contract's URL
    assert raw_request(d, "GET", download.encode())[0] == 200


@pytest.mark.e2e
@pytest.mark.parametrize("path", [f"{V1}/challenge/{'0' * 32}", f"{V1}/answer/{'0' * 32}",
                                  f"{V1}/answer/{'0' * 32}/1", f"{V1}/challenge/{'0' * 32}/1", f"{V1}/new/{ADDRESS}"])
@pytest.mark.parametrize("framing", ["content-length", "chunked", "gzip-bomb"])
def test_body_caps_on_v1_posts(daemon, path, framing):
    d, _, _ = daemon
    payload = b'{"hashes": [' + b"1," * CAP + b"1]}"
    if framing == "content-length":
        code, headers, body = raw_request(d, "POST", path.encode(), {"Content-Type": "application/json",
                                                                     "Content-Length": str(len(payload))}, payload)
        assert code == 413
    elif framing == "chunked":
        pieces = b"".join(b"%x\r\n%s\r\n" % (len(payload[i:i + 1000]), payload[i:i + 1000])
                          for i in range(0, len(payload), 1000)) + b"0\r\n\r\n"
        code, headers, body = raw_request(d, "POST", path.encode(), {"Content-Type": "application/json",
                                                                     "Transfer-Encoding": "chunked"}, pieces)
        assert code == 413
    else:  # a small gzip body that inflates past the cap is not inflated (it is read as the raw bytes)
        import gzip

        bomb = gzip.compress(b'{"proofs": [' + b" " * (CAP * 100) + b"]}")
        assert len(bomb) < CAP
        code, headers, body = raw_request(d, "POST", path.encode(), {"Content-Type": "application/json",
                                                                     "Content-Encoding": "gzip",
                                                                     "Content-Length": str(len(bomb))}, bomb)
        assert code in (200, 400), body
    assert headers["content-type"] == "application/json"
    parsed = orjson.loads(body)
    if code == 413:
        assert parsed["status"] == "too_large" and str(CAP) in parsed["message"]
    # the daemon is still serving
    assert raw_request(d, "GET", b"/health")[0] == 200


# --- downstream-admin file paths -------------------------------------------------------------------

def admin_state(tmp_path) -> tuple[str, list[str]]:
    listing = cli(tmp_path, "file", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    store = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "data").rglob("*")
                   if p.is_file() and "chunks" in p.parts)
    return listing.stdout, store


@pytest.mark.parametrize("bad_hash", ["../../etc/passwd", "/etc/passwd", "..", "a" * 63 + "/", "%2e%2e",
                                      "a" * 64 + "/../x", "\\..\\x"])
def test_admin_export_never_uses_the_hash_as_a_path(tmp_path, bad_hash):
    out = tmp_path / "out.bin"
    done = cli(tmp_path, "file", "export", bad_hash, str(out))
    assert done.returncode == 2, done.stderr
    assert "64 hexadecimal" in done.stderr
    assert not out.exists()


def test_admin_export_writes_only_where_the_operator_says(tmp_path):
    chunk = tmp_path / "c.bin"
    chunk.write_bytes(os.urandom(1000))
    file_hash = cli(tmp_path, "file", "add", str(chunk), "--redundancy", "1", "--interval", "60").stdout.strip()
    (tmp_path / "exists.bin").write_bytes(b"keep")
    done = cli(tmp_path, "file", "export", file_hash, str(tmp_path / "exists.bin"))
    assert done.returncode == 2 and "already exists" in done.stderr
    assert (tmp_path / "exists.bin").read_bytes() == b"keep"  # never overwritten
    done = cli(tmp_path, "file", "export", file_hash, str(tmp_path / "no" / "such" / "dir" / "x"))
    assert done.returncode == 2
    (tmp_path / "link").symlink_to(tmp_path / "target-does-not-exist")
    done = cli(tmp_path, "file", "export", file_hash, str(tmp_path / "link"))
    assert done.returncode == 2 and not (tmp_path / "target-does-not-exist").exists()  # O_EXCL: no follow
    done = cli(tmp_path, "file", "export", file_hash, str(tmp_path / "ok.bin"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "ok.bin").read_bytes() == chunk.read_bytes()
    assert oct((tmp_path / "ok.bin").stat().st_mode & 0o777) == "0o600"


def test_admin_add_refuses_what_is_not_a_regular_file(tmp_path):
    (tmp_path / "wl.csv").write_text("address,balance\n")
    assert cli(tmp_path, "whitelist", "import", str(tmp_path / "wl.csv")).returncode == 0  # a node, no files
    before = admin_state(tmp_path)
    (tmp_path / "dir").mkdir()
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "loop-a").symlink_to(tmp_path / "loop-b")
    (tmp_path / "loop-b").symlink_to(tmp_path / "loop-a")
    (tmp_path / "dangling").symlink_to(tmp_path / "nothing-here")
    (tmp_path / "empty").write_bytes(b"")
    cases = {"dir": "not a regular file", "fifo": "not a regular file", "loop-a": "symbolic links",
             "dangling": "No such file", "empty": "empty", "/dev/null": "not a regular file",
             "/nonexistent/x": "No such file"}
    for name, message in cases.items():
        path = name if name.startswith("/") else str(tmp_path / name)
        done = cli(tmp_path, "file", "add", path, "--redundancy", "1", "--interval", "60")
        assert done.returncode == 2, (name, done.returncode, done.stderr)
        assert message in done.stderr, (name, done.stderr)
        assert admin_state(tmp_path) == before, name


def test_http_clients_cannot_reach_files_by_name(v0, tmp_path):
    """The node serves only files it monitors, looked up by hash in the database (never a path
    built from the request): a hash that is a stored file's name but not monitored is a 404."""
    node, client = v0
    file_hash = add_test_file(node, tmp_path)
    run(node.files.remove(file_hash))
    assert client.get(f"/api/download/{file_hash}").code == 404
    fake = hashlib.sha256(b"x").hexdigest()
    os.makedirs(os.path.dirname(node.chunks.path_for(fake)), exist_ok=True)
    with open(node.chunks.path_for(fake), "wb") as f:
        f.write(b"planted")
    r = client.get(f"/api/download/{fake}")
    assert r.code == 404 and b"planted" not in r.body


def test_http_client_conn_smoke(daemon):
    """http.client (which normalises nothing either) sees JSON errors too."""
    d, _, _ = daemon
    conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=10)
    conn.request("GET", "/api/download/..%2f..%2fetc%2fpasswd")
    r = conn.getresponse()
    try:
        assert r.status == 404 and r.getheader("content-type") == "application/json"  # %2f splits the path
        assert orjson.loads(r.read())["status"] == "not_found"
    finally:
        conn.close()

