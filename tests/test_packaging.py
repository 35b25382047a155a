"""What an install gives the operator: the systemd unit and the file layout the docs prescribe, the
documentation the unit points at, the license, and the help texts."""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
import sys

import pytest

from support.daemon import ROOT, TWISTD, daemon_env

UNIT = ROOT / "contrib" / "systemd" / "downstream.service"
DOC = (ROOT / "docs" / "operations.md").read_text()


def unit_settings(path) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit (continuations joined, comments dropped), repeated keys kept."""
    settings: dict[str, list[str]] = {}
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")) or "=" not in line:
            continue
        key, value = line.split("=", 1)
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def documented_install(target: str) -> tuple[int, str, str]:
    """(mode, owner, group) the docs' ``install`` command gives ``target``."""
    for line in DOC.splitlines():
        words = line.split()
        if words[:1] == ["install"] and target in words:
            mode = int(words[words.index("-m") + 1], 8)
            owner = words[words.index("-o") + 1] if "-o" in words else "root"
            group = words[words.index("-g") + 1] if "-g" in words else "root"
            return mode, owner, group
    raise AssertionError(f"docs/operations.md has no install command for {target}")


def can(user: str, groups: set[str], mode: int, owner: str, group: str, what: str) -> bool:
    """Whether ``user`` (in ``groups``) may read (r) or enter (x) a path of this mode and owner."""
    bit = {"r": 4, "x": 1}[what]
    if user == owner:
        return bool(mode >> 6 & bit)
    if group in groups:
        return bool(mode >> 3 & bit)
    return bool(mode & bit)


def test_the_service_user_can_read_its_configuration():
    """The unit runs as User=downstream; /etc/downstream and downstream.toml as the docs install
    them (and as ConfigurationDirectoryMode= creates the directory) must let that user read the
    file — the first layout (root:root 0750) gave a restart loop."""
    unit = unit_settings(UNIT)
    user, group = unit["User"][0], unit["Group"][0]
    assert (user, group) == ("downstream", "downstream")
    assert unit["ConfigurationDirectory"] == ["downstream"]
    config_dir_mode = int(unit["ConfigurationDirectoryMode"][0], 8)
    assert can(user, {group}, config_dir_mode, "root", "root", "x")
    mode, owner, file_group = documented_install("/etc/downstream")
    assert mode == config_dir_mode and can(user, {group}, mode, owner, file_group, "x")
    mode, owner, file_group = documented_install("/etc/downstream/downstream.toml")
    assert can(user, {group}, mode, owner, file_group, "r")
    assert owner == "root" and not mode & stat.S_IWGRP and not mode & 0o007  # not writable by the node, not public
    assert "--config /etc/downstream/downstream.toml" in " ".join(unit["ExecStart"])
    # the environment file (it may hold the database password) is read by systemd itself, as root
    mode, owner, _ = documented_install("/etc/downstream/downstream.env")
    assert owner == "root" and mode == 0o600
    assert unit["EnvironmentFile"] == ["-/etc/downstream/downstream.env"]


def test_documentation_link_points_at_a_file_the_install_creates():
    unit = unit_settings(UNIT)
    [link] = unit["Documentation"]
    assert link == "file:///opt/downstream/share/doc/downstream-tx/docs/operations.md"
    setup = (ROOT / "setup.py").read_text()
    assert '("share/doc/downstream-tx/docs", [' in setup and '"docs/operations.md"' in setup
    assert "python3 -m venv /opt/downstream" in DOC  # the prefix the link assumes


def test_systemd_analyze_verify_accepts_the_units(tmp_path):
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    twistd = shutil.which("twistd", path=str(ROOT / ".venv" / "bin")) or shutil.which("twistd") or "/bin/true"
    for name in ("downstream.service", "downstream.socket"):
        text = (ROOT / "contrib" / "systemd" / name).read_text()
        (tmp_path / name).write_text(text.replace("/opt/downstream/bin/twistd", twistd))
    result = subprocess.run([tool, "verify", "--man=no", str(tmp_path / "downstream.service"),
                             str(tmp_path / "downstream.socket")], capture_output=True, text=True, timeout=60)
    problems = [line for line in result.stderr.splitlines()
                if "Unknown" in line or "Failed" in line or "not executable" in line or "Invalid" in line]
    assert result.returncode == 0 and not problems, result.stderr


def test_license_is_mit():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "WITHOUT WARRANTY OF ANY KIND" in text
    assert 'license="MIT"' in (ROOT / "setup.py").read_text()


