"""Reading and writing an SQLite store we did not write, in bounded time and memory.

A staged ``mlflow.db`` comes from the training job, so it is hostile until checked: an
``experiments`` that is a recursive VIEW never returns from a SELECT (and a thread cannot
be cancelled, so it would hold a pipeline worker for ever), a view can yield unbounded rows,
a trigger runs its own SQL when our rewrite UPDATEs a row, and a virtual table is code of
a module we did not choose. So:

- the schema is read first and a store with a view, a virtual table or a trigger MLflow
  does not create is refused (nothing of it is run: reading ``sqlite_master`` runs no view);
- ``trusted_schema=OFF``, so SQL stored in the schema may call no function with side effects;
- every statement runs under a CPU budget kept by SQLite's progress handler (the VM calls it
  every few thousand instructions, also inside a never-ending view), and every result under
  a row cap, so a hostile store fails with a reason in bounded time and memory.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from idds_vis.domain.errors import StagingError

SQLITE_MAGIC = b"SQLite format 3\x00"
# CPU seconds SQLite may spend on one store per operation (the layout check, the rewrite):
# a real store needs well under a second for what we read and write.
CPU_BUDGET = 5.0
# The wall-clock ceiling, for a thread that gets little CPU on a loaded machine.
WALL_FACTOR = 10
# Rows one query may return: a store with more location rows than this is not served.
MAX_ROWS = 500_000
# Longest string or blob a row may hold (SQLite refuses to materialise a longer one).
MAX_VALUE_BYTES = 16 * 1024 * 1024
_PROGRESS_STEPS = 10_000  # VM instructions between two budget checks (a few ms at most)

# Bytes of text and blobs one query may return in all: the value cap bounds one value, not
# a thousand of them (a real store's locations and names are a few MiB).
MAX_RESULT_BYTES = 256 * 1024 * 1024
_FETCH = 1000  # rows fetched at a time, so the byte cap stops a query early

# The one trigger MLflow creates (store/db_migrations: secrets' ids are immutable).
MLFLOW_TRIGGERS = {("prevent_secrets_aad_mutation", "secrets")}
# The one generated column MLflow creates (spans.duration_ns, STORED: computed when a span is
# written, never when read). Any other is refused: a VIRTUAL column is computed at every
# read, so an 8 KiB store whose names are printf('%.*c', 8000000, 'x') made our reads
# allocate 8 MB a row, outside any CPU budget's reach; a STORED one is computed, and
# written to disk, by our rewrite's UPDATEs.
MLFLOW_GENERATED = {("spans", "duration_ns")}
_GENERATED_VIRTUAL, _GENERATED_STORED = 2, 3  # pragma_table_xinfo's "hidden"


class HostileStore(StagingError):
    """The SQLite file is not a plain MLflow store, or reading it costs too much."""


def is_sqlite_file(path: Path) -> bool:
    """A regular file starting with SQLite's magic; never blocks (a fifo named x.db).
    Links are followed: staging has checked that they stay in the staged tree."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        return os.read(fd, len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False
    finally:
        os.close(fd)


@dataclass
class Schema:
    """What sqlite_master says, names lower-cased (SQLite's names are case-insensitive)."""

    tables: dict[str, str] = field(default_factory=dict)  # lower name -> name as stored
    views: list[str] = field(default_factory=list)
    virtual: list[str] = field(default_factory=list)
    triggers: list[tuple[str, str]] = field(default_factory=list)  # (name, table)
    generated: list[tuple[str, str, int]] = field(default_factory=list)  # (table, column, hidden)
    expression_indexes: list[str] = field(default_factory=list)

    def has_table(self, name: str) -> bool:
        return name.lower() in self.tables

    def foreign_triggers(self) -> list[str]:
        return [n for n, t in self.triggers if (n.lower(), t.lower()) not in MLFLOW_TRIGGERS]

    def refusal(self) -> str | None:
        """Why MLflow's UI must not be pointed at this store, or None."""
        if self.views:
            return f"it has a view {self.views[0]!r} (an MLflow store has none)"
        if self.virtual:
            return f"it has a virtual table {self.virtual[0]!r} (an MLflow store has none)"
        foreign = self.foreign_triggers()
        if foreign:
            return f"it has a trigger {foreign[0]!r} that MLflow does not create"
        for table, column, hidden in self.generated:
            if hidden != _GENERATED_STORED or (table.lower(), column.lower()) not in (
                MLFLOW_GENERATED
            ):
                return f"it has a generated column {table}.{column} that MLflow does not create"
        if self.expression_indexes:
            return (
                f"it has an index on an expression {self.expression_indexes[0]!r}"
                " (MLflow indexes columns only)"
            )
        return None


