"""The payload store in one SQLite file, for one machine (see `store.py` for the model).

WAL mode lets the drift job read while the collector writes; `synchronous=FULL` makes each
commit reach the disk before it returns.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from textops.components.common.errors import PayloadStoreError
from textops.components.monitor.storable import UnstorableDataError
from textops.components.monitor.store import (
    INSERT_EVENT_SQL,
    UPSERT_LABEL_SQL,
    PayloadEvent,
    PayloadStore,
    schema_statements,
)

_SQLITE_SCHEMA = schema_statements(
    time_type="REAL", float_type="REAL", events_table_options=" WITHOUT ROWID"
)


#: Errors of a write's values rather than of the database: a string that is not UTF-8 (a lone
#: surrogate), an integer beyond 64 bits, a value of a type or size SQLite cannot take.
_VALUE_ERRORS = (
    UnicodeEncodeError,
    OverflowError,
    sqlite3.DataError,
    sqlite3.IntegrityError,
    sqlite3.InterfaceError,
)


class SqlitePayloadStore(PayloadStore):
    """The store in one SQLite file, in WAL mode: readers never block the collector's writes.

    `synchronous=FULL` makes each commit reach the disk before it returns, so an acknowledged
    event survives a crash of the process and of the machine.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: transactions are begun and committed explicitly below.
            self._conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            self._conn.execute("PRAGMA synchronous=FULL")
            for statement in _SQLITE_SCHEMA:
                self._conn.execute(statement)
        except (sqlite3.Error, OSError) as e:
            raise PayloadStoreError(f"cannot open the SQLite payload store {self.path}: {e}") from e
        if str(mode).lower() != "wal":
            self._conn.close()
            raise PayloadStoreError(
                f"SQLite cannot use WAL mode for {self.path} (it reports {mode!r}): put the "
                "store on a local filesystem"
            )

    @contextmanager
    def _transaction(self, write: bool = True) -> Iterator[sqlite3.Cursor]:
        cursor = self._conn.cursor()
        # A reader cannot alter what is stored, whatever its statement.
        cursor.execute(f"PRAGMA query_only={'OFF' if write else 'ON'}")
        try:
            # A writer takes the lock at once; a reader reads a snapshot and blocks no one.
            cursor.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            yield cursor
            cursor.execute("COMMIT")
        except _VALUE_ERRORS as e:
            # Values the driver or the schema cannot take: the same write fails again.
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise UnstorableDataError(
                f"SQLite payload store {self.path} cannot hold the values written: "
                f"{type(e).__name__}: {e}"
            ) from e
        except sqlite3.Error as e:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise PayloadStoreError(f"SQLite payload store {self.path}: {e}") from e
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        finally:
            cursor.close()

    def _db_time(self, epoch: float) -> float:
        return float(epoch)

    def _insert_events(self, cursor: Any, events: Sequence[PayloadEvent]) -> list[bool]:
        new = []
        for event in events:
            cursor.execute(INSERT_EVENT_SQL, (event.event_id, event.kind))
            new.append(cursor.rowcount == 1)
        return new

    def _upsert_labels(self, cursor: Any, rows: list[tuple[str, int, str]]) -> int:
        matched = 0
        for row in rows:
            cursor.execute(UPSERT_LABEL_SQL, row)
            matched += cursor.fetchone()[0] is not None
        return matched

    def close(self) -> None:
        with self._lock:
            self._conn.close()
