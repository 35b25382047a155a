"""``downstream-farmer``: the console entry point, and the only farmer module that uses the global
reactor. Exit status: 0 after a clean stop (SIGTERM, SIGINT, ``--number`` reached), 1 when no
node is left to farm with or a file cannot be read, 2 for a bad setting (one line on stderr)."""

from __future__ import annotations

import os
import sys

from twisted.internet import threads
from twisted.logger import globalLogBeginner
from twisted.python.threadpool import ThreadPool

from .files import FarmerFileError
from .settings import Settings, SettingsError, load_settings


def entry() -> None:
    sys.exit(main(sys.argv[1:]))


def main(argv: list[str]) -> int:
    try:
        settings = load_settings(argv)
    except SettingsError as e:
        print(f"downstream-farmer: error: {e}", file=sys.stderr)
        return 2
    from twisted.internet import reactor

    from .farm import Farm
    from .transport import http_client

    pool = ThreadPool(minthreads=1, maxthreads=settings.threads, name="downstream-farmer")

    def blocking(f, *args, **kwargs):
        return threads.deferToThreadPool(reactor, pool, f, *args, **kwargs)

    try:
        farm = Farm(settings, http_client(reactor, verify=not settings.ssl_no_verify), reactor, blocking)
    except FarmerFileError as e:
        print(f"downstream-farmer: {e}", file=sys.stderr)
        return 1
    except SettingsError as e:
        print(f"downstream-farmer: error: {e}", file=sys.stderr)
        return 2
    view = start_logging(settings, reactor, farm)
    pool.start()
    reactor.addSystemEventTrigger("during", "shutdown", pool.stop)
    # SIGTERM and SIGINT stop the reactor; the farm's stop runs first and is waited for
    reactor.addSystemEventTrigger("before", "shutdown", farm.stop)
    reactor.addSystemEventTrigger("before", "shutdown", view.stop)
    stopping = []
    reactor.addSystemEventTrigger("before", "shutdown", stopping.append, True)
    # a farm that ends on its own (--number reached, no node left) stops the reactor
    farm.done.addCallback(lambda _: None if stopping else reactor.stop())
    reactor.callWhenRunning(farm.start)
    reactor.callWhenRunning(view.start)
    reactor.run()
    return farm.exit_code


def start_logging(settings: Settings, reactor, farm):
    """The log file, standard output (log lines or the status view) and the status view."""
    from .logs import observer, warnings_to
    from .status import StatusView

    observers = []
    if settings.log_path:
        directory = os.path.dirname(os.path.abspath(settings.log_path))
        os.makedirs(directory, exist_ok=True)
        observers.append(observer(open(settings.log_path, "a", encoding="utf-8"), settings.json_log))
    tty = sys.stdout.isatty()
    show_view = tty and not settings.quiet and not settings.print_log
    if settings.print_log or (not settings.quiet and not tty):
        observers.append(observer(sys.stdout, settings.json_log))
    view = StatusView(reactor, lambda: farm.nodes, lambda: farm.passed, sys.stdout if show_view else None,
                      settings.summary_interval)
    observers.append(warnings_to(view.note))
    globalLogBeginner.beginLoggingTo(observers, redirectStandardIO=False, discardBuffer=True)
    return view