def test_twistd_help_shows_the_defaults(tmp_path):
    result = subprocess.run(TWISTD + ["downstream", "--help"], cwd=tmp_path, env=daemon_env(), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for shown in ("[default: tcp:5000:interface=127.0.0.1;", "[default: ./downstream-data;", "[default: 3;",
                  "[default: <data_dir>/chunks;", "[default: 1048576;"):
        assert shown in text, shown


def test_admin_version():
    result = subprocess.run([sys.executable, "-c", "from downstream_tx.admin import entry; entry()", "--version"],
                            env=daemon_env(), capture_output=True, text=True, timeout=60)
    from downstream_tx.version import full_version

    assert result.returncode == 0 and result.stdout.strip() == f"downstream-admin (downstream-tx) {full_version()}"


def test_twistd_version_names_the_commit_of_a_checkout(tmp_path):
    """Two builds tell themselves apart: the release plus the commit (this checkout's, at run time)."""
    from downstream_tx.version import git_commit

    result = subprocess.run(TWISTD + ["downstream", "--version"], cwd=tmp_path, env=daemon_env(), capture_output=True,
                            text=True, timeout=60)
    commit = git_commit(str(ROOT))
    assert result.returncode == 0
    assert re.fullmatch(r"downstream-tx \d+\.\d+\.\d+\S*", result.stdout.strip()), result.stdout
    if commit is not None:
        assert result.stdout.strip().endswith("+" + commit)


def test_what_the_readme_and_docs_link_to_is_installed_beside_them():
    """The install keeps the checkout's layout under share/doc/downstream-tx, so every relative link
    of the README and the docs resolves there as it does here; and downstream.tac is installed."""
    import ast

    setup = ast.parse((ROOT / "setup.py").read_text())
    [files] = [k.value for n in ast.walk(setup) if isinstance(n, ast.Call) for k in n.keywords
               if k.arg == "data_files"]
    installed = {}
    for pair in ast.literal_eval(files):
        for source in pair[1]:
            assert (ROOT / source).is_file(), source
            installed[source] = pair[0]
    for source, where in installed.items():
        if where.startswith("share/doc/downstream-tx"):
            assert where == "/".join(["share/doc/downstream-tx", *source.split("/")[:-1]]), source  # same layout
    assert installed["downstream.tac"] == "share/downstream-tx"
    for doc in ["README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))]:
        assert doc in installed, doc
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", (ROOT / doc).read_text()):
            linked = (ROOT / doc).parent.joinpath(target).resolve().relative_to(ROOT).as_posix()
            assert linked in installed, f"{doc} links to {target}, which the install leaves out"



def test_the_farmer_unit_is_installed_and_verifies(tmp_path):
    unit_path = ROOT / "contrib" / "systemd" / "downstream-farmer.service"
    unit = unit_settings(unit_path)
    setup = (ROOT / "setup.py").read_text()
    assert '"contrib/systemd/downstream-farmer.service"' in setup and '"docs/farmer.md"' in setup
    assert "downstream-farmer = downstream_tx.farmer.main:entry" in setup
    assert unit["Documentation"] == ["file:///opt/downstream-farmer/share/doc/downstream-tx/docs/farmer.md"]
    assert unit["User"] == ["downstream-farmer"] and unit["WorkingDirectory"] == ["/var/lib/downstream-farmer"]
    assert unit["StateDirectory"] == ["downstream-farmer"] and unit["KillSignal"] == ["SIGTERM"]
    assert "--config /etc/downstream-farmer/farmer.toml" in " ".join(unit["ExecStart"])
    doc = (ROOT / "docs" / "farmer.md").read_text()
    assert "python3 -m venv /opt/downstream-farmer" in doc  # the prefix the unit's paths assume
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    farmer = shutil.which("downstream-farmer", path=str(ROOT / ".venv" / "bin")) or "/bin/true"
    (tmp_path / unit_path.name).write_text(unit_path.read_text().replace("/opt/downstream-farmer/bin/downstream-farmer",
                                                                         farmer))
    result = subprocess.run([tool, "verify", "--man=no", str(tmp_path / unit_path.name)], capture_output=True,
                            text=True, timeout=60)
    problems = [line for line in result.stderr.splitlines()
                if "Unknown" in line or "Failed" in line or "not executable" in line or "Invalid" in line]
    assert result.returncode == 0 and not problems, result.stderr
