"""``downstream-admin``: the operator's command line over the node's services.

Exit status: 0 success, 2 bad input (nothing changed), 1 any other failure (among them: no
database where the command looked — only ``file add`` and ``whitelist import`` create one).

Output: tables and ``farmer show`` are for people (times in ISO 8601 UTC); ``--json`` gives the raw
values (times as Unix seconds) for scripts.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from downstream_tx import times
from downstream_tx.config import SETTINGS, Config, ConfigError, load_config
from downstream_tx.console import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_OK, BadInput, ProgressBar
from downstream_tx.core.reputation import standing_sentence, standing_word, threshold_note
from downstream_tx.domain.rules import Rules
from downstream_tx.errors import NOT_FOUND, REFUSED, UNAVAILABLE, NodeError
from downstream_tx.version import full_version

#: commands that set up a node, and so may create its database where --config, --db or --data-dir
#: (or their DOWNSTREAM_* variables) name it; every other one refuses a database that does not exist
#: (a typo in --data-dir, or run from another directory)
CREATING_COMMANDS = {("file", "add"), ("whitelist", "import")}

#: commands that move the whole node (``admin_lifecycle.py``): they open databases their own way
LIFECYCLE = ("copy", "backup", "restore")

MAX_WHITELIST_BYTES = 64 << 20


class VersionAction(argparse.Action):
    """``--version``: the release and the commit (``version.full_version``), found only when asked."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"downstream-admin (downstream-tx) {full_version()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="downstream-admin", description="Operate a downstream-tx node.",
                                epilog="Give the same --config / --db / --data-dir as the daemon (or run in its "
                                       "directory). Exit status: 0 ok, 2 bad input, 1 other failure.")
    p.add_argument("--version", action=VersionAction, help="print the version (release and commit) and exit")
    p.add_argument("--config", help="TOML configuration file (as for the daemon)")
    for s in SETTINGS:
        if s.name in ("db", "data_dir", "chunk_dir", "max_file_size", "challenge_batch", "challenge_low_water",
                      "whitelist", "min_balance", "max_tokens_per_address"):
            p.add_argument("--" + s.option, dest=s.name, help=f"{s.help} [env {s.env}]")
    p.add_argument("--db-password-file", dest="db_password_file", help="file holding the MySQL password")
    sub = p.add_subparsers(dest="group", required=True, metavar="COMMAND")

    token = sub.add_parser("token", help="create or delete farmer tokens").add_subparsers(dest="cmd", required=True)
    create = token.add_parser("create", help="new token for an address (prints the token and the farmer id)")
    create.add_argument("address")
    create.add_argument("--json", action="store_true", help="machine-readable output")
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
    show = farmer.add_parser("show", help="a farmer's contracts and counters")
    show.add_argument("farmer", metavar="FARMER", help="farmer id (20 hex), token (32 hex) or SJCX address")
    show.add_argument("--json", action="store_true", help="machine-readable output (times as Unix seconds)")
    flist = farmer.add_parser("list", help="every farmer: address, protocol, contracts, passes, misses, last seen")
    flist.add_argument("--json", action="store_true", help="one JSON object per line (times as Unix seconds)")
    flist.add_argument("--limit", type=int, help="at most this many farmers (default: all)")
    reinstate = farmer.add_parser("reinstate", help="lift a farmer's disqualification or suspension (its address: "
                                                    "every token of it)")
    reinstate.add_argument("farmer", metavar="FARMER", help="farmer id (20 hex), token (32 hex) or SJCX address")

    copy = sub.add_parser("copy", help="copy the node's whole state into another, empty database (SQLite to "
                                       "MySQL/MariaDB or back), read as of one moment, checked table by table")
    copy.add_argument("--to", required=True, metavar="URL", dest="to",
                      help="the empty target: sqlite:///path/file.db or mysql://user:password@host:port/dbname")
    copy.add_argument("--to-password-file", metavar="FILE",
                      help="file holding the target's MySQL password (first line), kept out of the URL")
    backup = sub.add_parser("backup", help="write the node's whole state (every table and the chunk store) to a new "
                                           "file (mode 0600), while the node runs")
    backup.add_argument("path", metavar="PATH")
    restore = sub.add_parser("restore", help="restore a backup into the configured database, which must be empty, "
                                             "and its chunks into the chunk directory")
    restore.add_argument("path", metavar="PATH")
    for single in (copy, backup, restore):
        single.set_defaults(cmd="")

    cfg = sub.add_parser("config", help="print the settings this invocation resolves, with their sources")
    cfg.add_argument("--json", action="store_true", help="machine-readable output")
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
        whole = balance.isascii() and balance.isdigit()  # str.isdigit alone takes '¹', which int() refuses
        if number == 1 and not whole:
            continue  # header
        if not whole or len(balance) > 18:
            raise BadInput(f"{path}:{number}: balance must be a whole number >= 0")
        rows.append((address, int(balance)))
    return rows


