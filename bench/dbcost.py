"""What an operation costs a MariaDB server on this machine, for the benchmarks: the CPU of the
server threads serving a database's connections (``/proc/<mariadbd>/task/<tid>/stat``; only for a
server on this machine whose /proc we may read), the rows changed in its tables
and the rows read from them (``information_schema.TABLE_STATISTICS``, MariaDB's ``userstat``), the
redo log written and the pages the buffer pool read from disk (global: other databases' work counts
too) and the bytes its tables take.

Used by bench/timers.py (the server thread of one connection) and bench/capacity.py (:class:`Meter`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

TCK = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int, tid: int) -> float | None:
    """CPU seconds a thread of process ``pid`` has run (``schedstat``, in nanoseconds, where the
    kernel keeps it; else user + system time from ``stat``, in clock ticks); None if it is gone."""
    try:
        with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TCK


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) a process has used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TCK


def server_pid(pid_file: str) -> int | None:
    """The server's pid from its ``@@pid_file``, if this machine's /proc has it."""
    try:
        with open(pid_file) as f:
            pid = int(f.read().split()[0])
        return pid if Path(f"/proc/{pid}/task").is_dir() else None
    except (OSError, ValueError):
        return None


def connection_thread_cpu(scalar):
    """A function returning the CPU seconds of the server thread serving the connection that
    ``scalar(sql)`` queries (None where /proc cannot tell: another machine, SQLite)."""
    try:
        tid = int(scalar("SELECT tid FROM information_schema.processlist WHERE id = CONNECTION_ID()"))
        pid = server_pid(scalar("SELECT @@pid_file"))
        if pid is None or thread_cpu(pid, tid) is None:
            return None
        return lambda: thread_cpu(pid, tid)
    except Exception:
        return None


#: global status counters read with each snapshot (their deltas are reported)
STATUS = ("Innodb_os_log_written", "Innodb_rows_inserted", "Innodb_rows_updated", "Innodb_rows_deleted",
          "Innodb_buffer_pool_reads", "Innodb_buffer_pool_read_requests")


@dataclass
class Snapshot:
    node_cpu: float
    wall: float
    #: server thread id -> CPU seconds, for the connections to the database
    threads: dict[int, float]
    server_cpu: float | None
    #: table -> rows changed (inserted, updated or deleted) since the server started counting
    rows: dict[str, int]
    status: dict[str, int]
    #: table -> rows read since the server started counting
    read: dict[str, int] = field(default_factory=dict)


@dataclass
class Cost:
    """What ``n`` operations cost, from two snapshots."""

    name: str
    n: int
    node_cpu: float = 0.0
    wall: float = 0.0
    db_cpu: float = 0.0
    server_cpu: float | None = None
    rows: dict[str, int] = field(default_factory=dict)
    status: dict[str, int] = field(default_factory=dict)
    #: server threads that appeared during the operation (a new connection): not counted
    new_threads: int = 0
    #: table -> rows read (by the index lookups and scans of the database's statements)
    read: dict[str, int] = field(default_factory=dict)

    def add(self, other: Cost) -> None:
        self.n += other.n
        self.node_cpu += other.node_cpu
        self.wall += other.wall
        self.db_cpu += other.db_cpu
        if self.server_cpu is not None and other.server_cpu is not None:
            self.server_cpu += other.server_cpu
        for table, n in other.rows.items():
            self.rows[table] = self.rows.get(table, 0) + n
        for name, n in other.status.items():
            self.status[name] = self.status.get(name, 0) + n
        for table, n in other.read.items():
            self.read[table] = self.read.get(table, 0) + n
        self.new_threads += other.new_threads

    def per_op(self) -> dict:
        n = max(self.n, 1)
        return {"node_ms": self.node_cpu / n * 1e3, "db_ms": self.db_cpu / n * 1e3,
                "rows": sum(self.rows.values()) / n, "redo_bytes": self.status.get("Innodb_os_log_written", 0) / n,
                "wall_ms": self.wall / n * 1e3, "rows_read": sum(self.read.values()) / n,
                "read_by_table": {t: v / n for t, v in self.read.items()},
                # global: another database's misses count too
                "pool_reads": self.status.get("Innodb_buffer_pool_reads", 0) / n,
                # the whole server process: its background threads (purge, page cleaner) and every
                # database's connections
                "server_ms": (self.server_cpu or 0.0) / n * 1e3}


class Meter:
    """Snapshots of what the server spends on database ``database``, over a connection of its own
    (``admin_url``: a user that may read every connection's thread and set ``userstat``; its own
    queries are not counted: its connection has no default database)."""

    def __init__(self, admin_url: str, database: str):
        import pymysql

        from downstream_tx.db.url import parse_db_url

        u = parse_db_url(admin_url)
        self.database = database
        self.conn = pymysql.connect(host=u.host, port=u.port, user=u.user, password=u.password or "",
                                    autocommit=True)
        self.pid = server_pid(self._one("SELECT @@pid_file"))
        self.userstat_was = int(self._one("SELECT @@userstat"))
        if not self.userstat_was:
            try:
                self._exec("SET GLOBAL userstat = 1")
            except Exception:
                pass  # no rows figures: not a user that may set it
        self.userstat = bool(int(self._one("SELECT @@userstat")))

    def _exec(self, sql: str, args=None):
        with self.conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()

    def _one(self, sql: str, args=None):
        return self._exec(sql, args)[0][0]

    def close(self) -> None:
        if self.userstat and not self.userstat_was:
            self._exec("SET GLOBAL userstat = 0")
        self.conn.close()

    def snapshot(self) -> Snapshot:
        tids = [int(r[0]) for r in self._exec(
            "SELECT tid FROM information_schema.processlist WHERE db = %s AND id <> CONNECTION_ID()",
            (self.database,))]
        threads = {}
        if self.pid is not None:
            for tid in tids:
                cpu = thread_cpu(self.pid, tid)
                if cpu is not None:
                    threads[tid] = cpu
        rows, read = {}, {}
        if self.userstat:
            for t, changed, n_read in self._exec(
                    "SELECT table_name, rows_changed, rows_read FROM information_schema.table_statistics "
                    "WHERE table_schema = %s", (self.database,)):
                rows[t], read[t] = int(changed), int(n_read)
        status = {k: int(v) for k, v in self._exec(
            "SHOW GLOBAL STATUS WHERE variable_name IN (" + ", ".join(["%s"] * len(STATUS)) + ")", STATUS)}
        return Snapshot(time.process_time(), time.perf_counter(), threads,
                        process_cpu(self.pid) if self.pid is not None else None, rows, status, read)

    def cost(self, name: str, n: int, before: Snapshot, after: Snapshot) -> Cost:
        common = before.threads.keys() & after.threads.keys()
        rows = {t: after.rows[t] - before.rows.get(t, 0) for t in after.rows
                if after.rows[t] != before.rows.get(t, 0)}
        read = {t: after.read[t] - before.read.get(t, 0) for t in after.read
                if after.read[t] != before.read.get(t, 0)}
        return Cost(name, n, after.node_cpu - before.node_cpu, after.wall - before.wall,
                    sum(after.threads[t] - before.threads[t] for t in common),
                    None if before.server_cpu is None else after.server_cpu - before.server_cpu,
                    rows, {k: after.status[k] - before.status.get(k, 0) for k in after.status},
                    len(after.threads.keys() - before.threads.keys()), read)

    def table_sizes(self) -> dict[str, tuple[int, int, int]]:
        """table -> (rows (counted), data_length + index_length after ANALYZE TABLE, .ibd file bytes
        where this machine has the data directory)."""
        tables = [r[0] for r in self._exec(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s AND table_type = 'BASE TABLE'",
            (self.database,))]
        datadir = Path(self._one("SELECT @@datadir"))
        sizes = {}
        for t in tables:
            self._exec(f"ANALYZE TABLE `{self.database}`.`{t}`")
            count = int(self._one(f"SELECT COUNT(*) FROM `{self.database}`.`{t}`"))
            length = int(self._one(
                "SELECT data_length + index_length FROM information_schema.tables "
                "WHERE table_schema = %s AND table_name = %s", (self.database, t)))
            ibd = datadir / self.database / f"{t}.ibd"
            sizes[t] = (count, length, ibd.stat().st_size if ibd.exists() else 0)
        return sizes
