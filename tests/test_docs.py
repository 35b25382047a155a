"""docs/operations.md describes exactly what the code has: every setting, every metric."""

from __future__ import annotations

import re
from pathlib import Path

from twisted.internet import task

from downstream_tx.config import SETTINGS, settings_markdown
from downstream_tx.metrics import Metrics

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "operations.md").read_text()


def _block(name: str) -> str:
    match = re.search(rf"<!-- {name}:begin -->\n(.*?)<!-- {name}:end -->", DOC, re.S)
    assert match, f"docs/operations.md has no {name} block"
    return match.group(1)


def test_settings_table_is_generated_from_the_code():
    # regenerate with: python -c "from downstream_tx.config import settings_markdown as s; print(s(), end='')"
    assert _block("settings") == settings_markdown()
    for s in SETTINGS:
        assert f"`--{s.option}`" in DOC and f"`{s.env}`" in DOC


def _metric_names() -> set[str]:
    names = set()
    for metric in Metrics(task.Clock()).registry.collect():
        names.add(metric.name + ("_total" if metric.type == "counter" else ""))
    return names


def test_every_metric_is_documented_and_every_documented_metric_exists():
    documented = set(re.findall(r"^\| `(downstream_[a-z_]+)` \|", _block("metrics"), re.M))
    assert documented == _metric_names()


def test_alert_rules_use_existing_metrics():
    rules = (ROOT / "contrib" / "prometheus" / "alerts.yml").read_text()
    used = set(re.findall(r"\b(downstream_[a-z_]+?)(?:_bucket)?\b", rules))
    assert used, "no metric in the alert rules"
    assert used <= _metric_names(), used - _metric_names()


def test_systemd_units_have_what_the_docs_promise():
    service = (ROOT / "contrib" / "systemd" / "downstream.service").read_text()
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "User=downstream", "StateDirectory=downstream",
                 "ProtectSystem=strict", "PrivateTmp=yes", "NoNewPrivileges=yes", "ExecReload=/bin/kill -HUP $MAINPID",
                 "twistd -n --pidfile= downstream"):
        assert line in service, line
    socket_unit = (ROOT / "contrib" / "systemd" / "downstream.socket").read_text()
    assert "ListenStream=" in socket_unit
    dropin = (ROOT / "contrib" / "systemd" / "downstream-socket-activated.conf").read_text()
    assert "--listen systemd:domain=INET:index=0" in dropin
