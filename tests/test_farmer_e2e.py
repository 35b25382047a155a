"""End to end: ``downstream-farmer`` as a subprocess against the real daemon (``twistd -n
downstream``), on SQLite and on MariaDB/MySQL. One farmer farms both protocols of one node (v0 on an
added file, v1 on the seeded pool), with a signed token (SQLite) or without (MySQL), across a
restart of the node and a restart of the farmer, and no contract is dropped; a farmer whose chunk
file is deleted is failed by the node for that contract, and goes on farming the others.

Every wait is bounded polling of the node's HTTP status (never a fixed sleep for a timer).
"""

from __future__ import annotations

import hashlib
import json
import os
import ssl
import subprocess
import sys
import urllib.request

import pytest

from support import ADDRESS, MYSQL_SKIP_REASON, MYSQL_URL, fresh_mysql_database, make_address, wait_until
from support.daemon import Daemon, daemon_env
from support.farmer import FarmerProcess
from support.tls import self_signed
from support.v1 import SIG_MESSAGE, SIGNATURE

pytestmark = pytest.mark.e2e

ADMIN = [sys.executable, "-c", "from downstream_tx.admin import entry; entry()"]
INTERVAL = 5
CHUNK = 16384
V0_SIZE = 40_000


def database(name: str, tmp_path) -> list[str]:
    """The daemon's database options for an engine."""
    if name == "sqlite":
        return ["--db", "sqlite:///" + str(tmp_path / "node" / "downstream.db")]
    if not MYSQL_URL:
        pytest.skip(MYSQL_SKIP_REASON)
    fresh_mysql_database(MYSQL_URL)
    return ["--db", MYSQL_URL]


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def engine(request, tmp_path):
    return database(request.param, tmp_path)


def node_args(tmp_path, engine: list[str], *extra: str) -> list[str]:
    return ["--data-dir", str(tmp_path / "node" / "data"), "--tick", "0.2", "--seeded-interval", str(INTERVAL),
            "--seeded-pool", f"{CHUNK}:6", "--seeded-challenges", "200", "--max-tokens-per-ip", "0", *engine, *extra]


def get(url: str, context: ssl.SSLContext | None = None) -> dict:
    with urllib.request.urlopen(url, timeout=10, context=context) as r:
        return json.loads(r.read())


def shown(node: Daemon, token: str, context: ssl.SSLContext | None = None) -> dict:
    farmer_id = hashlib.sha256(bytes.fromhex(token)).hexdigest()[:20]
    return get(f"{node.url}/api/downstream/v1/status/show/{farmer_id}", context)


def token_of(farmer: FarmerProcess, url: str) -> str:
    history = json.loads((farmer.workdir / "data" / "history.json").read_text())
    return history["nodes"][url]["token"]


def passes(node: Daemon, token: str) -> tuple[int, int]:
    """(v1 heartbeats, v0 passes) the node counted for the farmer."""
    s = shown(node, token)
    return s["heartbeats"], s["audits"]["passes"] - s["heartbeats"]


@pytest.mark.slow
@pytest.mark.parametrize("name, signed", [("sqlite", True), pytest.param("mysql", False, marks=pytest.mark.mysql)],
                         ids=["sqlite-signed", "mysql-unsigned"])
def test_both_protocols_across_node_and_farmer_restarts(tmp_path, name, signed):
    engine = database(name, tmp_path)
    # (the identity file's message names no node: this node accepts any signed message)
    signing = ["--require-signature", "true", "--signature-names-node", "false"]
    port_args = node_args(tmp_path, engine, *(signing if signed else []))
    node = Daemon(tmp_path / "node", port_args).start()
    farmer = None
    try:
        added = subprocess.run(ADMIN + engine[:2] + ["--data-dir", str(tmp_path / "node" / "data"), "file", "add",
                                                     _random_file(tmp_path), "--redundancy", "1", "--interval",
                                                     str(INTERVAL)], env=daemon_env(), capture_output=True,
                               text=True, timeout=60)
        assert added.returncode == 0, added.stderr
        farmer = FarmerProcess(tmp_path / "farmer", [node.url, "--size", str(4 * CHUNK + V0_SIZE)])
        (farmer.workdir / "data").mkdir(parents=True)
        if signed:  # the address and its signed message from the identity file (0.1.8's format)
            (farmer.workdir / "data" / "identities.json").write_text(json.dumps(
                {ADDRESS: {"message": SIG_MESSAGE, "signature": SIGNATURE}}))
        farmer.start([] if signed else ["--address", make_address(3)])
        wait_until(lambda: (farmer.workdir / "data" / "history.json").exists(), 60, "given a token")
        token = token_of(farmer, node.url)

        def farmed(v1: int, v0: int):
            return lambda: (lambda p: p[0] >= v1 and p[1] >= v0)(passes(node, token))

        wait_until(farmed(8, 1), 90, "farming both protocols")
        held = {(c["protocol"], c["id"]) for c in farmer.state()["contracts"]}
        assert len(held) == 5 and {p for p, _ in held} == {"v0", "v1"}

        # the node restarts on the same port and database: the farmer waits, then goes on
        assert node.stop() == 0
        node = Daemon(tmp_path / "node-again", port_args, listen=f"tcp:{node.port}:interface=127.0.0.1").start()
        before = passes(node, token)
        wait_until(farmed(before[0] + 8, before[1] + 2), 90, "farming after the node's restart")

        # the farmer restarts (SIGTERM: exit 0), from its files: no new token, no new contract
        assert farmer.stop() == 0
        farmer.start()
        before = passes(node, token)
        wait_until(farmed(before[0] + 8, before[1] + 2), 90, "farming after the farmer's restart")
        assert farmer.stop() == 0

        assert {(c["protocol"], c["id"]) for c in farmer.state()["contracts"]} == held
        assert not [m for m in farmer.messages() if " ended: " in m or " not taken" in m], farmer.text()[-3000:]
        assert not farmer.messages("error") and not farmer.messages("critical"), farmer.text()[-3000:]
        new_tokens = [m for m in farmer.messages() if "new token" in m]
        assert len(new_tokens) == 1 and token not in farmer.text()  # the token is never logged
        v1, v0 = passes(node, token)
        assert v1 + v0 == farmer.answered()  # every answer the farmer counted, the node counted
        status = shown(node, token)
        assert status["contracts"] == 5 and status["online"] is True  # every contract, all alive
    finally:
        if farmer is not None:
            farmer.kill()
        node.stop()