def iso_utc(t: float | None) -> str:
    """``2026-11-30T21:50:07Z`` (tables and ``farmer show``; ``--json`` keeps the Unix seconds)."""
    return times.iso_utc(t) or "-"


def farmer_token_or_address(text: str) -> tuple[str, str]:
    """What ``farmer show`` was given: ``("id", farmer_id)`` for 20 hex characters, ``("id", …)`` of
    a 32-hex token (the farmer id is derived from it; the token is never looked up or stored), or
    ``("address", text)``."""
    from downstream_tx import bitcoin
    from downstream_tx.core.tokens import FARMER_ID_RE, farmer_id_of, hash_token, is_token

    text = text.strip()
    lowered = text.lower()
    if FARMER_ID_RE.match(lowered):
        return "id", lowered
    if is_token(lowered):
        return "id", farmer_id_of(hash_token(lowered))

    try:
        bitcoin.decode_address(text)
    except bitcoin.InvalidAddress:
        raise BadInput("FARMER must be a farmer id (20 hex characters), a token (32) or an SJCX address") from None
    return "address", text


#: farmers fetched per query by ``farmer list``
FARMER_PAGE = 500

FARMER_COLUMNS = ("farmer_id", "address", "protocol", "contracts", "passes", "fails", "misses", "last_seen",
                  "online", "audit", "standing")


def farmer_table_row(f: Any, rep: dict | None = None) -> str:
    audit = f"{rep['audit_score']:.4f}" if rep else "-"
    return (f"{f.farmer_id:20}  {f.address:34}  {f.protocol or '-':8}  {f.contracts:>9}  {f.passes:>7}  "
            f"{f.fails:>5}  {f.misses:>6}  {iso_utc(f.last_seen):20}  {'yes' if f.online else 'no':6}  "
            f"{audit:>6}  {standing_word(rep)}")


def farmer_table_head() -> str:
    return (f"{'farmer_id':20}  {'address':34}  {'protocol':8}  {'contracts':>9}  {'passes':>7}  {'fails':>5}  "
            f"{'misses':>6}  {'last_seen (UTC)':20}  {'online':6}  {'audit':>6}  standing")


def reputation_lines(rep: dict, rules: Rules) -> list[tuple[str, Any]]:
    """The reputation part of ``farmer show`` (the farmer's address: shared by its tokens): each score
    says where it stands against its threshold, the standing why and since when."""
    a = rep["audits"]
    audit = threshold_note(rep["audit_score"], rules.dq_threshold, "dq_threshold")
    unknown = threshold_note(rep["unknown_score"], rules.suspension_threshold, "suspension_threshold")
    online = threshold_note(rep["online_score"], rules.online.threshold, "offline_threshold")
    return [("standing", standing_sentence(rep, rules)),
            ("audit_score", f"{rep['audit_score']:.6f} ({audit})"),
            ("online_score", f"{rep['online_score']:.6f} ({online})"),
            ("unknown_score", f"{rep['unknown_score']:.6f} ({unknown})"),
            ("audits", f"{a['passes']} passes, {a['fails']} fails, {a['misses']} misses, {a['retries']} asked "
                       f"again in containment, {a['errors']} errors"),
            # the node's own verdict (kept as it last judged the farmer), not this command's settings
            ("vetted", f"yes (the node's verdict; {a['passes']} passes)" if rep["vetted"]
             else f"no (the node's verdict; {a['passes']} passes)"),
            ("contained", f"{rep['contained']} contracts")]


