"""``downstream-admin copy``, ``backup`` and ``restore``: the commands that move a whole node
(``downstream_tx/lifecycle/``), with what they print.

The node's own database (the one ``--config``/``--db``/``--data-dir`` name) is opened first as every
command opens it — refused when missing or newer than the code, upgraded when older, as the daemon
would — before ``copy`` and ``backup`` read it; ``restore`` writes it and so requires it empty. The
work runs on a worker thread; a bar per stage shows on a terminal. Exit status 1 when the move
cannot be done (one line saying why; the target is left as empty as it was).
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from twisted.internet import threads

from downstream_tx.config import Config, ConfigError, _read_password
from downstream_tx.console import EXIT_FAILURE, EXIT_OK, BadInput, StageBars
from downstream_tx.db.transfer import TransferError
from downstream_tx.db.url import InvalidDbUrl, parse_db_url, with_password
from downstream_tx.lifecycle.backup import BackedUp, write_backup
from downstream_tx.lifecycle.copy import Moved, copy_database
from downstream_tx.lifecycle.restore import Restored, restore_backup


def target_url(args: argparse.Namespace) -> str:
    """``copy --to`` (with ``--to-password-file``'s password), checked before anything is opened."""
    try:
        parsed = parse_db_url(args.to)
    except InvalidDbUrl as e:
        raise BadInput(f"--to: {e}") from None
    if args.to_password_file is None:
        return args.to
    if parsed.scheme != "mysql" or parsed.password:
        raise BadInput("--to-password-file: only a mysql:// --to without a password takes one")
    try:
        password = _read_password({"db_password_file": args.to_password_file},
                                  {"db_password_file": "flag --to-password-file"})
    except ConfigError as e:
        raise BadInput(str(e).replace("db_password_file", "--to-password-file", 1)) from None
    return with_password(args.to, password or "")


async def run_lifecycle(args: argparse.Namespace, config: Config, reactor: Any, out, err) -> int:
    from downstream_tx.runtime import open_database

    progress = StageBars(err)
    try:
        if args.group == "copy":
            to = target_url(args)
            (await open_database(config, reactor, create=False)).close()
            moved = await _in_thread(reactor, copy_database, config.db_url, to, progress)
            print_moved(moved, "copied", out)
        elif args.group == "backup":
            (await open_database(config, reactor, create=False)).close()
            moved = await _in_thread(reactor, write_backup, config.db_url, config.chunk_path, args.path, progress)
            print_backup(moved, out)
        else:
            if not config.location_given:  # never a new node under whatever directory this runs in
                raise BadInput("restore: give the database to restore into: the daemon's --config (its data_dir or "
                               "db), --db or --data-dir")
            moved = await _in_thread(reactor, restore_backup, args.path, config.db_url, config.chunk_path, progress)
            print_restore(moved, os.path.abspath(config.chunk_path), out)
    except TransferError as e:
        progress.close()
        print(f"downstream-admin: {args.group}: {e}", file=err)
        return EXIT_FAILURE
    progress.close()
    if getattr(moved, "running", None):
        stamp = time.strftime("%H:%M:%S UTC", time.gmtime(time.time() - moved.seconds))
        print(f"downstream-admin: note: {moved.running}: what it wrote after {stamp} is not in the "
              f"{'copy' if args.group == 'copy' else 'backup'}; stop it before switching to the new database",
              file=err)
    missing = getattr(moved, "missing", ())
    if missing:
        print(f"downstream-admin: note: {len(missing)} stored files had no chunk file when it was read (removed "
              f"meanwhile?): {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}", file=err)
    return EXIT_OK


def _in_thread(reactor: Any, func, *args):
    return threads.deferToThreadPool(reactor, reactor.getThreadPool(), func, *args)


def size_text(n: int) -> str:
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} bytes"


def print_tables(moved: Moved, heading: str, out) -> None:
    """One line per table: rows and checksum (equal on both sides, or the command failed)."""
    width = max([len(name) for name, _, _ in moved.tables] + [5])
    print(f"{'table':{width}}  {'rows':>10}  checksum ({heading})", file=out)
    for name, source, _ in moved.tables:
        print(f"{name:{width}}  {source.rows:>10}  {source.checksum[:16]}", file=out)


def print_moved(moved: Moved, verb: str, out) -> None:
    print(f"{verb} {moved.source} (schema version {moved.version}) to {moved.target} in {moved.seconds:.1f} s",
          file=out)
    print_tables(moved, "source = target", out)
    print(f"{len(moved.tables)} tables, {moved.rows} rows: every table's row count and checksum are the same in "
          "the target", file=out)


def print_backup(moved: BackedUp, out) -> None:
    print(f"backed up {moved.source} (schema version {moved.version}) to {moved.path} in {moved.seconds:.1f} s",
          file=out)
    print_tables(moved, "of the snapshot, in the manifest", out)
    print(f"{len(moved.tables)} tables, {moved.rows} rows, {moved.chunks} chunk files "
          f"({size_text(moved.chunk_bytes)}); {moved.path}: {size_text(moved.size)}, mode 0600", file=out)


def print_restore(moved: Restored, chunk_dir: str, out) -> None:
    upgraded = f", upgraded to {moved.upgraded_to}" if moved.upgraded_to != moved.version else ""
    print(f"restored {moved.source}, written by downstream-tx {moved.node_version}, into {moved.target} "
          f"(schema version {moved.version}{upgraded}) in {moved.seconds:.1f} s", file=out)
    print_tables(moved, "backup = database", out)
    print(f"{len(moved.tables)} tables, {moved.rows} rows: every table's row count and checksum are the backup's; "
          f"{moved.chunks} chunk files ({size_text(moved.chunk_bytes)}) in {chunk_dir}", file=out)
