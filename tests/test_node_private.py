"""The node's private functions (library API), on SQLite and MariaDB."""

import hashlib
import os

import pytest

from downstream_tx.errors import NodeError
from downstream_tx.heartbeat import hashchal
from support import ADDRESS, make_address, make_config, make_node, run


def err(coro) -> NodeError:
    with pytest.raises(NodeError) as e:
        run(coro)
    return e.value


@pytest.fixture
def chunk(tmp_path):
    path = tmp_path / "chunk.bin"
    path.write_bytes(os.urandom(50_000))
    return path


# --- tokens -------------------------------------------------------------------------------------

def test_create_token_stores_only_its_hash(node):
    token = run(node.v0.create_token(ADDRESS))
    assert len(token) == 32 and int(token, 16) >= 0 and token == token.lower()
    digest = hashlib.sha256(bytes.fromhex(token)).digest()
    assert run(node.stores.tokens.get(digest)).farmer_id == digest.hex()[:20]
    assert run(node.stores.tokens.count()) == 1
    dump = run(node.stores.meta.snapshot())["tokens"]
    assert token not in repr(dump) and bytes.fromhex(token) not in repr(dump).encode()


@pytest.mark.parametrize("address", ["", "1BoatSLRHtKNngkdXEeobR76b53LETtpyX", "mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn",
                                     "x" * 200, "19qVgG8C6eXwKMMyvVegsi3xCsKyk3Z3jW"])
def test_create_token_rejects_invalid_addresses(node, address):
    e = err(node.v0.create_token(address))
    assert (e.kind, e.status) == ("invalid", "invalid_address")
    assert run(node.stores.tokens.count()) == 0


def test_whitelist_and_minimum_balance(tmp_path, db_url, clock):
    node = make_node(make_config(tmp_path, db_url, whitelist=True, min_balance=100), clock)
    rich, poor, stranger = make_address(1), make_address(2), make_address(3)
    assert run(node.farmers.import_whitelist([(rich, 100), (poor, 99)])) == {"added": 2, "updated": 0, "removed": 0}
    assert run(node.v0.create_token(rich))
    assert err(node.v0.create_token(poor)).status == "not_whitelisted"
    assert err(node.v0.create_token(stranger)).status == "not_whitelisted"
    # additive import updates the balance
    assert run(node.farmers.import_whitelist([(poor, 150)]))["updated"] == 1
    assert run(node.v0.create_token(poor))
    node.db.close()


def test_whitelist_replace_ends_contracts_and_keeps_history(tmp_path, db_url, clock, chunk):
    node = make_node(make_config(tmp_path, db_url, whitelist=True, min_balance=0), clock)
    a, b = make_address(1), make_address(2)
    run(node.farmers.import_whitelist([(a, 1), (b, 1)]))
    token = run(node.v0.create_token(b))
    run(node.files.add(str(chunk), 1, 60))
    run(node.v0.get_chunk(token))
    assert run(node.farmers.import_whitelist([(a, 1)], replace=True))["removed"] == 1
    assert err(node.v0.create_token(b)).status == "not_whitelisted"
    assert err(node.v0.due(token)).status == "no_token"
    assert [c["state"] for c in run(node.stores.contracts.all())] == ["ended"]
    assert [f["replicas"] for f in run(node.files.list())] == [0]
    assert run(node.stores.tokens.whitelist_size()) == 2  # history kept
    node.db.close()


def test_import_whitelist_rejects_bad_rows_and_changes_nothing(node):
    assert err(node.farmers.import_whitelist([(ADDRESS, 1), ("nope", 1)])).status == "invalid_address"
    assert err(node.farmers.import_whitelist([(ADDRESS, -1)])).status == "invalid_balance"
    assert run(node.stores.tokens.whitelist_size()) == 0


def test_per_address_and_per_ip_limits(tmp_path, db_url, clock):
    node = make_node(make_config(tmp_path, db_url, max_tokens_per_address=2, max_tokens_per_ip=3), clock)
    run(node.v0.create_token(ADDRESS, ip="10.0.0.1"))
    run(node.v0.create_token(ADDRESS, ip="10.0.0.1"))
    assert err(node.v0.create_token(ADDRESS, ip="10.0.0.2")).status == "limit_reached"
    run(node.v0.create_token(make_address(5), ip="10.0.0.1"))
    e = err(node.v0.create_token(make_address(6), ip="10.0.0.1"))
    assert (e.kind, e.status) == ("limit", "limit_reached")
    assert "IP Disallowed" in e.message
    assert run(node.v0.create_token(make_address(6), ip="10.0.0.9"))
    # raw IPs are not stored
    assert run(node.stores.tokens.count("10.0.0.1")) == 0
    node.db.close()