def farmer_details(shown: dict, summary: Any, rules: Rules | None = None) -> list[str]:
    """``farmer show`` for people: one ``name  value`` line each, times in ISO 8601 UTC."""
    c = shown["contracts"]
    lines = [("farmer_id", shown["farmer_id"]), ("address", shown["address"]),
             ("created", iso_utc(shown["created"])),
             ("protocol", (summary.protocol if summary else "") or "-"),
             ("contracts", f"{c.get('active', 0)} active, {c.get('ended', 0)} ended, {c.get('failed', 0)} failed"),
             ("passes", c.get("passes", 0)), ("fails", c.get("fails", 0)), ("misses", c.get("misses", 0)),
             ("downloads", f"{c.get('downloads', 0)} served ({c.get('redownloads', 0)} after their window), "
                           f"{c.get('downloads_refused', 0)} refused (v0: a chunk is served once per contract)"),
             ("heartbeats", f"{shown['heartbeats']} (v1 proofs accepted)"),
             ("last_seen", iso_utc(summary.last_seen) if summary else "-"),
             ("online", ("yes" if summary.online else "no") if summary else "no")]
    if shown.get("reputation"):
        lines += reputation_lines(shown["reputation"], rules or Rules())
    return [f"{name:13} {value}" for name, value in lines]


def check_arguments(args: argparse.Namespace) -> None:
    """Bad arguments are refused (exit 2) before the database is opened."""
    from downstream_tx.v0.hashes import is_hex64

    file_hash = getattr(args, "hash", None)
    if file_hash is not None and not is_hex64(file_hash):
        raise BadInput("file hash must be 64 hexadecimal characters")
    if (args.group, args.cmd) in (("farmer", "show"), ("farmer", "reinstate")):
        farmer_token_or_address(args.farmer)


def new_sqlite_path(config: Config) -> str | None:
    """The SQLite file a creating command is about to create, if there is none yet."""
    from downstream_tx.db.url import parse_db_url

    url = parse_db_url(config.db_url)
    if url.scheme == "sqlite" and not os.path.exists(url.path):
        return os.path.abspath(url.path)
    return None


async def run_command(args: argparse.Namespace, config: Config, reactor: Any, out, err=None) -> int:
    from downstream_tx.runtime import open_services

    check_arguments(args)
    if args.group in LIFECYCLE:
        from downstream_tx.admin_lifecycle import run_lifecycle

        return await run_lifecycle(args, config, reactor, out, err or sys.stderr)
    # a node is set up only where the operator said (the daemon's --config, --db or --data-dir): never
    # silently under the directory the command happens to run in
    create = (args.group, args.cmd) in CREATING_COMMANDS and config.location_given
    created = new_sqlite_path(config) if create else None
    services = await open_services(config, reactor, create=create)
    if created is not None:
        print(f"downstream-admin: created a new database at {created}", file=err or sys.stderr)
    try:
        return await _dispatch(args, services, out)
    finally:
        services.db.close()


async def _dispatch(args, services, out) -> int:
    from downstream_tx.runtime import contract_timer

    key = (args.group, args.cmd)
    if key == ("token", "create"):
        from downstream_tx.core.tokens import farmer_id_of, hash_token

        token = await services.v0.create_token(args.address)
        farmer_id = farmer_id_of(hash_token(token))
        if args.json:
            print(json.dumps({"token": token, "farmer_id": farmer_id}), file=out)
        else:
            print(f"token      {token}", file=out)
            print(f"farmer_id  {farmer_id}", file=out)
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
        bar = ProgressBar("hashing")
        try:
            print(json.dumps(await services.files.generate_challenges(args.hash, root_seed, args.count, bar)),
                  file=out)
        finally:
            bar.close()
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
        await _farmer_show(args, services, out)
    elif key == ("farmer", "list"):
        await _farmer_list(args, services, out)
    elif key == ("farmer", "reinstate"):
        kind, value = farmer_token_or_address(args.farmer)
        address = value if kind == "address" else (await services.farmers.show(value))["address"]
        before = await services.reputation.reinstate(address)
        print(f"farmer {address} reinstated (was {before})", file=out)
    return EXIT_OK


