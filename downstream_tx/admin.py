"""``downstream-admin``: the operator's command line over the node's services.

Exit status: 0 success, 2 bad input (nothing changed), 1 any other failure.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from downstream_tx.config import SETTINGS, Config, ConfigError, load_config
from downstream_tx.errors import UNAVAILABLE, NodeError

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2
MAX_WHITELIST_BYTES = 64 << 20


class BadInput(Exception):
    """Bad input detected by the command line itself (exit status 2)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="downstream-admin", description="Operate a downstream-tx node.")
    p.add_argument("--config", help="TOML configuration file (as for the daemon)")
    for s in SETTINGS:
        if s.name in ("db", "data_dir", "chunk_dir", "max_file_size", "challenge_batch", "challenge_low_water",
                      "whitelist", "min_balance", "max_tokens_per_address"):
            p.add_argument("--" + s.option, dest=s.name, help=f"{s.help} [env {s.env}]")
    sub = p.add_subparsers(dest="group", required=True, metavar="COMMAND")

    token = sub.add_parser("token", help="create or delete farmer tokens").add_subparsers(dest="cmd", required=True)
    token.add_parser("create", help="new token for an address (prints the token)").add_argument("address")
    token.add_parser("delete", help="delete a token; its contracts end").add_argument("token")

    files = sub.add_parser("file", help="manage monitored files").add_subparsers(dest="cmd", required=True)
    add = files.add_parser("add", help="add a chunk (prints its hash)")
    add.add_argument("path")
    add.add_argument("--redundancy", type=int, required=True, help="farmers that should hold it")
    add.add_argument("--interval", type=int, required=True, help="seconds between challenges")
    add.add_argument("--metadisk", action="store_true", help="store the bytes as given (already encrypted)")
    files.add_parser("remove", help="stop monitoring a file").add_argument("hash")
    listing = files.add_parser("list", help="files with replica counts")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    export = files.add_parser("export", help="write a stored file's original bytes")
    export.add_argument("hash")
    export.add_argument("output")

    chal = sub.add_parser("challenges", help="hash challenges").add_subparsers(dest="cmd", required=True)
    gen = chal.add_parser("generate", help="generate a challenge batch for a file")
    gen.add_argument("hash")
    gen.add_argument("--root-seed", help="64 hex characters (default: random)")
    gen.add_argument("--count", type=int, help="challenges in the batch (default: challenge_batch)")
    chal.add_parser("update", help="run one pass of the periodic challenge work")

    wl = sub.add_parser("whitelist", help="address whitelist").add_subparsers(dest="cmd", required=True)
    imp = wl.add_parser("import", help="import address,balance rows from a CSV file")
    imp.add_argument("csv")
    imp.add_argument("--replace", action="store_true", help="deactivate addresses missing from the file")

    farmer = sub.add_parser("farmer", help="farmers").add_subparsers(dest="cmd", required=True)
    farmer.add_parser("show", help="a farmer's tokens and contracts").add_argument("farmer_id")

    sub.add_parser("config", help="print the effective configuration (secrets masked)")
    return p


