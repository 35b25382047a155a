"""Stored files, as the operator manages them (``downstream-admin file …``): add a chunk to the
store and start monitoring it, stop monitoring, list, export the original bytes, generate
challenge batches."""

from __future__ import annotations

import os
import stat
from typing import Any

from twisted.logger import Logger

from downstream_tx.config import Config
from downstream_tx.core.context import Blocking
from downstream_tx.db.files import DuplicateFile, FileRow, FileStore
from downstream_tx.errors import CONFLICT, INVALID, NOT_FOUND, NodeError
from downstream_tx.v0.challenges import ChallengeSupply, check_batch_request
from downstream_tx.v0.chunkstore import ChunkStore, Ingested, Progress
from downstream_tx.v0.hashes import parse_file_hash

log = Logger()

#: files listed per page
LIST_PAGE = 1000


class FileAdmin:
    def __init__(self, store: FileStore, chunks: ChunkStore, supply: ChallengeSupply, config: Config, clock: Any,
                 blocking: Blocking):
        self.store = store
        self.chunks = chunks
        self.supply = supply
        self.config = config
        self.clock = clock
        self.blocking = blocking

    async def active(self, file_hash: str) -> FileRow:
        """The monitored file of this hash (404 ``no_hash`` otherwise)."""
        row = await self.store.get_active(parse_file_hash(file_hash))
        if row is None:
            raise NodeError(NOT_FOUND, "no_hash", "no such file is monitored")
        return row

    async def add(self, path: str, redundancy: int, interval: int, metadisk: bool = False,
                  progress: Progress | None = None) -> str:
        """Copy a chunk into the store (encrypted unless ``metadisk``), record it, and generate its
        first challenge batch. Returns the file hash (SHA-256 of the stored bytes)."""
        if not isinstance(redundancy, int) or not 1 <= redundancy <= 1000:
            raise NodeError(INVALID, "invalid_redundancy", "redundancy must be a whole number from 1 to 1000")
        if not isinstance(interval, int) or not 1 <= interval <= 30 * 86400:
            raise NodeError(INVALID, "invalid_interval", "interval must be a whole number of seconds, 1 to 2592000")
        ingested: Ingested = await self.blocking(self._ingest, path, not metadisk, progress)
        files = self.store
        try:
            file_id = await files.add_stored(ingested.file_hash, ingested.original_hash, ingested.size,
                                             ingested.enc_key, redundancy, interval, self.clock.seconds())
        except DuplicateFile as e:
            self.chunks.discard(ingested)
            raise NodeError(CONFLICT, "duplicate", f"these bytes are already monitored as {e.args[0]}") from None
        except BaseException:
            self.chunks.discard(ingested)
            raise
        try:
            self.chunks.commit(ingested)
        except OSError:
            await files.remove(file_id, self.clock.seconds())
            self.chunks.discard(ingested)
            raise
        await self.supply.generate(file_id, ingested.file_hash)
        log.info("file {file_hash} added ({size} bytes, redundancy {redundancy}, interval {interval}s)",
                 file_hash=ingested.file_hash, size=ingested.size, redundancy=redundancy, interval=interval)
        return ingested.file_hash

    def _ingest(self, path: str, encrypt: bool, progress: Progress | None) -> Ingested:
        """Copy ``path`` into the chunk store. The file is checked after it is opened (non-blocking,
        so a FIFO cannot hang the command; a path swapped after a check cannot slip through): only a
        regular file (or a symlink to one) is accepted."""
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        except IsADirectoryError:
            raise NodeError(INVALID, "invalid_path", f"{path}: not a regular file (a directory)") from None
        except FileNotFoundError as e:
            raise NodeError(INVALID, "invalid_path", f"{path}: {e.strerror}") from None
        except OSError as e:
            raise NodeError(INVALID, "unreadable", f"{path}: cannot read: {e.strerror}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise NodeError(INVALID, "invalid_path", f"{path}: not a regular file")
            size = info.st_size
            if size == 0:
                raise NodeError(INVALID, "empty_file", f"{path}: file is empty")
            limit = self.config.max_file_size
            if size > limit:
                raise NodeError(INVALID, "file_too_large", f"{path}: {size} bytes is over max_file_size ({limit})")
            if hasattr(os, "set_blocking"):
                os.set_blocking(fd, True)
            with os.fdopen(fd, "rb") as source:
                fd = -1
                return self.chunks.ingest(source, size, encrypt, progress)
        except OSError as e:
            raise NodeError(INVALID, "unreadable", f"{path}: cannot read: {e.strerror}") from None
        finally:
            if fd >= 0:
                os.close(fd)

    async def remove(self, file_hash: str) -> int:
        """Stop monitoring a file: its contracts end and its bytes leave the chunk store."""
        row = await self.active(file_hash)
        ended = await self.store.remove(row.id, self.clock.seconds())
        if row.kind == "stored":
            await self.blocking(self.chunks.delete, row.file_hash)
        log.info("file {file_hash} removed, {ended} contracts ended", file_hash=row.file_hash, ended=ended)
        return ended

    async def list(self) -> list[dict]:
        """Every monitored stored file, read a page at a time."""
        out: list[dict] = []
        after = 0
        while True:
            page = await self.store.list_active("stored", after, LIST_PAGE)
            out.extend(page)
            if len(page) < LIST_PAGE:
                return out
            after = page[-1]["id"]

    async def export(self, file_hash: str, output: str, progress: Progress | None = None) -> int:
        """Write a stored file's original bytes (decrypted) to ``output`` (created 0600)."""
        row = await self.active(file_hash)
        if row.kind != "stored":
            raise NodeError(INVALID, "not_stored", "seeded files have no stored bytes")

        def write() -> int:
            try:
                fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                raise NodeError(INVALID, "exists", f"{output}: already exists") from None
            except OSError as e:
                raise NodeError(INVALID, "invalid_path", f"{output}: {e.strerror}") from None
            with os.fdopen(fd, "wb") as out:
                return self.chunks.export(row.file_hash, row.enc_key, out, progress)

        return await self.blocking(write)

    async def generate_challenges(self, file_hash: str, root_seed: bytes | None = None,
                                  count: int | None = None, progress: Progress | None = None) -> dict:
        """Generate and store a challenge batch for a file (random root seed unless given)."""
        row = await self.active(file_hash)
        if row.kind != "stored":
            raise NodeError(INVALID, "not_stored", "seeded files use Merkle challenges")
        count = self.config.challenge_batch if count is None else count
        check_batch_request(count, root_seed)
        return await self.supply.generate(row.id, row.file_hash, root_seed, count, progress)