def test_a_deleted_chunk_is_failed_by_the_node_not_by_a_crash_of_the_farmer(tmp_path, engine):
    node = Daemon(tmp_path / "node", node_args(tmp_path, engine, "--containment-retries", "0")).start()
    address = make_address(7)
    farmer = None
    try:
        farmer = FarmerProcess(tmp_path / "farmer", [node.url, "--address", address, "--protocol", "v1", "--size",
                                                     str(3 * CHUNK), "--chunk-retry", "300"]).start()
        wait_until(lambda: (farmer.workdir / "data" / "history.json").exists(), 60, "given a token")
        token = token_of(farmer, node.url)
        wait_until(lambda: shown(node, token)["heartbeats"] >= 3, 60, "farming")
        [directory] = [p for p in (farmer.workdir / "data" / "chunks").iterdir() if p.is_dir()]
        victim = sorted(p for p in directory.iterdir() if p.suffix == ".chunk")[0]
        cid = int(victim.stem.split("-")[1])
        os.unlink(victim)
        wait_until(lambda: shown(node, token)["audits"]["misses"] >= 1, 60, "a miss counted by the node")
        ask = get(f"{node.url}/api/downstream/v1/challenge/{token}/{cid}")
        assert ask == {"challenges": [{"file_hash": cid, "error": "contract expired"}]}
        before = shown(node, token)["heartbeats"]
        wait_until(lambda: shown(node, token)["heartbeats"] >= before + 4, 60, "the other contracts still farmed")
        assert farmer.proc.poll() is None  # still running
        assert farmer.stop() == 0
        said = " ".join(farmer.messages("error"))
        assert f"contract {cid}: the chunk file is missing; it will not be answered" in said
        assert shown(node, token)["audits"]["fails"] == 0  # no proof it could not back was sent
    finally:
        if farmer is not None:
            farmer.kill()
        node.stop()


def _random_file(tmp_path) -> str:
    path = tmp_path / "v0-chunk.bin"
    path.write_bytes(os.urandom(V0_SIZE))  # stored encrypted (AES-CTR): the same size
    return str(path)


def test_a_tls_node_with_a_certificate_of_its_own_is_farmed_with_ssl_no_verify(tmp_path):
    key, cert = self_signed(tmp_path)
    listen = f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    args = node_args(tmp_path, database("sqlite", tmp_path))
    with Daemon(tmp_path / "node", args, listen=listen, scheme="https") as node:
        strict = FarmerProcess(tmp_path / "strict", [node.url, "--address", ADDRESS, "--protocol", "v1"]).start()
        try:
            wait_until(lambda: "could not be verified" in strict.text(), 60, "told the certificate is not trusted")
            assert "--ssl-no-verify accepts any certificate" in strict.text()
            assert strict.stop() == 0
        finally:
            strict.kill()
        farmer = FarmerProcess(tmp_path / "farmer", [node.url, "--address", ADDRESS, "--protocol", "v1",
                                                     "--size", str(2 * CHUNK), "--ssl-no-verify"]).start()
        try:
            wait_until(lambda: (farmer.workdir / "data" / "history.json").exists(), 60, "given a token")
            token = token_of(farmer, node.url)
            context = ssl.create_default_context(cafile=str(cert))
            wait_until(lambda: shown(node, token, context)["heartbeats"] >= 2, 60, "farming over TLS")
            assert farmer.stop() == 0
        finally:
            farmer.kill()
