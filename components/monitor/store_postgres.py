"""The payload store in PostgreSQL through psycopg 3, for a cluster.

The same tables and statements as the SQLite store (see `store.py`), with `timestamptz` times.
Schema creation holds an advisory lock, so several collectors may start at once; a connection
that breaks (a database restart) is opened again on the next call.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg

from textops.components.common.errors import PayloadStoreError
from textops.components.monitor.storable import UnstorableDataError
from textops.components.monitor.store import (
    INSERT_EVENT_SQL,
    UPSERT_LABEL_SQL,
    PayloadEvent,
    PayloadStore,
    mask_url,
    schema_statements,
)

_SCHEMA = schema_statements(time_type="TIMESTAMPTZ", float_type="DOUBLE PRECISION")
#: Errors of a write's values rather than of the database: text with NUL or not UTF-8, a
#: number out of its column's range, a broken constraint.
_VALUE_ERRORS = (UnicodeEncodeError, psycopg.DataError, psycopg.IntegrityError)
#: Key of the advisory lock held while the schema is created ("textops" in ASCII).
_SCHEMA_LOCK = 0x746578746F7073
_CONNECT_TIMEOUT_SECONDS = 10


class PostgresPayloadStore(PayloadStore):
    """The store in a PostgreSQL database; every write is one committed transaction."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self._conn = self._connect()

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(
                self.url, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_SECONDS
            )
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                for statement in _SCHEMA:
                    conn.execute(statement)
        except psycopg.Error as e:
            raise PayloadStoreError(
                f"cannot open the PostgreSQL payload store {mask_url(self.url)}: {e}"
            ) from e
        return conn

    @contextmanager
    def _transaction(self, write: bool = True) -> Iterator[psycopg.Cursor[Any]]:
        if self._conn.closed or self._conn.broken:
            self._conn.close()
            self._conn = self._connect()
        try:
            with self._conn.transaction(), self._conn.cursor() as cursor:
                if not write:
                    # A reader cannot alter what is stored, whatever its statement.
                    cursor.execute("SET TRANSACTION READ ONLY")
                yield cursor
        except _VALUE_ERRORS as e:
            # Values the driver or the schema cannot take: the same write fails again.
            raise UnstorableDataError(
                f"PostgreSQL payload store {mask_url(self.url)} cannot hold the values written: "
                f"{type(e).__name__}: {e}"
            ) from e
        except psycopg.Error as e:
            raise PayloadStoreError(f"PostgreSQL payload store {mask_url(self.url)}: {e}") from e

    def _sql(self, statement: str) -> str:
        return statement.replace("?", "%s")

    def _db_time(self, epoch: float) -> datetime:
        return datetime.fromtimestamp(epoch, UTC)

    def _insert_events(self, cursor: Any, events: Sequence[PayloadEvent]) -> list[bool]:
        cursor.executemany(
            self._sql(INSERT_EVENT_SQL) + " RETURNING kind",
            [(event.event_id, event.kind) for event in events],
            returning=True,
        )
        return _one_flag_per_statement(cursor, len(events))

    def _upsert_labels(self, cursor: Any, rows: list[tuple[str, int, str]]) -> int:
        cursor.executemany(self._sql(UPSERT_LABEL_SQL), rows, returning=True)
        matched = 0
        for _ in range(len(rows)):
            row = cursor.fetchone()
            matched += row is not None and row[0] is not None
            cursor.nextset()
        return matched

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _one_flag_per_statement(cursor: psycopg.Cursor[Any], statements: int) -> list[bool]:
    """Whether each statement of an `executemany(..., returning=True)` returned a row."""
    flags = []
    for _ in range(statements):
        flags.append(cursor.fetchone() is not None)
        cursor.nextset()
    return flags
