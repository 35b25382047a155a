"""The suite's own output: without MySQL, one line says how many MySQL tests did not run."""

import os
import subprocess
import sys

from support import MYSQL_ENV
from support.daemon import ROOT


def test_mysql_tests_are_summed_up_in_one_line_without_a_url():
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOWNSTREAM_")}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-ra", "-p", "no:randomly",
                             "tests/test_concurrency_mysql.py", "tests/test_admin.py", "-k", "mysql"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    lines = [line for line in result.stdout.splitlines() if MYSQL_ENV in line]
    assert len(lines) == 1, result.stdout
    assert lines[0].startswith("SKIPPED ") and "MySQL/MariaDB tests (deselected)" in lines[0]
    assert int(lines[0].split()[1]) >= 3
