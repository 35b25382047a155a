"""End to end: the real daemon with a 3 s interval, and a farmer that behaves like
downstream-farmer 0.1.8 (tests/farmer_v1.py), on SQLite and on MariaDB/MySQL."""

from __future__ import annotations

import http.client
import json
import urllib.request

import pytest

from support import ADDRESS
from support.daemon import Daemon
from support.farmer_v1 import Farmer

pytestmark = pytest.mark.e2e

INTERVAL = 3
CHUNK = 16384
HEARTBEATS_EACH = 5
CONTRACTS = 4


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200
        return json.loads(resp.read())


def test_farmer_018_heartbeats(tmp_path, daemon_db):
    args = ["--data-dir", str(tmp_path / "data"), "--tick", "0.2", "--seeded-interval", str(INTERVAL),
            "--seeded-pool", f"{CHUNK}:6", "--seeded-challenges", "16"] + daemon_db
    chunk_dir = tmp_path / "farmer"
    chunk_dir.mkdir()
    with Daemon(tmp_path / "node", args) as node:
        farmer = Farmer(node.url, ADDRESS, str(chunk_dir), desired_total=CONTRACTS * CHUNK)
        farmer.probe()
        farmer.connect()
        token = farmer.token
        farmer.connect()  # a restarted client recovers its heartbeat through /heartbeat/<token>
        assert farmer.token == token
        farmer.run(HEARTBEATS_EACH, timeout=35, min_contracts=CONTRACTS)

        assert farmer.dropped == []
        assert len(farmer.contracts) == CONTRACTS
        assert all(c.heartbeats >= HEARTBEATS_EACH for c in farmer.contracts.values())
        assert all(isinstance(fh, int) for fh in farmer.contracts)
        base = f"{node.url}/api/downstream/v1"
        shown = get_json(f"{base}/status/show/{farmer.farmer_id}")
        assert shown["heartbeats"] == farmer.heartbeats
        assert shown["online"] is True and shown["contracts"] == CONTRACTS
        tags = get_json(f"{base}/tags/{farmer.token}")["tags"]
        assert {t["file_hash"] for t in tags} == set(farmer.contracts)
        for t in tags:
            assert t["tag"] == farmer.contracts[t["file_hash"]].tag.to_dict()
        # the site refuses a body over max_batch_body_size (16 MiB on /answer) before reading it
        conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
        conn.putrequest("POST", f"/api/downstream/v1/answer/{farmer.token}")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(32 << 20))
        conn.endheaders()
        assert conn.getresponse().status == 413
        conn.close()
        print(f"\nend-to-end: {farmer.heartbeats} heartbeats on {len(farmer.contracts)} contracts, 0 dropped")
