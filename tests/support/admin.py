"""downstream-admin in process (over a test node's services) and as a subprocess, for the tests
that run the real command line."""

from __future__ import annotations

import io
import subprocess
import sys

from downstream_tx import admin
from support import run
from support.daemon import daemon_env

ADMIN = [sys.executable, "-c", "from downstream_tx.admin import entry; entry()"]


def cli(tmp_path, *argv, db=None, env=None):
    """Run downstream-admin as a subprocess on a data dir under tmp_path."""
    base = ["--data-dir", str(tmp_path / "data")] + (["--db", db] if db else [])
    return subprocess.run(ADMIN + base + list(argv), cwd=tmp_path, env=daemon_env(env), capture_output=True,
                          text=True, timeout=60)


def dispatch(node, *argv) -> str:
    """Run a downstream-admin command in process over ``node``'s services; its standard output
    (the command must succeed)."""
    out = io.StringIO()
    args = admin.build_parser().parse_args(list(argv))
    assert run(admin._dispatch(args, node, out)) == 0
    return out.getvalue()