async def _farmer_show(args, services, out) -> None:
    farmers = services.farmers
    kind, value = farmer_token_or_address(args.farmer)
    ids = [value] if kind == "id" else await farmers.ids_by_address(value)
    if not ids:
        raise NodeError(NOT_FOUND, "no_farmer", f"no farmer has address {value}")
    shown = [await farmers.show(farmer_id) for farmer_id in ids]
    standing = await services.reputation.of(sorted({item["address"] for item in shown}))
    for item in shown:
        item["reputation"] = standing[item["address"]]
    summaries = {s.farmer_id: s for s in await farmers.summaries(ids)}
    if args.json:
        for item in shown:
            summary = summaries.get(item["farmer_id"])
            item.update({"last_seen": summary.last_seen if summary else None,
                         "online": bool(summary and summary.online),
                         "protocol": summary.protocol if summary else ""})
        print(json.dumps(shown[0] if kind == "id" else shown, indent=1), file=out)
        return
    for number, item in enumerate(shown):
        if number:
            print(file=out)
        for line in farmer_details(item, summaries.get(item["farmer_id"]), services.stores.reputation.rules):
            print(line, file=out)


async def _farmer_list(args, services, out) -> None:
    """Pages of ``FARMER_PAGE`` from the database, printed as they come (memory stays flat)."""
    farmers = services.farmers
    remaining = args.limit
    if remaining is not None and remaining < 0:
        raise BadInput("--limit must be 0 or more")
    if not args.json:
        print(farmer_table_head(), file=out)
    after = 0
    while remaining is None or remaining > 0:
        size = FARMER_PAGE if remaining is None else min(FARMER_PAGE, remaining)
        page = await farmers.page(after, size)
        standing = await services.reputation.of(sorted({f.address for f in page}))
        for f in page:
            rep = standing[f.address]
            print(json.dumps({**f.as_dict(), "reputation": rep}) if args.json else farmer_table_row(f, rep), file=out)
        if remaining is not None:
            remaining -= len(page)
        if len(page) < size:
            break
        after = page[-1].id


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
        print_config(config, args.json, out)
        return EXIT_OK
    return _react(lambda reactor: run_command(args, config, reactor, out, err), err, config)


def print_config(config: Config, as_json: bool, out) -> None:
    """Each setting, its value (secrets masked, derived defaults resolved) and where it came from.
    This is what *this* invocation resolves from its own defaults, file, environment and options:
    a daemon started with other options or another environment runs with other values."""
    rows = config.describe_sources()
    if as_json:
        print(json.dumps({name: {"value": value, "source": source} for name, value, source in rows}, indent=1),
              file=out)
        return
    print("# settings as this downstream-admin resolves them (default < file < env < flag); a running daemon "
          "started with other options or environment uses its own", file=out)
    width = max(len(f"{name} = {value}") for name, value, _ in rows)
    for name, value, source in rows:
        print(f"{f'{name} = {value}':{width}}  # {source}", file=out)


def _react(main_coroutine: Callable[[Any], Any], err, config: Config | None = None) -> int:
    from twisted.internet import defer, task

    result: dict[str, int] = {}

    async def run(reactor):
        try:
            result["code"] = await main_coroutine(reactor)
        except (NodeError, BadInput) as e:
            unavailable = isinstance(e, NodeError) and e.kind in (UNAVAILABLE, REFUSED)
            print(f"downstream-admin: {e}", file=err)
            result["code"] = EXIT_FAILURE if unavailable else EXIT_BAD_INPUT
        except Exception as e:
            from downstream_tx.startup import explain

            explained = explain(e, config)
            if explained is not None:
                print(f"downstream-admin: {explained}", file=err)
                result["code"] = explained.exit_code
            else:
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
