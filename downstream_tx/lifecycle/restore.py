"""``downstream-admin restore PATH``: a backup (``backup.py``) into the configured database, which
must be empty, and its chunk store into the configured chunk directory.

The backup is read once, front to back (memory stays flat): the manifest first — a backup of a
newer schema than this downstream-tx knows is refused before anything is written — then each table,
checked against the manifest's count and checksum as it is inserted and again as the database stores
it, then the chunk files, each checked against its name (the SHA-256 of its bytes). A backup of an
older schema is restored at its own version and then upgraded, as the daemon would upgrade it on
start. Any failure leaves the database empty (``db/transfer.py``); chunk files already written stay
(each is named by its content: a later restore finds them right).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import tarfile
import tempfile
import time
from dataclasses import dataclass
from typing import IO, Any

import orjson

from downstream_tx.db.lock import daemon_pid
from downstream_tx.db.schema import load_steps
from downstream_tx.db.transfer import PAGE, Table, TableSum, Target, TransferError, canonical_row
from downstream_tx.lifecycle import QUIET, Progress
from downstream_tx.lifecycle.backup import (
    CHUNKS,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    TRAILER,
    BackedUp,
    decode_value,
    member_name,
)
from downstream_tx.lifecycle.copy import compare
from downstream_tx.private import make_private_dirs
from downstream_tx.v0.chunkstore import BLOCK, HASH_RE, ChunkStore


@dataclass
class Restored(BackedUp):
    #: the backup's schema version, and the version the database has now
    upgraded_to: int = 0
    node_version: str = ""
    created: float = 0.0


def _damaged(why: str) -> TransferError:
    return TransferError(f"the backup is damaged or not a downstream-tx backup: {why}")


def _manifest(tar: tarfile.TarFile) -> dict[str, Any]:
    first = tar.next()
    if first is None or first.name != MANIFEST or not first.isfile() or first.size > 64 << 20:
        raise _damaged(f"its first member is not {MANIFEST}")
    try:
        manifest = orjson.loads(tar.extractfile(first).read())
    except orjson.JSONDecodeError as e:
        raise _damaged(f"{MANIFEST}: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _damaged(f"{MANIFEST} does not say {FORMAT!r}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise TransferError(f"the backup's format version {manifest.get('format_version')!r} is not one this "
                            f"downstream-tx reads ({FORMAT_VERSION}): restore it with the version that wrote it "
                            f"({manifest.get('node_version')})")
    return manifest


def restore_backup(path: str, target_url: str, chunk_dir: str, progress: Progress = QUIET) -> Restored:
    """Restore the backup at ``path`` into the empty database ``target_url`` and the chunk directory
    ``chunk_dir`` (see the module's docstring)."""
    started = time.monotonic()
    try:
        f = open(path, "rb")
    except OSError as e:
        raise TransferError(f"{path}: cannot read it: {e.strerror}") from None
    with f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise TransferError(f"{path}: not a backup file")
        try:
            tar = tarfile.open(fileobj=f, mode="r|")
        except tarfile.TarError:
            raise _damaged("not a tar archive") from None
        with tar:
            try:
                result = _restore(tar, path, target_url, ChunkStore(chunk_dir), progress)
            except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as e:
                if isinstance(e, OSError) and not isinstance(e, gzip.BadGzipFile) and e.filename:
                    raise
                raise _damaged(str(e) or e.__class__.__name__) from None
    result.seconds = time.monotonic() - started
    return result


def _restore(tar: tarfile.TarFile, path: str, target_url: str, chunks: ChunkStore,
             progress: Progress) -> Restored:
    manifest = _manifest(tar)
    version = int(manifest["schema_version"])
    target = Target(target_url)
    steps = load_steps(target.engine.name)
    latest = steps[-1].version
    if version > latest:
        raise TransferError(f"the backup has schema version {version}, newer than this downstream-tx knows "
                            f"({latest}): install downstream-tx {manifest.get('node_version')} or newer to restore it")
    if target.engine.name == "sqlite":
        pid = daemon_pid(target.engine.url.path)
        if pid is not None:
            raise TransferError(f"a daemon (pid {pid or '?'}) runs on {os.path.abspath(target.engine.url.path)}: "
                                "stop it first")
    tables = [Table.from_dict(t) for t in manifest["tables"]]
    expected = {t["name"]: TableSum.from_dict(t) for t in manifest["tables"]}
    result = Restored(f"{os.path.abspath(path)} ({manifest.get('engine')}, taken "
                      f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(float(manifest['created'])))})",
                      target.description, version, node_version=str(manifest.get("node_version", "")),
                      created=float(manifest["created"]), path=os.path.abspath(path))
    try:
        target.prepare(version, tables, steps)
        for table in tables:
            member = tar.next()
            if member is None or member.name != member_name(table.name):
                raise _damaged(f"expected {member_name(table.name)}, found {member.name if member else 'the end'}")
            read = _load_table(tar.extractfile(member), table, target, expected[table.name].rows, progress)
            result.tables.append((table.name, expected[table.name], None))
            if read != expected[table.name]:
                raise _damaged(f"table {table.name} holds {read.rows} rows ({read.checksum[:12]}), its manifest says "
                               f"{expected[table.name].rows} ({expected[table.name].checksum[:12]})")
        target.set_sequences({t["name"]: int(t["next_id"]) for t in manifest["tables"] if t.get("next_id")})
        compare(result, target.sums(progress.stage("verifying", result.rows)))
        _, result.upgraded_to = target.upgrade(steps)
        _restore_chunks(tar, chunks, result, progress)
        target.finish()
    except BaseException:
        target.abort()
        raise
    return result


