"""The payload store: logged inference requests joined with their responses and ground truth.

One row per text: a request of n texts is n items, keyed by (event id, index in the batch). The
request fills `text`, the response fills `prediction`, `confidence` and `model_version`, and a
label posted later fills `label`, in whatever order they arrive. A repeated event (the same
Ce-Id and kind) is recorded once: the events table remembers every (event id, kind) written.

`open_store(url)` opens either backend:

- `sqlite:///relative/path.db` or `sqlite:////absolute/path.db` (the SQLAlchemy convention):
  SQLite in WAL mode with `synchronous=FULL`, for one machine;
- `postgresql://user:password@host:port/database` (or `postgres://`, libpq parameters such as
  `?host=/socket/dir` allowed): PostgreSQL through psycopg 3, for a cluster.

Every write is one transaction, committed before the call returns; the collector acknowledges
an event only after that. A write whose values the database cannot take (see `storable.py`)
raises `UnstorableDataError`, a `PayloadStoreError` that says sending it again will not help.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from textops.components.common.errors import PayloadStoreError
from textops.components.monitor.storable import (
    UNSTORABLE_CHARACTERS,
    UnstorableDataError,
    unstorable_reason,
)

if TYPE_CHECKING:
    import pandas as pd

EventKind = Literal["request", "response"]

#: The columns `fetch_window` returns, in order.
WINDOW_COLUMNS = (
    "event_id",
    "item",
    "received_at",
    "model_name",
    "model_version",
    "text",
    "prediction",
    "confidence",
    "label",
)
#: The model name of items whose events carried none.
UNKNOWN_MODEL = "unknown"

EVENTS_TABLE = "textops_payload_events"
ITEMS_TABLE = "textops_payload_items"

#: Ids looked up per query by `missing_events`.
_LOOKUP_CHUNK = 500

# SQL shared by both backends, written with `?` placeholders (PostgreSQL's subclass swaps them).
INSERT_EVENT_SQL = (
    f"INSERT INTO {EVENTS_TABLE} (event_id, kind) VALUES (?, ?) ON CONFLICT DO NOTHING"
)
# Each event fills only the columns still empty, so request and response join in either order
# and the first value written stands.
UPSERT_ITEM_SQL = f"""
INSERT INTO {ITEMS_TABLE}
    (event_id, item, received_at, model_name, model_version, text, prediction, confidence)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (event_id, item) DO UPDATE SET
    received_at = COALESCE({ITEMS_TABLE}.received_at, excluded.received_at),
    model_name = COALESCE({ITEMS_TABLE}.model_name, excluded.model_name),
    model_version = COALESCE({ITEMS_TABLE}.model_version, excluded.model_version),
    text = COALESCE({ITEMS_TABLE}.text, excluded.text),
    prediction = COALESCE({ITEMS_TABLE}.prediction, excluded.prediction),
    confidence = COALESCE({ITEMS_TABLE}.confidence, excluded.confidence)