def test_delete_token_ends_contracts_and_frees_files(node, chunk):
    token = run(node.v0.create_token(ADDRESS))
    file_hash = run(node.files.add(str(chunk), 1, 60))
    assert run(node.v0.get_chunk(token)).file_hash == file_hash
    assert run(node.farmers.delete_token(token)) == 1
    assert err(node.v0.due(token)).status == "no_token"
    assert err(node.farmers.delete_token(token)).status == "no_token"
    other = run(node.v0.create_token(make_address(9)))
    assert run(node.v0.get_chunk(other)).file_hash == file_hash  # back in the pool


def test_delete_token_bad_input(node):
    assert err(node.farmers.delete_token("zz" * 16)).status == "invalid_token"
    assert err(node.farmers.delete_token("ab" * 17)).status == "invalid_token"
    assert err(node.farmers.delete_token("ab " * 10 + "ab")).status == "invalid_token"


# --- files ----------------------------------------------------------------------------------------

def test_add_file_encrypts_hashes_and_generates_challenges(node, chunk):
    file_hash = run(node.files.add(str(chunk), 3, 60))
    stored = node.chunks.path_for(file_hash)
    data = open(stored, "rb").read()
    assert hashlib.sha256(data).hexdigest() == file_hash
    assert data != chunk.read_bytes() and len(data) == len(chunk.read_bytes())
    assert oct(os.stat(stored).st_mode & 0o777) == "0o600"
    [row] = run(node.files.list())
    assert (row["file_hash"], row["redundancy"], row["interval"], row["replicas"], row["encrypted"]) == \
        (file_hash, 3, 60, 0, True)
    assert row["unused_challenges"] == node.config.challenge_batch
    # every stored answer is the HMAC of the stored bytes keyed by the seed
    seeds = run(node.stores.challenges.stored())
    for seed, answer in seeds[:5]:
        assert hashchal.answer(bytes(seed), data) == answer
    # export gives the original bytes back
    out = chunk.parent / "out.bin"
    assert run(node.files.export(file_hash, str(out))) == len(data)
    assert out.read_bytes() == chunk.read_bytes()


def test_add_file_metadisk_stores_bytes_as_given(node, chunk):
    file_hash = run(node.files.add(str(chunk), 1, 10, metadisk=True))
    assert file_hash == hashlib.sha256(chunk.read_bytes()).hexdigest()
    assert open(node.chunks.path_for(file_hash), "rb").read() == chunk.read_bytes()


def test_add_file_errors_change_nothing(tmp_path, db_url, clock, chunk):
    node = make_node(make_config(tmp_path, db_url, max_file_size=1000), clock)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    big = tmp_path / "big"
    big.write_bytes(b"x" * 1001)
    small = tmp_path / "small"
    small.write_bytes(b"y" * 1000)
    assert err(node.files.add(str(empty), 1, 60)).status == "empty_file"
    assert err(node.files.add(str(big), 1, 60)).status == "file_too_large"
    assert err(node.files.add(str(tmp_path / "missing"), 1, 60)).status == "invalid_path"
    assert err(node.files.add(str(tmp_path), 1, 60)).status == "invalid_path"
    assert err(node.files.add(str(small), 0, 60)).status == "invalid_redundancy"
    assert err(node.files.add(str(small), 1, 0)).status == "invalid_interval"
    if os.geteuid() != 0:
        small.chmod(0)
        assert err(node.files.add(str(small), 1, 60)).status == "unreadable"
        small.chmod(0o600)
    assert run(node.stores.files.count()) == 0
    assert [p for p in os.listdir(node.chunks.root)] == []
    first = run(node.files.add(str(small), 1, 60))
    e = err(node.files.add(str(small), 1, 60))  # same bytes, encrypted with another key: still a duplicate
    assert (e.kind, e.status) == ("conflict", "duplicate") and first in e.message
    assert err(node.files.add(str(small), 1, 60, metadisk=True)).status == "duplicate"
    assert run(node.stores.files.count()) == 1
    assert sorted(os.listdir(node.chunks.root)) == [first[:2]]
    node.db.close()


def test_remove_file(node, chunk):
    token = run(node.v0.create_token(ADDRESS))
    file_hash = run(node.files.add(str(chunk), 1, 60))
    run(node.v0.get_chunk(token))
    assert run(node.files.remove(file_hash)) == 1
    assert not os.path.exists(node.chunks.path_for(file_hash))
    assert run(node.files.list()) == []
    assert err(node.files.remove(file_hash)).status == "no_hash"
    assert err(node.files.remove("nothex")).status == "invalid_hash"
    assert err(node.v0.get_chunk(token)).status == "no_chunks"
    # the same bytes can be added again after removal
    assert run(node.files.add(str(chunk), 1, 60))


