"""Start the real daemon (``twistd -n downstream``) as a subprocess on a free loopback port."""

from __future__ import annotations

import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
LISTENING = re.compile(r"listening on [0-9a-fA-F.:]*?:(\d+) ")
METRICS = re.compile(r"metrics at http://[0-9a-fA-F.:]*?:(\d+)/metrics")
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
#: like TWISTD, but first sets LISTEN_PID / WATCHDOG_PID to the daemon's own pid (what systemd does)
#: and moves an inherited socket (fd number in DTX_TEST_LISTEN_FD) to fd 3
AS_SYSTEMD = [sys.executable, "-c", (
    "import os, sys\n"
    "fd = os.environ.pop('DTX_TEST_LISTEN_FD', None)\n"
    "if fd is not None:\n"
    "    os.dup2(int(fd), 3)\n"
    "    os.close(int(fd)) if int(fd) != 3 else None\n"
    "    os.environ['LISTEN_FDS'] = '1'\n"
    "    os.environ['LISTEN_FDNAMES'] = 'downstream.socket'\n"
    "    os.environ['LISTEN_PID'] = str(os.getpid())\n"
    "if os.environ.get('DTX_TEST_WATCHDOG_PID') == 'self':\n"
    "    os.environ['WATCHDOG_PID'] = str(os.getpid())\n"
    "os.environ.pop('DTX_TEST_WATCHDOG_PID', None)\n"
    "os.execv(sys.executable, [sys.executable, '-c', 'from twisted.scripts.twistd import run; run()'] + sys.argv[1:])\n"
)]


def sigterm(proc: subprocess.Popen, timeout: float, failure: Callable[[], str]) -> int:
    """Stop ``proc`` with SIGTERM (as systemd does) and return its exit status; if it is still
    running after ``timeout`` seconds, kill it and fail with ``failure()``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(failure()) from None
    return proc.returncode


def daemon_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOWNSTREAM_")}
    # the suite's farmers all come from 127.0.0.1, one network: a daemon test puts a file's replicas
    # on distinct networks only when it says so (tests/test_e2e_reputation.py sends X-Forwarded-For)
    env["DOWNSTREAM_DISTINCT_NETWORKS"] = "false"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


class Daemon:
    """``with Daemon(tmp_path, ["--tick", "0.2"]) as d: d.url`` — stops with SIGTERM on exit."""

    def __init__(self, workdir: Path, args: list[str] | None = None, env: dict[str, str] | None = None,
                 tac: bool = False, listen: str = "tcp:0:interface=127.0.0.1", timeout: float = 30.0,
                 listen_socket: socket.socket | None = None, watchdog_self: bool = False, scheme: str = "http",
                 log_file: Path | None = None, nofile: int | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "daemon.log"
        #: where the daemon's log lines go (its output, or --log-file)
        self.log_file = Path(log_file) if log_file else None
        extra = dict(env or {})
        self.pass_fds: tuple[int, ...] = ()
        launcher = TWISTD
        if listen_socket is not None or watchdog_self:
            launcher = AS_SYSTEMD
        if listen_socket is not None:
            self.pass_fds = (listen_socket.fileno(),)
            extra["DTX_TEST_LISTEN_FD"] = str(listen_socket.fileno())
        if watchdog_self:
            extra["DTX_TEST_WATCHDOG_PID"] = "self"
        if tac:
            extra.setdefault("DOWNSTREAM_LISTEN", listen)
            self.argv = launcher + ["-n", "--pidfile=", "-y", str(ROOT / "downstream.tac")]
        else:
            self.argv = launcher + ["-n", "--pidfile=", "downstream", "--listen", listen] + list(args or [])
            if log_file:
                self.argv += ["--log-file", str(log_file)]
        self.env = daemon_env(extra)
        #: the daemon's soft RLIMIT_NOFILE (its file descriptors), set in the child before it starts
        self.nofile = nofile
        self.timeout = timeout
        self.scheme = scheme
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.metrics_port: int | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self) -> Daemon:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, cwd=self.workdir, env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT, pass_fds=self.pass_fds,
                                     preexec_fn=None if self.nofile is None else self._limit_descriptors)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            match = LISTENING.search(self.log())
            if match:
                self.port = int(match.group(1))
                metrics = METRICS.search(self.log())
                self.metrics_port = int(metrics.group(1)) if metrics else None
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.output()}\n{self.log()}")
            time.sleep(0.05)  # polling a subprocess's log with a bound, not waiting on a timer
        self.stop()
        raise RuntimeError(f"daemon did not start listening within {self.timeout}s:\n{self.log()}")

    def _limit_descriptors(self) -> None:
        """(In the child, before exec.)"""
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, hard))

    def open_descriptors(self) -> int:
        """File descriptors the daemon holds now."""
        assert self.proc is not None
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def metric(self, sample: str) -> float | None:
        """The value of one sample of the daemon's /metrics (``--metrics-listen``), as written there
        (``name`` or ``name{label="value"}``); None when it has none."""
        with urllib.request.urlopen(self.metrics_url, timeout=10) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(sample + " "):
                    return float(line.split()[-1])
        return None

    def log(self) -> str:
        """The daemon's log so far (its --log-file when it has one, else its output)."""
        path = self.log_file or self.log_path
        return path.read_text(errors="replace") if path.exists() else ""

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, pattern: str, timeout: float = 15.0, count: int = 1) -> re.Match:
        """Poll the log (bounded) until ``pattern`` has matched ``count`` times; return the last match."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            matches = list(regex.finditer(self.log()))
            if len(matches) >= count:
                return matches[count - 1]
            if self.proc is not None and self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} not logged {count} times within {timeout}s:\n{self.log()}")

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait; returns the exit status (kills and fails after ``timeout``)."""
        if self.proc is None:
            return 0
        code = sigterm(self.proc, timeout, lambda: f"daemon did not stop within {timeout}s:\n{self.log()}")
        self._log.close()
        return code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()
