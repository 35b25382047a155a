"""The vetting share under concurrent /chunk on MariaDB/MySQL: farmers not vetted yet never get more
than ``vetting_share`` of the newly assigned contracts, however their requests interleave, and the
counters match the contracts made."""

from __future__ import annotations

import pytest
import pytest_twisted
import treq
from twisted.internet import defer, endpoints

from downstream_tx.db import contracts, reputation
from downstream_tx.db.engine import create_engine
from downstream_tx.domain.scores import Tally
from downstream_tx.http.site import DownstreamSite
from support import (
    MYSQL_SKIP_REASON,
    MYSQL_URL,
    fresh_mysql_database,
    make_address,
    make_config,
    make_node,
    make_resource,
    race,
    run,
    upgraded_mysql_database,
)

pytestmark = [pytest.mark.mysql, pytest.mark.skipif(not MYSQL_URL, reason=MYSQL_SKIP_REASON)]

SHARE = 0.25

#: the write both racing transactions reach at the same moment
TAKE_SHARE = 'UPDATE vetting SET total = total * ? + 1, unvetted'


async def vet(node, address: str, passes: int) -> None:
    rules = node.stores.reputation.rules
    await node.db.run("vet", reputation.record_txn, rules, node.clock.seconds(), {address: Tally(passes=passes)})


@pytest_twisted.ensureDeferred
async def test_the_vetting_share_holds_under_concurrent_chunk_requests(tmp_path):
    from twisted.internet import reactor

    from downstream_tx.runtime import open_services

    fresh_mysql_database(MYSQL_URL)
    config = make_config(tmp_path, MYSQL_URL, max_tokens_per_ip=0, db_pool_size=5, vetting_audits=1,
                         vetting_share=SHARE)
    node = await open_services(config, reactor)
    port = None
    try:
        port = await endpoints.serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
            DownstreamSite(make_resource(node, config)))
        base = f"http://127.0.0.1:{port.getHost().port}"
        for i in range(40):
            path = tmp_path / f"chunk{i}.bin"
            path.write_bytes(bytes([i]) * 4096)
            await node.files.add(str(path), 1, 60)
        vetted = await node.v0.create_token(make_address(0))
        await vet(node, make_address(0), 1)
        newcomers = [await node.v0.create_token(make_address(i)) for i in range(1, 9)]

        async def ask(token: str) -> int:
            response = await treq.get(f"{base}/api/downstream/chunk/{token}", persistent=False)
            await response.content()
            return response.code

        asks = [vetted] * 12 + newcomers * 2
        codes = await defer.gatherResults([defer.ensureDeferred(ask(t)) for t in asks])
        assert set(codes) <= {200, 404}
        rows = await node.stores.contracts.all()
        total = len(rows)
        made = await node.farmers.page(0, 100)
        unvetted = sum(f.contracts_total for f in made if f.address != make_address(0))
        assert total == codes.count(200) and total >= 12
        assert 0 < unvetted <= SHARE * total
        counters = (await node.stores.reputation.vetting())[0]
        # (the counters forget 1/vetting_window per assignment: about the counts)
        assert counters == pytest.approx((float(total), float(unvetted)), rel=0.02)
    finally:
        if port is not None:
            await port.stopListening()
        node.db.close()




def test_two_unvetted_farmers_race_for_the_last_share(tmp_path, clock):
    upgraded_mysql_database(MYSQL_URL)
    node = make_node(make_config(tmp_path, MYSQL_URL, vetting_audits=1, vetting_share=0.3), clock)
    try:
        rules = node.stores.reputation.rules
        run(node.v0.create_token(make_address(0)))
        run(node.db.run("vet", reputation.record_txn, rules, clock.seconds(),
                        {make_address(0): Tally(passes=1)}))
        # 3 vetted assignments counted: one unvetted may come next ((0 + 1) <= 0.3 (3d + 1)), not a second
        # ((d + 1) > 0.3 ((3d + 1)d + 1)), d = 0.999 the counters keep per assignment
        run(node.db.run("count", lambda txn: txn.execute("UPDATE vetting SET total = 3 WHERE protocol = 0")))
        results = race(create_engine(MYSQL_URL), TAKE_SHARE,
                       {n: (lambda txn: reputation.take_share_txn(txn, rules, contracts.V0, False)) for n in (1, 2)})
        assert sorted(results.values(), key=str) == [False, True], results
        assert run(node.stores.reputation.vetting())[0] == pytest.approx((3 * 0.999 + 1, 1.0))
    finally:
        node.db.close()