def _load_table(data: IO[bytes] | None, table: Table, target: Target, rows: int, progress: Progress) -> TableSum:
    """Insert a table member's rows, a page at a time; returns their count and checksum."""
    if data is None:
        raise _damaged(f"{member_name(table.name)} is not a file")
    advance = progress.stage(f"restoring {table.name}", rows)
    read = TableSum()
    page: list[tuple] = []
    width = len(table.columns)
    with gzip.GzipFile(fileobj=data, mode="rb") as gz:
        for number, line in enumerate(gz, 1):
            try:
                values = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise _damaged(f"{member_name(table.name)} line {number} is not JSON") from None
            if not isinstance(values, list) or len(values) != width:
                raise _damaged(f"{member_name(table.name)} line {number} is not a row of {width} values")
            try:
                page.append(canonical_row(table.kinds, [decode_value(v) for v in values]))
            except (ValueError, TypeError) as e:
                raise _damaged(f"{member_name(table.name)} line {number}: {e}") from None
            if len(page) >= PAGE:
                read.add(page)
                target.insert(table, page)
                advance(len(page))
                page = []
    if page:
        read.add(page)
        target.insert(table, page)
        advance(len(page))
    return read


def _restore_chunks(tar: tarfile.TarFile, chunks: ChunkStore, result: Restored, progress: Progress) -> None:
    """The chunk members into the chunk store, each checked against its name; then the trailer."""
    chunks.ensure()
    advance = progress.stage("chunks", 0, "files")
    while True:
        member = tar.next()
        if member is None:
            raise _damaged(f"it ends before {TRAILER}")
        if member.name == TRAILER:
            break
        file_hash = member.name.rsplit("/", 1)[-1]
        if not member.name.startswith(CHUNKS) or not member.isfile() or not HASH_RE.match(file_hash) \
                or member.name != f"{CHUNKS}{file_hash[:2]}/{file_hash}":
            raise _damaged(f"unexpected member {member.name}")
        _write_chunk(tar.extractfile(member), chunks, file_hash)
        result.chunks += 1
        result.chunk_bytes += member.size
        advance(1)
    trailer = orjson.loads(tar.extractfile(member).read())
    if (trailer.get("chunks"), trailer.get("bytes")) != (result.chunks, result.chunk_bytes):
        raise _damaged(f"{result.chunks} chunk files ({result.chunk_bytes} bytes), {TRAILER} says "
                       f"{trailer.get('chunks')} ({trailer.get('bytes')} bytes)")
    result.missing = tuple(trailer.get("missing") or ())


def _write_chunk(data: IO[bytes] | None, chunks: ChunkStore, file_hash: str) -> None:
    """One chunk file, written to a temporary file (0600) in the store, checked, then renamed."""
    target = chunks.path_for(file_hash)
    make_private_dirs(os.path.dirname(target))
    fd, tmp = tempfile.mkstemp(prefix=".restore-", dir=os.path.dirname(target))
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            while data is not None and (block := data.read(BLOCK)):
                digest.update(block)
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != file_hash:
            raise _damaged(f"chunk {file_hash} does not hash to its name")
        os.replace(tmp, target)  # mkstemp made it 0600
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