def test_gen_challenges_matches_spec_and_is_reproducible(node, chunk):
    file_hash = run(node.files.add(str(chunk), 1, 60, metadisk=True))
    root_seed = bytes(range(32))
    batch = run(node.files.generate_challenges(file_hash, root_seed, 7))
    seeds = hashchal.derive_seeds(node.keys.secret, root_seed, 7)
    answers = [hashchal.answer(s, chunk.read_bytes()) for s in seeds]
    assert batch["count"] == 7 and batch["root_seed"] == root_seed.hex()
    assert batch["merkle_root"] == hashchal.merkle_root(seeds, answers).hex()
    stored = run(node.stores.challenges.stored(batch["batch_id"]))
    assert stored == list(zip(seeds, answers))
    # same root seed again: stored once
    assert run(node.files.generate_challenges(file_hash, root_seed, 7))["batch_id"] == batch["batch_id"]
    assert err(node.files.generate_challenges(file_hash, b"short", 7)).status == "invalid_root_seed"
    assert err(node.files.generate_challenges(file_hash, None, 0)).status == "invalid_count"
    assert err(node.files.generate_challenges("0" * 64)).status == "no_hash"


def test_update_challenges_one_pass(node, chunk, clock):
    token = run(node.v0.create_token(ADDRESS))
    run(node.files.add(str(chunk), 1, 60))
    first = run(node.v0.get_chunk(token))
    clock.advance(60)
    result = run(node.supply.issue_due())
    assert (result.issued, result.missed, result.failed) == (1, 1, 0)
    assert run(node.supply.issue_due()).issued == 0  # idempotent: nothing due twice
    _, due = run(node.v0.due(token))
    assert due[0]["challenge"] != first.challenge and due[0]["deadline"] == first.deadline + 60


def test_challenges_top_up_under_low_water(tmp_path, db_url, clock, chunk):
    node = make_node(make_config(tmp_path, db_url, challenge_batch=5, challenge_low_water=3), clock)
    run(node.files.add(str(chunk), 4, 60))
    for i in range(3):
        run(node.v0.get_chunk(run(node.v0.create_token(make_address(i)))))
    # the third assignment left 2 < 3 unused: a new batch of 5 was generated at once
    assert run(node.stores.challenges.counts()) == {"batches": 2, "unused": 7}
    clock.advance(60)
    assert run(node.supply.issue_due()).issued == 3  # 4 left: over the mark, no new batch
    assert run(node.stores.challenges.counts())["batches"] == 2
    clock.advance(60)
    result = run(node.supply.issue_due())  # takes 3 of 4: under the mark again
    assert (result.issued, result.starved) == (3, 0)
    assert run(node.stores.challenges.counts())["batches"] == 3
    node.db.close()


def test_starved_contracts_get_a_challenge_after_the_top_up(tmp_path, db_url, clock, chunk):
    node = make_node(make_config(tmp_path, db_url, challenge_batch=2, challenge_low_water=0), clock)
    run(node.files.add(str(chunk), 3, 60))
    tokens = [run(node.v0.create_token(make_address(i))) for i in range(2)]
    for token in tokens:
        run(node.v0.get_chunk(token))
    # both challenges used; low water 0 means no top-up until a contract starves
    clock.advance(60)
    result = run(node.supply.issue_due())
    assert result.issued == 2 and result.starved == 0
    assert [c for c in run(node.stores.contracts.all()) if c["challenge_id"] is None] == []
    node.db.close()


def test_node_secret_kept_across_restarts(tmp_path, db_url, clock):
    config = make_config(tmp_path, db_url)
    first = make_node(config, clock)
    secret = first.keys.secret
    first.db.close()
    second = make_node(config, clock)
    assert second.keys.secret == secret and len(secret) == 32
    second.db.close()


def test_farmer_show(node, chunk):
    token = run(node.v0.create_token(ADDRESS))
    run(node.files.add(str(chunk), 1, 60))
    run(node.v0.get_chunk(token))
    farmer_id = hashlib.sha256(bytes.fromhex(token)).hexdigest()[:20]
    shown = run(node.farmers.show(farmer_id))
    assert shown["address"] == ADDRESS and shown["contracts"]["active"] == 1
    assert token not in repr(shown)
    assert err(node.farmers.show("0" * 20)).status == "no_farmer"
    assert err(node.farmers.show("xyz")).status == "invalid_farmer_id"


def test_assignment_respects_redundancy(node, chunk):
    run(node.files.add(str(chunk), 2, 60))
    tokens = [run(node.v0.create_token(make_address(i))) for i in range(3)]
    assert run(node.v0.get_chunk(tokens[0]))
    assert err(node.v0.get_chunk(tokens[0])).status == "no_chunks"  # already holds it
    assert run(node.v0.get_chunk(tokens[1]))
    assert err(node.v0.get_chunk(tokens[2])).status == "no_chunks"  # target reached
    assert [f["replicas"] for f in run(node.files.list())] == [2]
    assert [c["state"] for c in run(node.stores.contracts.all())].count("active") == 2
