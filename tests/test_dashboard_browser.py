"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by Playwright through
``executable_path``: nothing downloads a browser), against the real daemon with farmers that farm
over HTTP (tests/support/farmer_v1.py), a farmer that stops answering, history rows and a farmer whose
address is full of HTML metacharacters; and against a node built by ``contrib/demo/populate.py``.

Checks: the numbers on the page equal the status API's and (passes, fails, misses, last seen,
standing) ``downstream-admin``'s, sorting (by standing too), paging and search, the node panel, the
charts' titles and whole-number axes, ids and addresses on one line, the farmer page's standing, no
console errors, escaping, the page without JavaScript, the refresh with it, and axe-core (no
critical or serious violations). Screenshots are saved under ``$DTX_TEST_ARTIFACTS`` (default: the
test's temporary directory); ``DTX_UPDATE_DOCS_SCREENSHOT=1`` builds the demo node at its full size
and copies its overview to docs/dashboard.png.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from twisted.internet import task

from downstream_tx.core.reputation import standing_word
from downstream_tx.db.history import HOUR, HourRow
from downstream_tx.db.stores import Stores
from downstream_tx.domain.rules import Rules
from downstream_tx.geoip import Location, stored_location
from support import make_address, make_config, open_test_db, run
from support.daemon import Daemon
from support.farmer_v1 import Farmer

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("DTX_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
INTERVAL = 3
CHUNK = 16384
EVIL = "<script>alert('pwned')</script>&\"<img src=x onerror=alert(1)>"

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - the test extra installs it
    sync_playwright = None

if sync_playwright is None:
    pytest.skip("browser tests need the 'playwright' package (pip install '.[test]')", allow_module_level=True)
if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(f"browser tests need Chromium at {CHROMIUM} (apt-get install chromium; .ci/run installs it)",
                allow_module_level=True)


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


class Farming:
    """Farmers farming in background threads (the client's loop) until stopped."""

    def __init__(self, url: str, workdir: Path, count: int):
        self.stop = threading.Event()
        self.farmers = []
        for i in range(count):
            folder = workdir / f"farmer{i}"
            folder.mkdir(parents=True)
            self.farmers.append(Farmer(url, make_address(20 + i), str(folder), desired_total=(i + 1) * CHUNK))
        self.threads = [threading.Thread(target=self._farm, args=(f,), daemon=True) for f in self.farmers]
        self.errors: list[BaseException] = []

    def _farm(self, farmer: Farmer) -> None:
        try:
            farmer.connect()
            deadline = time.time() + 120
            while not self.stop.is_set() and time.time() < deadline:
                if farmer.held_total() < farmer.desired_total:
                    farmer.get_contracts()
                farmer.submit()
                farmer.update()
                self.stop.wait(0.05)  # the client's own pacing
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.errors.append(e)

    def __enter__(self) -> Farming:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)


def seed_database(data_dir: Path) -> str:
    """Before the daemon starts: history rows of earlier hours and days, and a token whose address
    and location are full of HTML metacharacters (v1 validates addresses; the store does not).
    Returns that token's farmer id."""
    config = make_config(data_dir.parent, "sqlite:///" + str(data_dir / "downstream.db"))
    db = open_test_db(config, task.Clock())
    now_hour = int(time.time() // HOUR)
    rows = [HourRow(now_hour - h, 40 + h, h % 3, h % 5 == 0) for h in range(1, 24)]
    rows += [HourRow(now_hour - 24 * d - 5, 300 + 10 * d, d % 4, d % 2) for d in range(1, 30)]
    token_hash = hashlib.sha256(b"evil farmer").digest()
    stores = Stores(db, Rules())
    run(stores.history.record("seed" + "0" * 12, rows))
    # straight into the store: the token rules would refuse the address
    location, country = stored_location(Location(country="Nowhere <i>&amp;</i>"))
    run(stores.tokens.create(token_hash, token_hash.hex()[:20], EVIL, None, time.time(), lambda facts: None,
                             location=location, country=country))
    db.pool.close()
    return token_hash.hex()[:20]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("DTX_TEST_ARTIFACTS") or tmp_path_factory.mktemp("dashboard-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    root = tmp_path_factory.mktemp("dashboard-e2e")
    evil_id = seed_database(root / "data")
    args = ["--data-dir", str(root / "data"), "--tick", "0.2", "--seeded-interval", str(INTERVAL),
            "--seeded-pool", f"{CHUNK}:12", "--seeded-challenges", "64", "--stats-interval", "0.1",
            "--max-tokens-per-ip", "0",
            # the lazy farmer's contract fails at its expiration, not late_grace later (the grace:
            # tests/test_late_answers.py), and its missed challenge fails it at once (no containment):
            # the wait below ends when its status goes offline
            "--late-grace", "0", "--containment-retries", "0"]
    with Daemon(root / "node", args) as daemon:
        with Farming(daemon.url, root, 3) as farming:
            lazy = Farmer(daemon.url, make_address(30), str(root), desired_total=CHUNK)
            lazy.connect()
            deadline = time.time() + 60
            while not lazy.contracts and time.time() < deadline:
                # holds a contract and never answers: a miss, a failed contract (the pool may still
                # be filling: ask again)
                if lazy.get_contracts() == 0:
                    time.sleep(0.1)
            assert len(lazy.contracts) == 1
            while time.time() < deadline:
                done = all(f.heartbeats >= 2 for f in farming.farmers)
                shown = get_json(f"{daemon.url}/api/downstream/v1/status/show/{lazy.farmer_id}")
                if done and shown["online"] is False:
                    break
                time.sleep(0.1)  # polling the daemon's progress (bounded), not waiting for a timer
            assert not farming.errors, farming.errors
            assert all(f.heartbeats >= 2 for f in farming.farmers), [f.heartbeats for f in farming.farmers]
            daemon.evil_id = evil_id
            daemon.farming = farming
            daemon.lazy = lazy
            daemon.root = root
            yield daemon


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(15000)
    errors: list[str] = []
    pg.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    pg.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    pg.on("dialog", lambda d: (errors.append(f"dialog: {d.message}"), d.dismiss()))
    # a request the browser itself cancelled because the test navigated on (the favicon of a page
    # left at once, on a loaded machine) is not a failure; any other is
    pg.on("requestfailed", lambda r: None if r.failure == "net::ERR_ABORTED" else
          errors.append(f"request failed: {r.url} ({r.failure})"))
    pg.on("response", lambda r: errors.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
    pg.errors = errors
    yield pg
    context.close()
    assert errors == [], errors


def stat(pg, element_id: str) -> str:
    return pg.get_attribute(f"#{element_id}", "data-value")


def table(pg) -> list[dict]:
    return pg.eval_on_selector_all("#farmers tbody tr[data-farmer-id]", """rows => rows.map(r => ({
        id: r.dataset.farmerId,
        address: r.querySelector('.c-address').textContent,
        uptime: Number(r.querySelector('.c-uptime').dataset.value),
        contracts: Number(r.querySelector('.c-contracts').dataset.value),
        size: Number(r.querySelector('.c-size').dataset.value),
        online: r.querySelector('.c-online').dataset.value === '1',
    }))""")


def activity(pg) -> list[dict]:
    """The farmer list's activity columns: what downstream-admin farmer list shows for each token."""
    return pg.eval_on_selector_all("#farmers tbody tr[data-farmer-id]", """rows => rows.map(r => ({
        farmer_id: r.dataset.farmerId,
        passes: Number(r.querySelector('.c-passes').dataset.value),
        fails: Number(r.querySelector('.c-fails').dataset.value),
        misses: Number(r.querySelector('.c-misses').dataset.value),
        last_seen: Number(r.querySelector('.c-last-seen').dataset.value),
        standing: r.querySelector('.c-standing').dataset.value,
    }))""")


def admin_rows(node) -> list[dict]:
    """``downstream-admin farmer list --json`` on the daemon's database, in the dashboard's terms."""
    from support.admin import cli

    done = cli(node.root, "farmer", "list", "--json")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    return [{"farmer_id": r["farmer_id"], "passes": r["passes"], "fails": r["fails"], "misses": r["misses"],
             "last_seen": round(r["last_seen"]), "standing": standing_word(r["reputation"])} for r in rows]


def api_rows(body) -> list[dict]:
    return [{k: f[k] for k in ("id", "address", "uptime", "contracts", "size", "online")} for f in body["farmers"]]


def consistent(read_api, read_page, attempts: int = 30):
    """The page equals the API: read the API, the page, the API again, until both API reads agree
    (the farmers keep farming, so numbers move between reads); then the page must equal them."""
    seen = []
    for _ in range(attempts):
        before = read_api()
        shown = read_page()
        after = read_api()
        if before == after and shown == before:
            return shown
        seen.append((before, shown, after))
    raise AssertionError(f"the page never equalled a stable API answer: {seen[-1]}")


def test_overview_numbers_sorting_paging_search(node, page, artifacts):
    base = f"{node.url}/api/downstream/v1/status/list"

    def read_page(path="/dashboard?refresh=0"):
        def read():
            page.goto(node.url + path)
            return table(page)
        return read

    # the farmer table equals /status/list (all fields the table shows), its activity columns
    # downstream-admin farmer list (one definition of passes, fails, misses, last seen)
    consistent(lambda: api_rows(get_json(base + "/")), read_page())
    consistent(lambda: sorted(admin_rows(node), key=lambda r: r["farmer_id"]),
               lambda: (page.goto(node.url + "/dashboard?refresh=0"),
                        sorted(activity(page), key=lambda r: r["farmer_id"]))[1])
    # the summary equals the status API's counts
    consistent(lambda: (len(get_json(base + "/")["farmers"]), len(get_json(base + "/online/")["farmers"])),
               lambda: (page.goto(node.url + "/dashboard?refresh=0"),
                        (int(stat(page, "farmers-total")), int(stat(page, "farmers-online"))))[1])
    assert int(stat(page, "farmers-total")) == 5  # 3 farming, 1 lazy, the seeded one
    assert int(stat(page, "contracts-failed")) >= 1  # the lazy farmer's
    assert stat(page, "node-version")
    assert float(stat(page, "timer-lag")) < 30
    # the charts: 24 hourly and 30 daily bars, the seeded history and this hour's passes
    assert page.locator("#chart-hours g.bar").count() == 24
    assert page.locator("#chart-days g.bar").count() == 30
    assert page.locator("#chart-hours rect.pass").count() >= 23
    page.screenshot(path=str(artifacts / "dashboard-test-node.png"), full_page=True)

    # sorting: click the contracts heading (ascending), then again (descending)
    page.click("#farmers thead a[data-sort=contracts]")
    assert "sort=contracts" in page.url
    assert page.get_attribute("#farmers thead th[aria-sort]", "aria-sort") == "ascending"
    consistent(lambda: [f["id"] for f in get_json(base + "/by/contracts")["farmers"]],
               lambda: (page.reload(), [r["id"] for r in table(page)])[1])
    page.click("#farmers thead a[data-sort=contracts]")
    assert page.get_attribute("#farmers thead th[aria-sort]", "aria-sort") == "descending"
    consistent(lambda: [f["id"] for f in get_json(base + "/by/d/contracts")["farmers"]],
               lambda: (page.reload(), [r["id"] for r in table(page)])[1])
    # by standing: the worst first (the lazy farmer's failed contract did not disqualify it: all ok here)
    page.click("#farmers thead a[data-sort=standing]")
    page.click("#farmers thead a[data-sort=standing]")
    assert page.get_attribute("#farmers thead th[aria-sort]", "aria-sort") == "descending"
    rank = {"disqualified": 0, "suspended": 1}
    shown = [rank.get(r["standing"], 2) for r in activity(page)]
    assert shown == sorted(shown)

    # paging, two per page, by address (a stable order): next, next, previous
    page.goto(node.url + "/dashboard?sort=address&limit=2&refresh=0")
    pages = []
    while True:
        pages.append([r["id"] for r in table(page)])
        if page.locator("#page-next").count() == 0:
            break
        page.click("#page-next")
    assert pages == [[f["id"] for f in get_json(f"{base}/by/address/2/{n}")["farmers"]] for n in range(len(pages))]
    assert len(pages) == 3 and [len(p) for p in pages] == [2, 2, 1]
    page.click("#page-prev")
    assert [r["id"] for r in table(page)] == pages[1]

    # search by address: the form keeps the sort
    target = node.farming.farmers[1]
    page.fill("#q", target.address[4:14])
    page.click("#farmer-search button[type=submit]")
    assert [r["id"] for r in table(page)] == [target.farmer_id]
    assert "sort=address" in page.url


def test_farmer_pages_and_escaping(node, page, artifacts):
    farmer = node.farming.farmers[2]
    show = f"{node.url}/api/downstream/v1/status/show/"
    fields = ("heartbeats", "contracts", "size", "uptime")

    def read_page():
        page.goto(f"{node.url}/farmers/{farmer.farmer_id}?refresh=0")
        return {k: float(stat(page, f"farmer-{k}")) for k in fields}

    consistent(lambda: {k: float(get_json(show + farmer.farmer_id)[k]) for k in fields}, read_page)
    assert page.text_content("#farmer-address") == farmer.address
    assert int(stat(page, "farmer-passes")) >= 2
    assert page.locator("#at-risk tbody tr").count() >= 1
    page.screenshot(path=str(artifacts / "farmer.png"), full_page=True)

    # the lazy farmer: a failed contract, a miss
    page.goto(f"{node.url}/farmers/{node.lazy.farmer_id}?refresh=0")
    assert int(stat(page, "farmer-failed")) == 1 and int(stat(page, "farmer-misses")) >= 1

    # a farmer whose address and location are HTML: shown as text, nothing injected
    page.goto(f"{node.url}/farmers/{node.evil_id}?refresh=0")
    assert page.text_content("#farmer-address") == EVIL
    assert page.text_content("#farmer-location") == "Nowhere <i>&amp;</i>"
    assert page.locator("main img").count() == 0 and page.locator("main i").count() == 0
    assert page.locator("script").count() == 1  # only the page's own refresh script
    page.screenshot(path=str(artifacts / "farmer-escaped.png"), full_page=True)
    page.goto(f"{node.url}/dashboard?refresh=0&q=%3Cscript%3E")
    assert [r["address"] for r in table(page)] == [EVIL]
    assert page.input_value("#q") == "<script>"


def test_nothing_secret_on_the_pages(node, page):
    tokens_ = [f.token for f in node.farming.farmers] + [node.lazy.token]
    for path in ("/dashboard?refresh=0", f"/farmers/{node.farming.farmers[0].farmer_id}?refresh=0"):
        page.goto(node.url + path)
        text = page.content()
        for secret in tokens_ + ["127.0.0.1"]:
            assert secret not in text


def test_without_javascript_and_the_refresh_with_it(node, browser, page):
    context = browser.new_context(java_script_enabled=False)
    try:
        off = context.new_page()
        off.goto(node.url + "/dashboard")
        assert int(off.get_attribute("#farmers-total", "data-value")) == 5
        assert off.locator("#farmers tbody tr[data-farmer-id]").count() == 5
        assert off.locator("#chart-hours g.bar").count() == 24
    finally:
        context.close()
    page.goto(node.url + "/dashboard?refresh=1")
    with page.expect_event("load", timeout=15000):
        pass  # the refresh script reloads the page after 1 s
    assert page.get_attribute("body", "data-refresh") == "1"


def test_accessibility_no_critical_violations(node, page):
    from axe_playwright_python.sync_playwright import Axe

    axe = Axe()
    for path in ("/dashboard?refresh=0", f"/farmers/{node.farming.farmers[0].farmer_id}?refresh=0",
                 f"/farmers/{node.evil_id}?refresh=0"):
        page.goto(node.url + path)
        results = axe.run(page)
        violations = results.response["violations"]
        critical = [(v["id"], v["help"]) for v in violations if v.get("impact") == "critical"]
        assert critical == [], critical
        serious = [(v["id"], v["help"]) for v in violations if v.get("impact") == "serious"]
        assert serious == [], serious



def test_the_node_panel_the_chart_titles_and_one_line_per_farmer(node, page):
    """The parts an operator of several processes asks for: who runs the jobs and how fresh their
    lease is, the database's answer time, which process made the page and when; each chart's title
    on the page; ids and addresses on one line each."""
    page.goto(node.url + "/dashboard?refresh=0")
    health = get_json(node.url + "/health")
    assert page.text_content("#node-leader") == f"{health['instance']} (this process)"  # one process: the leader
    assert 0 <= float(stat(page, "node-lease-age")) < 15  # lease_ttl
    assert stat(page, "node-instance") == health["instance"]
    assert abs(float(stat(page, "node-generated")) - time.time()) < 60
    assert float(stat(page, "node-db-ms")) < 5000
    assert page.is_visible("#h-chart-hours") and page.text_content("#h-chart-hours") == "Per hour, last 24 hours (UTC)"
    assert page.is_visible("#h-chart-days") and page.text_content("#h-chart-days") == "Per day, last 30 days (UTC)"
    ticks = page.eval_on_selector_all("svg.chart text[text-anchor=end]", "ts => ts.map(t => t.textContent)")
    assert ticks and all(t.isdigit() for t in ticks)  # whole numbers only
    heights = page.eval_on_selector_all("#farmers tbody tr[data-farmer-id]", """rows => rows.map(r => [
        r.querySelector('.c-id').getBoundingClientRect().height,
        r.querySelector('.c-address').getBoundingClientRect().height,
        r.querySelector('.c-online').getBoundingClientRect().height])""")
    line = page.eval_on_selector("#farmers tbody tr[data-farmer-id] .c-online", "e => e.scrollHeight")
    for id_h, address_h, online_h in heights:
        assert id_h == address_h == online_h and online_h <= line + 12  # one line each, no wrap


def test_the_farmer_page_shows_its_standing_as_downstream_admin_does(node, page):
    from support.admin import cli

    farmer = node.farming.farmers[0]
    page.goto(f"{node.url}/farmers/{farmer.farmer_id}?refresh=0")
    shown = json.loads(cli(node.root, "farmer", "show", farmer.farmer_id, "--json").stdout)
    assert stat(page, "farmer-standing") == standing_word(shown["reputation"])
    # the word, and under it why: the farmer has not passed vetting_audits challenges yet
    assert page.text_content("#farmer-standing .note").startswith("ok, not vetted yet (")
    assert "at or above the dq_threshold, 0.96" in page.text_content("#farmer-audit-score")
    # the one last_seen: what farmer show says (the farmer farms on meanwhile: read until it holds still)
    consistent(lambda: round(json.loads(cli(node.root, "farmer", "show", farmer.farmer_id, "--json").stdout)
                             ["last_seen"]),
               lambda: (page.goto(f"{node.url}/farmers/{farmer.farmer_id}?refresh=0"),
                        round(float(stat(page, "farmer-last-seen"))))[1])
    assert page.text_content("#farmer-last-seen").endswith("Z")
    assert page.locator("text=Last due").count() == 0


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A node built by contrib/demo/populate.py (small here; its defaults, a few hundred farmers in a
    month, for the README's picture with DTX_UPDATE_DOCS_SCREENSHOT=1), served by the real daemon."""
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("demo")
    script = Path(__file__).resolve().parent.parent / "contrib" / "demo" / "populate.py"
    size = [] if os.environ.get("DTX_UPDATE_DOCS_SCREENSHOT") else ["--farmers", "40", "--days", "3",
                                                                     "--v1-farmers", "5"]
    done = subprocess.run([sys.executable, str(script), str(root / "data"), *size], capture_output=True, text=True,
                          timeout=1800)
    assert done.returncode == 0, done.stderr
    with Daemon(root / "node", ["--config", str(root / "data" / "demo.toml")]) as daemon:
        yield daemon


def test_a_realistic_node_for_the_readme(demo, page, artifacts):
    """No test strings: valid addresses, GeoIP countries, farmers in mixed standing; the picture in
    docs/dashboard.png is this page (at the script's full size)."""
    page.set_viewport_size({"width": 1400, "height": 900})
    page.goto(demo.url + "/dashboard?refresh=0&sort=standing&order=desc&limit=30")  # every standing in view
    page.screenshot(path=str(artifacts / "dashboard.png"), full_page=True)
    if os.environ.get("DTX_UPDATE_DOCS_SCREENSHOT"):
        shutil.copyfile(artifacts / "dashboard.png", Path(__file__).resolve().parent.parent / "docs" / "dashboard.png")
    page.goto(demo.url + "/dashboard?refresh=0&sort=standing&order=desc&limit=25")
    rows = activity(page)
    assert len(rows) == 25 and int(stat(page, "farmers-total")) >= 40
    assert len({r["standing"] for r in rows}) >= 3  # mixed standing on the first page
    addresses = page.eval_on_selector_all("#farmers .c-address", "cs => cs.map(c => c.textContent)")
    from downstream_tx import bitcoin

    for address in addresses:
        bitcoin.decode_address(address)  # every one a valid SJCX address
    assert page.locator("#countries tbody tr").count() >= 3
    assert page.locator("#chart-days rect.pass").count() >= 3
    from axe_playwright_python.sync_playwright import Axe

    violations = Axe().run(page).response["violations"]
    assert [(v["id"], v["help"]) for v in violations if v.get("impact") in ("critical", "serious")] == []
