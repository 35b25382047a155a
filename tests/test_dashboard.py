"""The status dashboard over StubTreq on each engine: pages, headers, escaping, the numbers the
status API gives, sorting/paging/search, GeoIP locations, the per-hour history and its retention.
(The same pages in a real Chromium: tests/test_dashboard_browser.py.)"""

from __future__ import annotations

import hashlib
import html
import re

import pytest

from downstream_tx import geoip
from downstream_tx.db.history import HOUR, HourRow
from downstream_tx.errors import NodeError
from downstream_tx.jobs.history import HourlyResults, write_history
from downstream_tx.jobs.stats import stats_job
from downstream_tx.jobs.uptime import UptimeSummary
from downstream_tx.v0.hashes import parse_response
from support import make_address, run, token_row
from support.v1 import V1, answer, build, chunks, prove

EVIL = "<script>alert('x')</script>&\"<img src=x onerror=alert(1)>"
#: real addresses whose country geoip2fast's shipped data knows
UK_IP, US_IP, NL_IP = "81.2.69.142", "8.8.8.8", "193.0.6.139"


@pytest.fixture
def setup(tmp_path, db_url, clock):
    node, api = build(tmp_path, db_url, clock, seeded_pool="16384:2,4096:6", max_tokens_per_ip=0,
                      stats_interval=0.5)
    run(node.pool.refill())
    yield node, api
    node.db.close()


def farmer_id(token: str) -> str:
    return hashlib.sha256(bytes.fromhex(token)).hexdigest()[:20]


def raw_get(api, path, headers=None):
    resp = run(api.treq.request("GET", "http://node.test" + path, headers=headers or {}))
    return resp, run(resp.content()).decode("utf-8")


