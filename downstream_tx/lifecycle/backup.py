"""``downstream-admin backup PATH``: the node's whole state — every table and the chunk store (the
stored files' encrypted bytes) — in one file, taken while the node runs.

The file is a POSIX tar archive (``tar tvf`` lists it), created with mode 0600 (it holds the node
secret and the chunks' keys), members in this order:

- ``manifest.json``: ``format`` ("downstream-tx backup"), ``format_version`` (1), ``created`` (Unix
  time), ``node_version`` (the downstream-tx that wrote it), ``engine`` and ``schema_version`` of the
  database it was taken from, and ``tables``: per table, in foreign-key order, its ``name``,
  ``columns`` (``[name, kind]``), ``primary_key``, ``references``, ``rows``, ``checksum`` (as
  ``db/transfer.py`` defines them: the same on both engines), ``next_id`` (its id sequence, or null)
  and ``member``;
- ``tables/<name>.jsonl.gz``: the table's rows, one JSON array per line, values in the order of
  ``columns``: numbers, strings, null, and bytes as ``{"b64": "<base64>"}``;
- ``chunks/<first two hex>/<file hash>``: each stored file's bytes as the chunk store keeps them
  (its name is the SHA-256 of its content, checked on restore);
- ``chunks.json``: ``{"chunks": <count>, "bytes": <total>, "missing": [<file hashes>]}`` (stored
  files whose chunk was gone when the backup read it: removed while the backup ran).

Consistency: the tables are read in one snapshot transaction (``db/transfer.py``), and the chunk
files are the ones that snapshot's ``files`` table names; a chunk file never changes once written.
"""

from __future__ import annotations

import base64
import gzip
import io
import os
import tarfile
import tempfile
import time
from dataclasses import dataclass
from typing import IO, Any

import orjson

from downstream_tx.db.transfer import TableSum, TransferError, describe_url, open_snapshot
from downstream_tx.lifecycle import QUIET, Progress
from downstream_tx.lifecycle.copy import Moved, running_daemon
from downstream_tx.v0.chunkstore import ChunkStore
from downstream_tx.version import full_version

FORMAT = "downstream-tx backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TRAILER = "chunks.json"
TABLES = "tables/"
CHUNKS = "chunks/"
#: the mode of the backup file and of every member
MODE = 0o600


def encode_value(value: Any) -> Any:
    """A canonical value as JSON (bytes as ``{"b64": …}``)."""
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode("ascii")}
    return value


def decode_value(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) != {"b64"}:
            raise TransferError("the backup is damaged: a value is neither a number, a string, null nor bytes")
        return base64.b64decode(value["b64"], validate=True)
    return value


def member_name(table: str) -> str:
    return f"{TABLES}{table}.jsonl.gz"


def chunk_member(file_hash: str) -> str:
    return f"{CHUNKS}{file_hash[:2]}/{file_hash}"


def _info(name: str, size: int, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime, info.type = size, MODE, int(mtime), tarfile.REGTYPE
    return info


@dataclass
class BackedUp(Moved):
    path: str = ""
    chunks: int = 0
    chunk_bytes: int = 0
    missing: tuple[str, ...] = ()
    size: int = 0


def _dump(snapshot, table, workdir: str, progress: Progress) -> tuple[IO[bytes], TableSum]:
    """The table's rows into a gzip'd temporary file (created 0600, unlinked at once)."""
    spool = tempfile.TemporaryFile(dir=workdir)
    total = TableSum()
    advance = progress.stage(f"reading {table.name}", snapshot.counts[table.name])
    with gzip.GzipFile(fileobj=spool, mode="wb", mtime=0) as gz:
        for page in snapshot.pages(table):
            total.add(page)
            gz.write(b"".join(orjson.dumps([encode_value(v) for v in row]) + b"\n" for row in page))
            advance(len(page))
    spool.seek(0)
    return spool, total


def write_backup(source_url: str, chunk_dir: str, path: str, progress: Progress = QUIET) -> BackedUp:
    """Write the backup of the node on ``source_url`` with the chunk store ``chunk_dir`` to the new
    file ``path`` (see the module's docstring). The file is removed again when the backup fails."""
    started = time.monotonic()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, MODE)
    except FileExistsError:
        raise TransferError(f"{path} exists already: give the backup a new name") from None
    except OSError as e:
        raise TransferError(f"{path}: cannot create it: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            result = _write(source_url, ChunkStore(chunk_dir), path, out, progress)
            out.flush()
            os.fsync(out.fileno())
            result.size = out.tell()
    except BaseException:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        raise
    result.seconds = time.monotonic() - started
    return result


def _write(source_url: str, chunks: ChunkStore, path: str, out: IO[bytes], progress: Progress) -> BackedUp:
    snapshot = open_snapshot(source_url)
    spools: list[IO[bytes]] = []
    try:
        now = time.time()
        result = BackedUp(describe_url(source_url), os.path.abspath(path), snapshot.version,
                          running=running_daemon(snapshot, now), path=os.path.abspath(path))
        listed = []
        for table in snapshot.tables:
            spool, total = _dump(snapshot, table, os.path.dirname(os.path.abspath(path)), progress)
            spools.append(spool)
            result.tables.append((table.name, total, None))
            listed.append({**table.as_dict(), **total.as_dict(), "next_id": snapshot.sequences.get(table.name),
                           "member": member_name(table.name)})
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "created": now,
                    "node_version": full_version(), "engine": snapshot.engine.name,
                    "schema_version": snapshot.version, "tables": listed}
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            data = orjson.dumps(manifest, option=orjson.OPT_INDENT_2)
            tar.addfile(_info(MANIFEST, len(data), now), io.BytesIO(data))
            for (name, _, _), spool in zip(result.tables, spools):
                size = spool.seek(0, os.SEEK_END)
                spool.seek(0)
                tar.addfile(_info(member_name(name), size, now), spool)
                spool.close()
            missing = []
            advance = progress.stage("chunks", 0, "files")
            for file_hash in snapshot.stored_chunks():
                try:
                    f = open(chunks.path_for(file_hash), "rb")
                except FileNotFoundError:
                    missing.append(file_hash)
                    continue
                with f:
                    info = os.fstat(f.fileno())
                    tar.addfile(_info(chunk_member(file_hash), info.st_size, info.st_mtime), f)
                result.chunks += 1
                result.chunk_bytes += info.st_size
                advance(1)
            result.missing = tuple(missing)
            data = orjson.dumps({"chunks": result.chunks, "bytes": result.chunk_bytes, "missing": missing})
            tar.addfile(_info(TRAILER, len(data), now), io.BytesIO(data))
        return result
    finally:
        for spool in spools:
            spool.close()
        snapshot.close()
