"""Which build this is: the release plus the commit (``downstream_tx/version.py``), from a checkout at
run time or from the file ``setup.py`` writes into a wheel."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import types

import pytest

from downstream_tx import __version__, version

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def git(root, *args):
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@example.org", "PATH": "/usr/bin:/bin", "HOME": str(root)})


@needs_git
def test_a_checkout_names_its_commit_and_local_changes(tmp_path):
    assert version.git_commit(str(tmp_path)) is None  # no .git: not a checkout
    git(tmp_path, "init", "-q")
    (tmp_path / "a.txt").write_text("one\n")
    git(tmp_path, "add", "a.txt")
    git(tmp_path, "commit", "-q", "-m", "first")
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert version.git_commit(str(tmp_path)) == "g" + head[:12]
    (tmp_path / "a.txt").write_text("two\n")
    assert version.git_commit(str(tmp_path)) == "g" + head[:12] + ".dirty"
    (tmp_path / "a.txt").write_text("one\n")
    git(tmp_path, "commit", "-q", "--allow-empty", "-m", "second")
    assert version.git_commit(str(tmp_path)) not in (None, "g" + head[:12])  # another build, another name


def test_without_git_the_commit_written_at_build_time(monkeypatch, tmp_path):
    monkeypatch.setattr(version, "_ROOT", str(tmp_path))  # no checkout here
    version.full_version.cache_clear()
    try:
        monkeypatch.setitem(sys.modules, "downstream_tx._build", types.SimpleNamespace(COMMIT="g0123456789ab"))
        assert version.full_version() == f"{__version__}+g0123456789ab"
        version.full_version.cache_clear()
        monkeypatch.setitem(sys.modules, "downstream_tx._build", types.SimpleNamespace(COMMIT=None))
        assert version.full_version() == __version__  # built from a tree without git: the release alone
    finally:
        version.full_version.cache_clear()


def test_the_release_is_kept_in_one_place():
    from support.daemon import ROOT

    setup = (ROOT / "setup.py").read_text()
    assert 'version=release()' in setup and '"0.1' not in setup
    assert re.fullmatch(r"\d+\.\d+\.\d+([ab]\d+|\.dev\d+)?", __version__)
    assert version.full_version().startswith(__version__)
