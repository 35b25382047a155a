"""contrib/published-client/shims: the old module names (heartbeat.Merkle, RandomIO, siggy) that
the published downstream-farmer 0.1.8 imports, on top of downstream_tx.  Checked here against the
spec vectors so the shims cannot drift from our library; the client itself is only run by
contrib/published-client/run.py (it needs PyPI)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

SHIMS = Path(__file__).resolve().parent.parent / "contrib" / "published-client" / "shims"


@pytest.fixture
def shims(monkeypatch):
    monkeypatch.syspath_prepend(str(SHIMS))
    old_names = ("heartbeat", "RandomIO", "siggy")
    for name in [m for m in sys.modules if m in old_names or m.startswith("heartbeat.")]:
        monkeypatch.delitem(sys.modules, name)
    heartbeat = importlib.import_module("heartbeat")
    randomio = importlib.import_module("RandomIO")
    siggy = importlib.import_module("siggy")
    assert Path(heartbeat.__file__).parent == SHIMS / "heartbeat"
    return heartbeat, randomio, siggy


def test_client_calls_on_the_merkle_shim_match_the_spec_vector(shims, tmp_path):
    heartbeat, randomio, _ = shims
    from downstream_tx.heartbeat import Merkle as OurMerkle
    from downstream_tx.heartbeat import RandomIO as OurRandomIO

    key, root = bytes(range(32)), bytes(range(32, 64))
    data = OurRandomIO("70aacdc6a2f7ef0e7c1effde27299eda", 1000).read()
    server = OurMerkle(0.1, key)
    tag, state = server.encode(OurRandomIO("70aacdc6a2f7ef0e7c1effde27299eda", 1000), n=4, seed=root, filesz=1000,
                               timestamp=1.0)
    challenge = server.gen_challenge(state)
    assert state.root.hex() == "6610f77e6fa28a2ca501d1ceddd669481f1ff60d5c426a22a1988a3e44b309ff"

    # what the client does with /new, /chunk and the chunk file (client.py, contract.py)
    hb = heartbeat.Merkle.Merkle.fromdict({"key": "", "check_fraction": 0.1})
    path = tmp_path / "1"
    randomio.RandomIO("70aacdc6a2f7ef0e7c1effde27299eda").genfile(1000, str(path))
    assert path.read_bytes() == data
    chal = hb.challenge_type().fromdict(challenge.to_dict())
    client_tag = hb.tag_type().fromdict(tag.to_dict())
    with open(path, "rb") as f:
        proof = hb.prove(f, chal, client_tag).todict()
    assert proof["leaf"] == {"index": 0, "blob": "OgKVRY/FIYC3sDLS8UYNFPT1DYQeamp17/yVamWU49g="}
    assert proof == server.prove(OurRandomIO("70aacdc6a2f7ef0e7c1effde27299eda", 1000), challenge, tag).to_dict()

    from downstream_tx.heartbeat import Proof

    assert server.verify(Proof.from_dict(proof), challenge, state)
    with pytest.raises(NotImplementedError):
        heartbeat.Swizzle.Swizzle.fromdict("x")


def test_siggy_shim(shims):
    _, _, siggy = shims
    sig = "HyzVUenXXo4pa+kgm1vS8PNJM83eIXFC5r0q86FGbqFcdla6rcw72/ciXiEPfjli3ENfwWuESHhv6K9esI0dl5I="
    assert siggy.SIGNATURE_LENGTH == 88
    assert siggy.verify_signature("test message", sig, "19qVgG8C6eXwKMMyvVegsi3xCsKyk3Z3jV")
    assert not siggy.verify_signature("test messagf", sig, "19qVgG8C6eXwKMMyvVegsi3xCsKyk3Z3jV")
    assert not siggy.verify_signature("test message", sig[:-1], "19qVgG8C6eXwKMMyvVegsi3xCsKyk3Z3jV")
    with pytest.raises(ValueError):  # like siggy (pycoin raises for a bad address)
        siggy.verify_signature("test message", sig, "19qVgG8C6eXwKMMyvVegsi3xCsKyk3Z3jW")