class GuardedStore:
    """One connection to a store whose every statement is budgeted and capped."""

    def __init__(self, conn: sqlite3.Connection, shown: str, cpu_budget: float) -> None:
        self.conn = conn
        self.shown = shown
        self.cpu_budget = cpu_budget
        self._spent = 0.0
        self._started: float | None = None
        self._wall_end = time.monotonic() + cpu_budget * WALL_FACTOR
        conn.set_progress_handler(self._over_budget, _PROGRESS_STEPS)

    def _over_budget(self) -> bool:
        if self._started is None:
            return False
        cpu = self._spent + time.thread_time() - self._started
        return cpu > self.cpu_budget or time.monotonic() > self._wall_end

    @contextmanager
    def _metered(self) -> Iterator[None]:
        self._started = time.thread_time()
        try:
            yield
        except sqlite3.OperationalError as exc:
            if self._over_budget() or str(exc) == "interrupted":
                raise HostileStore(
                    f"{self.shown}: reading it took more than {self.cpu_budget:g} s of CPU"
                ) from exc
            raise self._unreadable(exc) from exc
        except sqlite3.Error as exc:
            raise self._unreadable(exc) from exc
        finally:
            self._spent += time.thread_time() - self._started
            self._started = None

    def _unreadable(self, exc: sqlite3.Error) -> HostileStore:
        return HostileStore(f"{self.shown} is not a readable SQLite store: {exc}")

    def rows(
        self, sql: str, params: Sequence[Any] = (), max_rows: int = MAX_ROWS
    ) -> list[tuple[Any, ...]]:
        out: list[tuple[Any, ...]] = []
        size = 0
        with self._metered():
            cursor = self.conn.execute(sql, params)
            try:
                while batch := cursor.fetchmany(_FETCH):
                    out.extend(batch)
                    if len(out) > max_rows:
                        raise HostileStore(f"{self.shown}: more than {max_rows} rows in one query")
                    size += sum(len(v) for row in batch for v in row if isinstance(v, str | bytes))
                    if size > MAX_RESULT_BYTES:
                        raise HostileStore(
                            f"{self.shown}: more than {MAX_RESULT_BYTES} bytes in one query"
                        )
            finally:
                cursor.close()
        return out

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self._metered():
            return self.conn.execute(sql, params).rowcount

    def schema(self) -> Schema:
        found = Schema()
        for kind, name, table, sql in self.rows(
            "SELECT type, name, tbl_name, sql FROM sqlite_master", max_rows=10_000
        ):
            name, table = str(name), str(table)
            if kind == "view":
                found.views.append(name)
            elif kind == "trigger":
                found.triggers.append((name, table))
            elif kind == "table":
                if str(sql or "").lstrip().upper().startswith("CREATE VIRTUAL"):
                    found.virtual.append(name)
                else:
                    found.tables[name.lower()] = name
            # An index with sql (None: a constraint's own) whose key has an expression
            # (cid -2), which every write evaluates.
            elif (
                kind == "index"
                and sql is not None
                and self.rows("SELECT 1 FROM pragma_index_xinfo(?) WHERE cid = -2", [name])
            ):
                found.expression_indexes.append(name)
        for table in found.tables.values():
            found.generated.extend(
                (table, str(column), int(hidden))
                for column, hidden in self.rows(
                    "SELECT name, hidden FROM pragma_table_xinfo(?) WHERE hidden IN (?, ?)",
                    [table, _GENERATED_VIRTUAL, _GENERATED_STORED],
                )
            )
        return found

    def columns(self, table: str) -> set[str]:
        """A real table's column names, lower-cased (pragma_table_info takes a parameter,
        so no name from the store is ever spliced into SQL)."""
        return {
            str(r[0]).lower() for r in self.rows("SELECT name FROM pragma_table_info(?)", [table])
        }

    def check(self) -> Schema:
        """The schema, or HostileStore with the reason this store is refused."""
        schema = self.schema()
        reason = schema.refusal()
        if reason is not None:
            raise HostileStore(f"{self.shown} is refused: {reason}")
        return schema


@contextmanager
def open_store(
    path: Path, shown: str, *, write: bool = False, cpu_budget: float | None = None
) -> Iterator[GuardedStore]:
    """A guarded connection; ``write`` opens it read-write in autocommit mode (the caller
    runs BEGIN/COMMIT through ``execute`` so that they are budgeted too)."""
    if not is_sqlite_file(path):
        raise HostileStore(f"{shown} is not an SQLite database")
    mode = "rw" if write else "ro"
    try:
        conn = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode={mode}", uri=True, isolation_level=None
        )
    except sqlite3.Error as exc:
        raise HostileStore(f"{shown} cannot be opened: {exc}") from exc
    with closing(conn):
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
        guarded = GuardedStore(conn, shown, CPU_BUDGET if cpu_budget is None else cpu_budget)
        guarded.execute("PRAGMA trusted_schema = OFF")
        yield guarded
