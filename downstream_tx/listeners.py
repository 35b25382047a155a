"""Server endpoints from endpoint strings, with one difference from Twisted's own parser:
``systemd:`` accepts sockets passed without names.

Twisted's ``systemd:`` endpoint reads ``LISTEN_FDS`` only together with ``LISTEN_FDNAMES`` (which
systemd 227+ always sets) and otherwise sees no socket at all, so ``systemd-socket-activate``
without ``--fdname`` failed with ``IndexError`` at the first connection. Here, sockets passed
without names are named ``unknown`` (what ``sd_listen_fds_with_names(3)`` reports for them), so
``index=N`` finds them; and a missing socket is a one-line start-up error.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any

from twisted.internet import endpoints
from twisted.python.systemd import ListenFDs

from downstream_tx.config import endpoint_parts
from downstream_tx.startup import StartupError

_LISTEN_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


def launch_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` plus the ``LISTEN_*`` variables the process was started with.

    Importing ``twisted.internet.endpoints`` (twistd does it before the node's code runs) deletes
    ``LISTEN_PID`` and ``LISTEN_FDS`` from ``os.environ``, and keeps the sockets only when
    ``LISTEN_FDNAMES`` was set too. The environment the process was executed with is still in
    ``/proc/self/environ`` (Linux, like systemd); ``LISTEN_PID`` must name this process, so
    variables meant for a parent are never used."""
    env = dict(environ)
    if environ is not os.environ or "LISTEN_FDS" in env:
        return env
    try:
        with open("/proc/self/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return env
    for item in raw.split(b"\0"):
        key, _, value = item.partition(b"=")
        name = key.decode("ascii", "replace")
        if name in _LISTEN_VARIABLES:
            env.setdefault(name, value.decode("utf-8", "replace"))
    return env


def with_default_names(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` with ``LISTEN_FDNAMES`` set to ``unknown`` for each passed socket when the
    launcher did not name them."""
    env = dict(environ)
    if "LISTEN_FDS" in env and "LISTEN_FDNAMES" not in env:
        try:
            count = int(env["LISTEN_FDS"])
        except ValueError:
            return env
        env["LISTEN_FDNAMES"] = ":".join(["unknown"] * count)
    return env


def server_endpoint(reactor: Any, description: str, environ: Mapping[str, str]) -> Any:
    kind, _, keywords = endpoint_parts(description)
    if kind != "systemd":
        return endpoints.serverFromString(reactor, description)
    environ = launch_environ(environ)
    fds = ListenFDs.fromEnvironment(environ=with_default_names(environ))
    passed = fds.inheritedDescriptors()
    hint = (f"(LISTEN_FDS={environ.get('LISTEN_FDS', 'unset')}: start the node through its .socket unit or "
            f"systemd-socket-activate, see docs/operations.md)")
    if "name" in keywords:
        fileno = fds.inheritedNamedDescriptors().get(keywords["name"])
        if fileno is None:
            raise StartupError(f"listen {description}: no socket named {keywords['name']!r} was passed {hint}")
    else:
        index = int(keywords.get("index", "0"))
        if index >= len(passed):
            raise StartupError(f"listen {description}: no socket number {index} was passed {hint}")
        fileno = passed[index]
    family = getattr(socket, "AF_" + keywords.get("domain", "INET"), None)
    if family is None:
        raise StartupError(f"listen {description}: unknown domain {keywords.get('domain')!r} (INET, INET6 or UNIX)",
                           exit_code=2)
    return endpoints.AdoptedStreamServerEndpoint(reactor, fileno, family)