def value(page: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}" data-value="([^"]*)"', page)
    assert match, f"no #{element_id} on the page"
    return html.unescape(match.group(1))


def table_rows(page: str) -> list[dict[str, str]]:
    rows = []
    for m in re.finditer(r'<tr data-farmer-id="([^"]+)">(.*?)</tr>', page):
        cells = dict(re.findall(r'class="c-([a-z-]+)(?: hash)?"(?: data-value="([^"]*)")?', m.group(2)))
        rows.append({**{k: html.unescape(v) for k, v in cells.items()}, "id": html.unescape(m.group(1))})
    return rows


def three_farmers(api):
    t1, t2, t3 = (api.new_token(make_address(i)) for i in (1, 2, 3))
    got = chunks(api, t1, 20480)
    answer(api, t1, [(c["file_hash"], prove(c)) for c in got])
    [c] = chunks(api, t2, 4096)
    answer(api, t2, [(c["file_hash"], prove(c))])
    return t1, t2, t3


def test_root_and_every_json_route_answer_as_before(setup):
    node, api = setup
    for accept in ("*/*", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "application/json"):
        resp, body = raw_get(api, "/", {"Accept": accept})
        assert resp.code == 200 and resp.headers.getRawHeaders("content-type") == ["application/json"]
        assert body.startswith('{"name":"downstream-tx"')
    assert api.get(f"{V1}/") == (200, {"msg": "ok"})
    code, body = api.get(f"{V1}/status/list/", headers={"Accept": "text/html"})
    assert code == 200 and body == {"farmers": []}


def test_dashboard_shows_the_status_api_numbers(setup, clock):
    node, api = setup
    t1, t2, t3 = three_farmers(api)
    resp, page = raw_get(api, "/dashboard")
    assert resp.code == 200
    assert resp.headers.getRawHeaders("content-type") == ["text/html; charset=utf-8"]
    csp = resp.headers.getRawHeaders("content-security-policy")[0]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert resp.headers.getRawHeaders("x-content-type-options") == ["nosniff"]
    assert "<script>" not in page and " style=" not in page and "<style" not in page

    _, listed = api.get(f"{V1}/status/list/")
    _, online = api.get(f"{V1}/status/list/online/")
    assert value(page, "farmers-total") == str(len(listed["farmers"])) == "3"
    assert value(page, "farmers-online") == str(len(online["farmers"])) == "2"
    assert value(page, "farmers-active") == "2"
    assert value(page, "contracts-active") == "3"
    rows = {r["id"]: r for r in table_rows(page)}
    assert set(rows) == {f["id"] for f in listed["farmers"]}
    activity = {a.farmer_id: a for a in run(node.farmers.summaries(list(rows)))}
    for f in listed["farmers"]:
        r, a = rows[f["id"]], activity[f["id"]]
        assert (r["uptime"], r["contracts"], r["size"], r["online"]) == (
            str(f["uptime"]), str(f["contracts"]), str(f["size"]), "1" if f["online"] else "0")
        # passes, fails, misses and last seen as downstream-admin farmer list shows them (one definition)
        assert (r["passes"], r["fails"], r["misses"], r["last-seen"]) == (
            str(a.passes), str(a.fails), str(a.misses), f"{a.last_seen:.0f}")
        assert (r["standing"], r["audit"]) == ("vetting", f"{f['audit_score']:.6f}")
    # the farmer page equals /status/show
    _, shown = api.get(f"{V1}/status/show/{farmer_id(t1)}")
    resp, fpage = raw_get(api, f"/farmers/{farmer_id(t1)}")
    assert resp.code == 200
    assert value(fpage, "farmer-heartbeats") == str(shown["heartbeats"]) == "2"
    assert value(fpage, "farmer-contracts") == str(shown["contracts"]) == "2"
    assert value(fpage, "farmer-size") == str(shown["size"])
    assert value(fpage, "farmer-passes") == "2"
    assert fpage.count("<tr><td>") == 2  # its two active contracts in the at-risk table
    # no token, IP or node secret on any page
    for text in (page, fpage):
        for secret in (t1, t2, t3, node.keys.secret.hex(), "127.0.0.1"):
            assert secret not in text


def test_sorting_paging_and_search(setup):
    node, api = setup
    three_farmers(api)
    _, by_hb = api.get(f"{V1}/status/list/by/d/contracts")
    _, page = raw_get(api, "/dashboard?sort=contracts&order=desc")
    assert [r["id"] for r in table_rows(page)] == [f["id"] for f in by_hb["farmers"]]
    assert 'aria-sort="descending"' in page
    _, p0 = api.get(f"{V1}/status/list/by/address/2/0")
    _, p1 = api.get(f"{V1}/status/list/by/address/2/1")
    _, page0 = raw_get(api, "/dashboard?sort=address&limit=2")
    _, page1 = raw_get(api, "/dashboard?sort=address&limit=2&page=1")
    assert [r["id"] for r in table_rows(page0)] == [f["id"] for f in p0["farmers"]]
    assert [r["id"] for r in table_rows(page1)] == [f["id"] for f in p1["farmers"]]
    assert 'id="page-next"' in page0 and 'id="page-next"' not in page1 and 'id="page-prev"' in page1
    target = make_address(2)
    _, found = raw_get(api, f"/dashboard?q={target[3:12]}")
    assert [r["id"] for r in table_rows(found)] == [f["id"] for f in by_hb["farmers"] if f["address"] == target]
    _, online = raw_get(api, "/dashboard?online=1")
    assert len(table_rows(online)) == 2
    for bad in ("sort=ip_hash", "sort=heartbeats", "order=up", "page=-1", "limit=0", "limit=201", "online=yes",
                "q=" + "a" * 65,
                "page=", "sort=", "order=", "limit=", "refresh="):  # given empty is not absent
        code, body = api.get(f"/dashboard?{bad}")
        assert code == 400 and body["status"] == "invalid_query", bad


def test_farmer_page_escapes_what_a_farmer_sent(setup, clock):
    node, api = setup
    token_hash = hashlib.sha256(b"evil").digest()
    location = geoip.Location(country=EVIL, city="O'Fallon <b>")
    # straight into the store: the token rules would refuse the address
    run(node.stores.tokens.create(token_hash, token_hash.hex()[:20], EVIL, None, clock.seconds(),
                                       lambda facts: None, location=location.to_json(), country=location.country))
    fid = token_hash.hex()[:20]
    for path in (f"/farmers/{fid}", "/dashboard", "/dashboard?q=%3Cscript%3E"):
        resp, page = raw_get(api, path)
        assert resp.code == 200
        assert EVIL not in page and "<script>" not in page and "<img" not in page and "<b>" not in page
        assert html.escape(EVIL, quote=True) in page
    _, page = raw_get(api, f"/farmers/{fid}")
    assert value(page, "farmer-address") == EVIL
    assert "O&#x27;Fallon &lt;b&gt;" in page


def test_unknown_farmer_static_files_and_the_switch(setup, tmp_path, db_url, clock):
    node, api = setup
    code, body = api.get("/farmers/" + "0" * 20)
    assert code == 404 and body == {"status": "error", "message": "Nonexistant farmer id."}
    for name, kind in (("dashboard.css", "text/css"), ("refresh.js", "text/javascript"),
                       ("favicon.svg", "image/svg+xml")):
        resp, text = raw_get(api, f"/dashboard/static/{name}")
        assert resp.code == 200 and resp.headers.getRawHeaders("content-type")[0].startswith(kind) and text
    assert api.get("/dashboard/static/../setup.py")[0] == 404
    assert api.get("/dashboard/static/nope.js")[0] == 404
    off_node, off_api = build(tmp_path / "off", db_url, clock, dashboard=False)
    try:
        assert off_api.get("/dashboard")[0] == 404
        assert off_api.get("/")[0] == 200
    finally:
        off_node.db.close()


def test_geoip_location_on_new_token_and_on_a_move(setup):
    node, api = setup
    token = api.new_token(make_address(7), forwarded=UK_IP)
    _, shown = api.get(f"{V1}/status/show/{farmer_id(token)}")
    assert shown["location"] == {"country": "United Kingdom", "state": None, "city": None, "zip": None,
                                 "lat": None, "lon": None}
    chunks(api, token, 4096)  # same IP: unchanged
    api.get(f"{V1}/chunk/{token}/4096", forwarded=NL_IP)  # the token moves to a new IP
    _, shown = api.get(f"{V1}/status/show/{farmer_id(token)}")
    assert shown["location"]["country"] == "The Netherlands"
    other = api.new_token(make_address(8), forwarded=US_IP)
    local = api.new_token(make_address(9))  # loopback: never looked up
    _, listed = api.get(f"{V1}/status/list/")
    by_id = {f["id"]: f["location"] for f in listed["farmers"]}
    assert by_id[farmer_id(other)]["country"] == "United States" and by_id[farmer_id(local)] is None
    _, page = raw_get(api, "/dashboard")
    countries = dict(re.findall(r'<tr><th scope="row">([^<]+)</th><td>(\d+)</td></tr>',
                                page.split('id="countries"')[1]))
    assert countries == {"The Netherlands": "1", "United States": "1"}
    assert NL_IP not in page and US_IP not in page and UK_IP not in page
    # v0 tokens get a location too
    code, body = api.get(f"/api/downstream/new/{make_address(10)}", forwarded=UK_IP)
    assert code == 200
    assert geoip.location_from_json(token_row(node, body["token"]).location)["country"] == "United Kingdom"


def test_geoip_off_and_an_mmdb_file(tmp_path, db_url, clock):
    netaddr = pytest.importorskip("netaddr")
    mmdb_writer = pytest.importorskip("mmdb_writer")
    writer = mmdb_writer.MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-City",
                                    languages=["en"])
    writer.insert_network(netaddr.IPSet(["81.2.69.0/24"]), {
        "country": {"iso_code": "GB", "names": {"en": "United Kingdom"}},
        "subdivisions": [{"names": {"en": "England"}}], "city": {"names": {"en": "London"}},
        "postal": {"code": "W1"}, "location": {"latitude": 51.5, "longitude": -0.12}})
    path = str(tmp_path / "city.mmdb")
    writer.to_db_file(path)
    assert geoip.Locator(path).locate(UK_IP) == geoip.Location("United Kingdom", "England", "London", "W1", 51.5,
                                                               -0.12)
    assert geoip.Locator(path).locate(US_IP) is None
    node, api = build(tmp_path / "mmdb", db_url, clock, geoip_db=path)
    try:
        token = api.new_token(make_address(1), forwarded=UK_IP)
        assert api.get(f"{V1}/status/show/{farmer_id(token)}")[1]["location"]["city"] == "London"
    finally:
        node.db.close()
    node, api = build(tmp_path / "off", db_url, clock, geoip=False)
    try:
        assert node.locator is None
        token = api.new_token(make_address(1), forwarded=UK_IP)
        assert api.get(f"{V1}/status/show/{farmer_id(token)}")[1]["location"] is None
    finally:
        node.db.close()


def test_history_is_written_by_the_stats_job_idempotently_and_pruned(setup, clock):
    node, api = setup
    store = node.stores.history
    recorder = HourlyResults(clock)
    node.results.observers.append(recorder.count)  # as the daemon's node is built with it
    job = stats_job(node.stores.stats, node.config, clock, history=(store, recorder))
    t1, t2, t3 = three_farmers(api)  # 3 passes counted through core.results
    run(job.run_now())
    hour = int(clock.seconds() // HOUR)
    assert run(store.hours(hour - 1, hour)) == [HourRow(hour, 3, 0, 0)]
    run(job.run_now())  # nothing new: the same totals, nothing doubled
    assert run(store.hours(hour - 1, hour)) == [HourRow(hour, 3, 0, 0)]
    # another process's totals for the same hour add up; an old row goes at the retention
    other = HourlyResults(clock, source="b" * 16)
    other.count("fail", 2)
    other.count("miss", 1)
    other.count("heartbeat", 5)  # not a result: ignored
    old = hour - node.config.history_retention // HOUR - 2
    run(store.record("c" * 16, [HourRow(old, 9, 9, 9)]))
    run(write_history(store, other, node.config.history_retention, clock.seconds()))
    assert run(store.hours(old, hour)) == [HourRow(hour, 3, 1, 2)]
    # the page's 24-hour chart and table show it
    _, page = raw_get(api, "/dashboard")
    assert 'id="chart-hours"' in page and 'id="chart-days"' in page
    label = page.split('id="results-hours"')[1]
    assert re.search(r"<td>3</td><td>1</td><td>2</td></tr></tbody>", label)


def test_a_failed_history_write_is_retried_with_the_next(setup, clock):
    node, api = setup
    recorder = HourlyResults(clock, source="a" * 16)
    recorder.count("pass", 4)
    rows = recorder.take()
    recorder.failed(rows)
    recorder.count("pass", 1)
    assert recorder.take() == [HourRow(int(clock.seconds() // HOUR), 5, 0, 0)]
    clock.advance(3 * HOUR)
    recorder.count("miss", 1)
    assert [r.misses for r in recorder.take()] == [1]
    assert len(recorder.hours) == 1  # hours before the previous one are forgotten


# --- issue 23: v0 activity, standing, the node panel -------------------------------------------------

def test_v0_farmers_uptime_and_activity_are_real(nodes, clock, tmp_path):
    """A v0 farmer that passes every challenge shows its uptime and passes (it used to show 0 %
    and 0 heartbeats, the v1-only figures); one that stops answering shows it."""
    from support import add_test_file, stored_bytes, v0_answer
    from support import make_server as server_of
    from support.v1 import Api

    node = nodes(max_failures=100)
    interval = 60
    h = add_test_file(node, tmp_path, interval=interval, redundancy=2)
    good, gone = (run(node.v0.create_token(make_address(i))) for i in (1, 2))
    for token in (good, gone):
        run(node.v0.get_chunk(token))
    data = stored_bytes(node, h)
    uptime = UptimeSummary(node.stores.status, clock)  # the uptime job's body
    run(uptime())
    for window in range(10):
        for token in (good, gone) if window < 3 else (good,):
            _, due = run(node.v0.due(token))
            if due:
                assert run(node.v0.answer(token, h, parse_response(v0_answer(data, due[0]["challenge"])))) == "pass"
        clock.advance(interval)
        run(node.supply.issue_due())
        run(uptime())
    api = Api(node, node.config)
    assert server_of(node) is not None
    rows = {r["id"]: r for r in table_rows(raw_get(api, "/dashboard")[1])}
    kept, left = rows[farmer_id(good)], rows[farmer_id(gone)]
    assert float(kept["uptime"]) >= 90.0 and int(kept["passes"]) == 10 and kept["misses"] == "0"
    assert float(left["uptime"]) <= 40.0 and int(left["passes"]) == 3 and int(left["misses"]) >= 6
    # last seen: the window it last answered in, even while a new challenge is outstanding (it was the
    # contract's start whenever the current challenge was not answered yet)
    now = clock.seconds()
    assert now - 2 * interval <= float(kept["last-seen"]) <= now
    assert float(left["last-seen"]) == now - 10 * interval + 2 * interval  # its third window
    _, shown = api.get(f"{V1}/status/show/{farmer_id(good)}")
    assert shown["uptime"] == float(kept["uptime"])  # the status API says the same


def test_standing_scores_and_containment_on_the_list_and_the_farmer_page(nodes, clock, tmp_path):
    from downstream_tx.db.reputation import record_txn
    from downstream_tx.domain.scores import Tally
    from support import add_test_file
    from support.v1 import Api

    node = nodes(containment_retries=2)
    add_test_file(node, tmp_path, interval=60)
    addresses = [make_address(i) for i in range(1, 5)]
    tokens = [run(node.v0.create_token(a)) for a in addresses]
    rules = node.stores.reputation.rules
    run(node.v0.get_chunk(tokens[0]))  # (before anyone is vetted: the vetting share does not hold it back)
    run(node.db.run("t", record_txn, rules, clock.seconds(), {addresses[1]: Tally(passes=1, fails=45),
                                                                addresses[2]: Tally(errors=1000),
                                                                addresses[3]: Tally(passes=150)}))
    with pytest.raises(NodeError):  # the vetted farmer asks for work: the node judges it vetted (no file left)
        run(node.v0.get_chunk(tokens[3]))
    clock.advance(61)
    run(node.supply.issue_due())  # its challenge unanswered: asked again, contained
    api = Api(node, node.config)
    _, page = raw_get(api, "/dashboard?sort=standing&order=desc")
    rows = table_rows(page)
    assert [r["standing"] for r in rows] == ["disqualified", "suspended", "contained", "ok"]
    assert [r["id"] for r in rows][:2] == [farmer_id(tokens[1]), farmer_id(tokens[2])]
    _, by_audit = raw_get(api, "/dashboard?sort=audit")
    assert table_rows(by_audit)[0]["id"] == farmer_id(tokens[1]) and float(table_rows(by_audit)[0]["audit"]) < 0.96
    _, fpage = raw_get(api, f"/farmers/{farmer_id(tokens[1])}")
    assert value(fpage, "farmer-standing") == "disqualified"
    assert "disqualified since 2023-11-14T22:13:20Z: audit score below 0.96" in fpage
    assert "below the dq_threshold, 0.96" in fpage and "at or above the suspension_threshold, 0.6" in fpage
    _, cpage = raw_get(api, f"/farmers/{farmer_id(tokens[0])}")
    assert value(cpage, "farmer-standing") == "contained" and value(cpage, "farmer-contained") == "1"
    activity = run(node.farmers.summaries([farmer_id(tokens[0])]))[0]
    assert value(cpage, "farmer-last-seen") == f"{activity.last_seen:.0f}"  # as downstream-admin farmer show
    assert "Last due" not in cpage and "UTC</dd>" not in cpage  # one time format: ISO 8601, "…Z"


def test_the_node_panel_says_who_runs_the_jobs_and_who_made_the_page(nodes, clock):
    from downstream_tx.db.lease import JOBS
    from support.v1 import Api

    node = nodes()
    api = Api(node, node.config)
    _, page = raw_get(api, "/dashboard")
    assert value(page, "node-leader") == ""  # nobody holds the lease: said so
    assert "nobody (no instance holds the jobs lease" in page
    assert value(page, "node-instance") == node.instance and "~" in node.instance
    assert value(page, "node-generated") == f"{clock.seconds():.0f}" and float(value(page, "node-db-ms")) >= 0
    run(node.stores.leases.acquire(JOBS, "node-b:77~abc123", clock.seconds(), 15.0))
    clock.advance(4)
    _, page = raw_get(api, "/dashboard")
    assert value(page, "node-leader") == "node-b:77~abc123" and float(value(page, "node-lease-age")) == 4.0
    assert value(page, "node-generation") == "1"
    run(node.stores.leases.acquire(JOBS, node.instance, clock.seconds() + 20, 15.0))
    clock.advance(21)
    _, fpage_list = raw_get(api, "/dashboard")
    assert f"{node.instance} (this process)" in fpage_list
    assert "dtx-test" not in fpage_list and "mysql://" not in fpage_list  # nothing of the database's address


def test_charts_have_titles_and_whole_number_axes(setup, clock):
    node, api = setup
    run(node.stores.history.record("t" * 16, [HourRow(int(clock.seconds() // HOUR), 5, 0, 0)]))
    _, page = raw_get(api, "/dashboard")
    assert '<figcaption id="h-chart-hours">Per hour, last 24 hours (UTC)</figcaption>' in page
    assert '<figcaption id="h-chart-days">Per day, last 30 days (UTC)</figcaption>' in page
    ticks = re.findall(r'text-anchor="end">([^<]+)</text>', page)
    assert ticks and all(t.isdigit() for t in ticks)
