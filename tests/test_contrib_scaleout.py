"""The files for running several instances: the template unit and the load balancer example."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "contrib" / "systemd" / "downstream@.service"
SINGLE = ROOT / "contrib" / "systemd" / "downstream.service"
HAPROXY = ROOT / "contrib" / "loadbalancer" / "haproxy.cfg"
DOC = (ROOT / "docs" / "operations.md").read_text()


def directives(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#") and not line.startswith(" "):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), value.strip())
    return out


def test_the_template_unit_is_the_single_unit_per_instance():
    template, single = directives(TEMPLATE.read_text()), directives(SINGLE.read_text())
    # the same hardening and lifecycle as the single unit: only the per-instance paths differ
    differ = {k for k in single if template.get(k) != single[k]}
    assert differ == {"Description", "ExecStart", "EnvironmentFile", "StateDirectory", "LogsDirectory"}
    assert template["StateDirectory"] == "downstream/%i" and template["LogsDirectory"] == "downstream/%i"
    assert template["EnvironmentFile"] == "-/etc/downstream/%i.env"
    text = TEMPLATE.read_text()
    # every setting in the instance's file (data_dir too): downstream-admin given it sees the same node
    assert template["ExecStart"].endswith("downstream --config /etc/downstream/%i.toml")
    assert 'data_dir = "/var/lib/downstream/NAME"' in text
    assert "downstream@.service" in DOC and "contrib/loadbalancer/haproxy.cfg" in DOC


def test_systemd_analyze_verify_accepts_an_instance(tmp_path):
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    twistd = shutil.which("twistd", path=str(ROOT / ".venv" / "bin")) or shutil.which("twistd") or "/bin/true"
    (tmp_path / "downstream@.service").write_text(TEMPLATE.read_text().replace("/opt/downstream/bin/twistd", twistd))
    instance = tmp_path / "downstream@a.service"
    instance.symlink_to(tmp_path / "downstream@.service")
    result = subprocess.run([tool, "verify", "--man=no", str(instance)], capture_output=True, text=True,
                            timeout=60)
    problems = [line for line in result.stderr.splitlines()
                if "Unknown" in line or "Failed" in line or "not executable" in line or "Invalid" in line]
    assert result.returncode == 0 and not problems, result.stderr


def test_the_load_balancer_checks_health_and_needs_no_stickiness():
    text = HAPROXY.read_text()
    assert re.search(r"^\s*http-check send meth GET uri /health$", text, re.M)
    assert re.search(r"^\s*http-check expect status 200$", text, re.M)
    assert "option redispatch" in text and "option forwardfor" in text
    assert not re.search(r"^\s*(stick|cookie)\b", text, re.M)
    tool = shutil.which("haproxy")
    if tool is not None:
        result = subprocess.run([tool, "-c", "-f", str(HAPROXY)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