def parse_whitelist(path: str) -> list[tuple[str, int]]:
    """Rows of ``address,balance``; a header row and blank lines are skipped."""
    try:
        if os.path.getsize(path) > MAX_WHITELIST_BYTES:
            raise BadInput(f"{path}: larger than {MAX_WHITELIST_BYTES} bytes")
        with open(path, newline="", encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise BadInput(f"{path}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError:
        raise BadInput(f"{path}: not UTF-8 text") from None
    rows = []
    try:
        parsed = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as e:
        raise BadInput(f"{path}: not a CSV file: {e}") from None
    for number, row in enumerate(parsed, 1):
        cells = [c.strip() for c in row]
        if not any(cells):
            continue
        if len(cells) != 2:
            raise BadInput(f"{path}:{number}: expected address,balance")
        address, balance = cells
        if number == 1 and not balance.isdigit():
            continue  # header
        if not balance.isdigit() or len(balance) > 18:
            raise BadInput(f"{path}:{number}: balance must be a whole number >= 0")
        rows.append((address, int(balance)))
    return rows


class ProgressBar:
    """A progress bar on stderr for work that takes more than a moment, only on a terminal."""

    def __init__(self, label: str, stream=None, delay: float = 0.5):
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.started = time.monotonic()
        self.delay = delay
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or time.monotonic() - self.started < self.delay:
            return
        fraction = done / total if total else 1.0
        bar = "#" * int(fraction * 30)
        self.stream.write(f"\r{self.label} [{bar:<30}] {fraction * 100:5.1f}%")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.stream.write("\n")


async def run_command(args: argparse.Namespace, config: Config, reactor: Any, out) -> int:
    from downstream_tx.runtime import open_services

    services = await open_services(config, reactor)
    try:
        return await _dispatch(args, services, out)
    finally:
        services.db.close()


async def _dispatch(args, services, out) -> int:
    from downstream_tx.runtime import contract_timer

    key = (args.group, args.cmd)
    if key == ("token", "create"):
        print(await services.v0.create_token(args.address), file=out)
    elif key == ("token", "delete"):
        ended = await services.farmers.delete_token(args.token)
        print(f"token deleted; {ended} contracts ended", file=out)
    elif key == ("file", "add"):
        bar = ProgressBar("adding")
        try:
            print(await services.files.add(args.path, args.redundancy, args.interval, args.metadisk, bar), file=out)
        finally:
            bar.close()
    elif key == ("file", "remove"):
        ended = await services.files.remove(args.hash)
        print(f"file removed; {ended} contracts ended", file=out)
    elif key == ("file", "list"):
        rows = await services.files.list()
        if args.json:
            print(json.dumps(rows, indent=1), file=out)
        else:
            print(f"{'file_hash':64}  {'size':>12}  {'replicas':>8}  {'interval':>8}  {'unused':>6}", file=out)
            for r in rows:
                print(f"{r['file_hash']:64}  {r['size']:>12}  {r['replicas']:>3}/{r['redundancy']:<4}  "
                      f"{r['interval']:>8}  {r['unused_challenges']:>6}", file=out)
    elif key == ("file", "export"):
        bar = ProgressBar("exporting")
        try:
            size = await services.files.export(args.hash, args.output, bar)
        finally:
            bar.close()
        print(f"wrote {size} bytes to {args.output}", file=out)
    elif key == ("challenges", "generate"):
        root_seed = None
        if args.root_seed is not None:
            try:
                root_seed = bytes.fromhex(args.root_seed)
            except ValueError:
                raise BadInput("--root-seed must be 64 hexadecimal characters") from None
            if len(root_seed) != 32 or len(args.root_seed) != 64:
                raise BadInput("--root-seed must be 64 hexadecimal characters")
        print(json.dumps(await services.files.generate_challenges(args.hash, root_seed, args.count)), file=out)
    elif key == ("challenges", "update"):
        # the daemon's own timer pass, downtime rule included: a pass run while the daemon is
        # stopped forgives what the downtime made farmers miss
        result = await contract_timer(services)()
        print(json.dumps({"issued": result.issued, "missed": result.missed, "forgiven": result.forgiven,
                          "failed": result.failed, "starved": result.starved}), file=out)
    elif key == ("whitelist", "import"):
        rows = parse_whitelist(args.csv)
        print(json.dumps(await services.farmers.import_whitelist(rows, args.replace)), file=out)
    elif key == ("farmer", "show"):
        print(json.dumps(await services.farmers.show(args.farmer_id), indent=1), file=out)
    return EXIT_OK


def main(argv: list[str] | None = None, environ=None, out=None, err=None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    overrides = {s.name: getattr(args, s.name) for s in SETTINGS if getattr(args, s.name, None) is not None}
    try:
        config = load_config(args.config, environ, overrides)
    except ConfigError as e:
        print(f"downstream-admin: configuration error: {e}", file=err)
        return EXIT_BAD_INPUT
    if args.group == "config":
        for name, value in config.describe():
            print(f"{name} = {value}", file=out)
        return EXIT_OK
    return _react(lambda reactor: run_command(args, config, reactor, out), err)


def _react(main_coroutine: Callable[[Any], Any], err) -> int:
    from twisted.internet import defer, task

    result: dict[str, int] = {}

    async def run(reactor):
        try:
            result["code"] = await main_coroutine(reactor)
        except (NodeError, BadInput) as e:
            unavailable = isinstance(e, NodeError) and e.kind == UNAVAILABLE
            print(f"downstream-admin: {e}", file=err)
            result["code"] = EXIT_FAILURE if unavailable else EXIT_BAD_INPUT
        except Exception as e:

            print(f"downstream-admin: error: {e.__class__.__name__}: {e}", file=err)
            result["code"] = EXIT_FAILURE

    try:
        task.react(lambda reactor: defer.ensureDeferred(run(reactor)))
    except SystemExit:
        pass
    return result.get("code", EXIT_FAILURE)


def entry() -> None:
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # output piped into `head` and the like
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = EXIT_OK
    sys.exit(code)