"""
# A label may arrive before its request; a later label for the same item replaces it. The
# text itself is returned: SQLite 3.40 evaluates `text IS NOT NULL` wrongly in RETURNING.
UPSERT_LABEL_SQL = f"""
INSERT INTO {ITEMS_TABLE} (event_id, item, label) VALUES (?, ?, ?)
ON CONFLICT (event_id, item) DO UPDATE SET label = excluded.label
RETURNING text
"""


def schema_statements(
    *, time_type: str, float_type: str, events_table_options: str = ""
) -> tuple[str, ...]:
    """The statements that create both tables and the window index, if they do not exist.

    One schema for both backends, so their columns cannot drift apart; only the column types
    the databases spell differently are arguments.

    Args:
        time_type: The type of `received_at` (the backend's `_db_time` gives its values).
        float_type: The type of `confidence`.
        events_table_options: Table options after the events table's definition.
    """
    return (
        f"""CREATE TABLE IF NOT EXISTS {EVENTS_TABLE} (
        event_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        PRIMARY KEY (event_id, kind)
    ){events_table_options}""",
        f"""CREATE TABLE IF NOT EXISTS {ITEMS_TABLE} (
        event_id TEXT NOT NULL,
        item INTEGER NOT NULL,
        received_at {time_type},
        model_name TEXT,
        model_version TEXT,
        text TEXT,
        prediction TEXT,
        confidence {float_type},
        label TEXT,
        PRIMARY KEY (event_id, item)
    )""",
        f"CREATE INDEX IF NOT EXISTS {ITEMS_TABLE}_received_at ON {ITEMS_TABLE} (received_at)",
    )


@dataclass(frozen=True)
class PayloadEvent:
    """One inference request or response, parsed and redacted, as the store writes it.

    Attributes:
        event_id: The CloudEvent id (Ce-Id), shared by a request and its response.
        kind: `request` or `response`.
        received_at: When the collector received it, in seconds since the epoch.
        model_name: The InferenceService (model) name, if the event named one.
        model_version: The version the response names, if any.
        texts: A request's texts, already redacted.
        predictions: A response's (label, confidence) per text; confidence may be unknown.
    """

    event_id: str
    kind: EventKind
    received_at: float
    model_name: str | None
    model_version: str | None = None
    texts: tuple[str, ...] = ()
    predictions: tuple[tuple[str, float | None], ...] = ()

    def item_values(self) -> list[tuple[int, str | None, str | None, float | None]]:
        """(item, text, prediction, confidence) for each text of the batch."""
        if self.kind == "request":
            return [(i, text, None, None) for i, text in enumerate(self.texts)]
        return [(i, None, label, conf) for i, (label, conf) in enumerate(self.predictions)]


class PayloadStore(ABC):
    """Logged traffic, one row per text, with predictions and ground truth joined in.

    The SQL is the same for both backends; a backend (`store_sqlite`, `store_postgres`)
    supplies the connection, the time type and the statements that differ.
    """

    def __init__(self) -> None:
        # One connection, used by one thread at a time.
        self._lock = threading.Lock()

    @abstractmethod
    @contextmanager
    def _transaction(self, write: bool = True) -> Iterator[Any]:
        """A cursor inside a transaction that commits on exit and rolls back on error."""

    @abstractmethod
    def _db_time(self, epoch: float) -> Any:
        """A time as the database column stores it."""

    @abstractmethod
    def _insert_events(self, cursor: Any, events: Sequence[PayloadEvent]) -> list[bool]:
        """Insert (event_id, kind) for each event; True where it was new."""

    @abstractmethod
    def _upsert_labels(self, cursor: Any, rows: list[tuple[str, int, str]]) -> int:
        """Upsert labels; the number that matched a stored text."""

    @abstractmethod
    def close(self) -> None:
        """Close the connection; the store cannot be used afterwards."""

    def _sql(self, statement: str) -> str:
        return statement

    def write_events(self, events: Sequence[PayloadEvent]) -> list[bool]:
        """Write events in one committed transaction.

        Args:
            events: Requests and responses, in any order, duplicates allowed.

        Returns:
            For each event, True if it was new and False if an event with the same id and
            kind was already stored (then it changes nothing).

        Raises:
            UnstorableDataError: The database cannot hold a value of the events; nothing of
                the transaction was stored, and the same write will fail again.
            PayloadStoreError: The transaction failed otherwise; nothing of it was stored.
        """
        if not events:
            return []
        with self._lock, self._transaction() as cursor:
            new = self._insert_events(cursor, events)
            rows = [
                (
                    e.event_id,
                    item,
                    self._db_time(e.received_at),
                    e.model_name,
                    e.model_version,
                    text,
                    prediction,
                    confidence,
                )
                for e, is_new in zip(events, new, strict=True)
                if is_new
                for item, text, prediction, confidence in e.item_values()
            ]
            if rows:
                cursor.executemany(self._sql(UPSERT_ITEM_SQL), rows)
        return new

    def add_labels(self, rows: Iterable[tuple[str, int, str]]) -> int:
        """Record ground truth for logged texts, in one committed transaction.

        Args:
            rows: (event_id, item, label); a label may come before its request, and a later
                label for the same item replaces an earlier one.

        Returns:
            How many of the labels belong to a text already stored.

        Raises:
            UnstorableDataError: A row is not (non-empty string, integer >= 0, non-empty
                string), or holds a character the store cannot hold.
            PayloadStoreError: The transaction failed otherwise.
        """
        checked = [_label_row(row) for row in rows]
        if not checked:
            return 0
        with self._lock, self._transaction() as cursor:
            return self._upsert_labels(cursor, checked)

    def fetch_window(
        self,
        *,
        model_name: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        last: int | None = None,
        exclude_event_prefix: str = "",
        labelled: bool = False,
    ) -> pd.DataFrame:
        """Logged texts, one row per text, sorted by `received_at`.

        Only texts whose request has arrived are returned; `prediction`, `confidence` and
        `label` are missing until their response or label arrives.

        Args:
            model_name: Only this model's traffic.
            since: Only rows received at or after this time (naive times are UTC).
            until: Only rows received before this time (naive times are UTC).
            last: Only the most recent `last` rows of those selected.
            exclude_event_prefix: Leave out events whose id starts with this (e.g. the
                evaluate step's requests, `common.traffic.EVALUATION_REQUEST_PREFIX`).
            labelled: Only texts whose label has arrived (the feedback snapshot's rows);
                `last` then counts labelled texts.

        Returns:
            A frame with the columns of `WINDOW_COLUMNS`: `received_at` tz-aware UTC, `item`
            int64, `confidence` float64 (NaN when unknown), the others strings or None.
        """
        clauses = ["text IS NOT NULL"]
        if labelled:
            clauses.append("label IS NOT NULL")
        params: list[Any] = []
        if exclude_event_prefix:
            clauses.append("substr(event_id, 1, ?) <> ?")
            params.extend([len(exclude_event_prefix), exclude_event_prefix])
        if model_name is not None:
            clauses.append("model_name = ?")
            params.append(model_name)
        if since is not None:
            clauses.append("received_at >= ?")
            params.append(self._db_time(to_epoch(since)))
        if until is not None:
            clauses.append("received_at < ?")
            params.append(self._db_time(to_epoch(until)))
        order = "received_at, event_id, item"
        if last is not None:
            if last < 0:
                raise ValueError(f"last must be zero or more, not {last}")
            order = "received_at DESC, event_id DESC, item DESC LIMIT ?"
            params.append(last)
        statement = (
            f"SELECT event_id, item, received_at, COALESCE(model_name, '{UNKNOWN_MODEL}'), "
            "model_version, text, prediction, confidence, label "
            f"FROM {ITEMS_TABLE} WHERE {' AND '.join(clauses)} ORDER BY {order}"
        )
        with self._lock, self._transaction(write=False) as cursor:
            cursor.execute(self._sql(statement), params)
            rows = cursor.fetchall()
        if last is not None:
            rows.reverse()
        return window_frame(rows)

    def missing_events(self, keys: Iterable[tuple[str, EventKind]]) -> list[tuple[str, str]]:
        """Which of the (event_id, kind) pairs are not in the store, in the order given."""
        wanted = list(dict.fromkeys((str(i), str(k)) for i, k in keys))
        ids = list(dict.fromkeys(i for i, _ in wanted))
        found: set[tuple[str, str]] = set()
        with self._lock, self._transaction(write=False) as cursor:
            for start in range(0, len(ids), _LOOKUP_CHUNK):
                chunk = ids[start : start + _LOOKUP_CHUNK]
                marks = ", ".join("?" * len(chunk))
                cursor.execute(
                    self._sql(
                        f"SELECT event_id, kind FROM {EVENTS_TABLE} WHERE event_id IN ({marks})"
                    ),
                    chunk,
                )
                found.update((str(i), str(k)) for i, k in cursor.fetchall())
        return [key for key in wanted if key not in found]

    def __enter__(self) -> PayloadStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_store(url: str, *, create: bool = True) -> PayloadStore:
    """Open the payload store at `url`, creating its tables if they do not exist.

    Args:
        url: `sqlite:///relative.db`, `sqlite:////absolute.db` or `postgresql://...`.
        create: Whether a SQLite file that does not exist is created (the collector's case).
            A reader passes False, so that a mistyped path fails instead of reading as an
            empty store.

    Raises:
        PayloadStoreError: The URL is not one of these, the database cannot be opened, or
            (`create` False) the SQLite file does not exist.
    """
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "sqlite":
        from textops.components.monitor.store_sqlite import SqlitePayloadStore

        path = sqlite_path(url)
        if not create and not path.is_file():
            raise PayloadStoreError(
                f"no payload store at {path}: the collector creates it when it stores its "
                "first event; check the store URL"
            )
        return SqlitePayloadStore(path)
    if scheme in ("postgresql", "postgres"):
        from textops.components.monitor.store_postgres import PostgresPayloadStore

        return PostgresPayloadStore(url)
    raise PayloadStoreError(
        f"unsupported payload store URL {mask_url(url)!r}: use sqlite:///relative/file.db, "
        "sqlite:////absolute/file.db or postgresql://user:password@host:port/database"
    )


def sqlite_path(url: str) -> Path:
    """The file a `sqlite:///...` URL names (three slashes: relative, four: absolute)."""
    prefix = "sqlite:///"
    if not url.lower().startswith(prefix) or len(url) == len(prefix):
        raise PayloadStoreError(
            f"bad SQLite URL {url!r}: write sqlite:///relative/file.db or "
            "sqlite:////absolute/file.db"
        )
    return Path(url[len(prefix) :])


def mask_url(url: str) -> str:
    """`url` with any password replaced by `***`, safe to log or show."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = (parts.username or "") + ":***"
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[-1]}"))


def to_epoch(moment: datetime) -> float:
    """Seconds since the epoch of `moment`; a naive time is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _label_row(row: tuple[str, int, str]) -> tuple[str, int, str]:
    event_id, item, label = row
    if not isinstance(event_id, str) or not event_id:
        raise UnstorableDataError(f"a label's id must be a non-empty string, not {event_id!r}")
    if isinstance(item, bool) or not isinstance(item, int) or item < 0:
        raise UnstorableDataError(
            f"the label for {event_id!r} has item {item!r}: it must be an integer >= 0 "
            "(the text's index in the request)"
        )
    if not isinstance(label, str) or not label:
        raise UnstorableDataError(f"the label for {event_id!r} item {item} must be a string")
    for field, value in (("id", event_id), ("label", label)):
        reason = unstorable_reason(value)
        if reason is not None:
            raise UnstorableDataError(
                f"a label's {field} holds {UNSTORABLE_CHARACTERS[reason]}, which the payload "
                "store cannot hold: send valid UTF-8 without NUL"
            )
    return event_id, item, label


def window_frame(rows: Sequence[Sequence[Any]]) -> pd.DataFrame:
    """The `fetch_window` frame of database rows in `WINDOW_COLUMNS` order."""
    import pandas as pd

    frame = pd.DataFrame.from_records(list(rows), columns=list(WINDOW_COLUMNS))
    times = frame["received_at"]
    if len(times) and not isinstance(times.iloc[0], datetime):
        frame["received_at"] = pd.to_datetime(times.astype("float64"), unit="s", utc=True)
    else:
        frame["received_at"] = pd.to_datetime(times, utc=True)
    frame["item"] = frame["item"].astype("int64")
    frame["confidence"] = pd.to_numeric(frame["confidence"], errors="coerce").astype("float64")
    for column in ("event_id", "model_name", "model_version", "text", "prediction", "label"):
        frame[column] = frame[column].astype(object)
        frame[column] = frame[column].where(frame[column].notna(), None)
    return frame
