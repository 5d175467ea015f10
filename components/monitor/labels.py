"""Delayed ground truth: labels for logged requests, posted to the collector or read from a file.

A label names the logged text by the request's event id (its Ce-Id, which is the client's
X-Request-Id when it sent one) and the text's index in the request (`item`, 0 by default), so
labels can arrive hours after the traffic and still be joined to the right prediction.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from textops.components.common.errors import DataError

#: Columns of a label file; `item` may be left out (every request then holds one text).
LABEL_COLUMNS = ("id", "item", "label")


def label_rows(records: Iterable[Mapping[str, Any]], source: str) -> list[tuple[str, int, str]]:
    """(event_id, item, label) for each record `{"id": ..., "item": 0, "label": ...}`.

    Args:
        records: Mappings with `id` and `label`, and optionally `item`.
        source: What the records came from, for messages.

    Raises:
        DataError: A record lacks an id or a label, or its item is not an integer >= 0.
    """
    rows = []
    for position, record in enumerate(records):
        where = f"{source}, label {position}"
        if not isinstance(record, Mapping):
            raise DataError(f"{where} is not an object with id, item and label")
        event_id = _text(record.get("id"), f"{where}: 'id'")
        label = _text(record.get("label"), f"{where}: 'label'")
        rows.append((event_id, _item(record.get("item"), where), label))
    return rows


def read_label_file(path: str) -> list[tuple[str, int, str]]:
    """Labels from a CSV, TSV, JSONL or Parquet file with columns id, label and optionally item.

    Raises:
        DataError: The file cannot be read, lacks a column, or holds a bad value.
    """
    from textops.components.common.dataio import describe_columns, read_table

    frame = read_table(path)
    missing = [column for column in ("id", "label") if column not in frame.columns]
    if missing:
        raise DataError(
            f"{path} has no column {', '.join(repr(c) for c in missing)}; columns found: "
            f"{describe_columns(frame)}. A label file needs id (the request's Ce-Id), "
            "label and optionally item (the text's index in the request)"
        )
    columns = [column for column in LABEL_COLUMNS if column in frame.columns]
    records = frame[columns].astype(object).to_dict(orient="records")
    return label_rows(records, str(path))


def _text(value: Any, where: str) -> str:
    """A non-empty string; whole numbers (ids or labels read as numbers) become strings."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    raise DataError(f"{where} must be a non-empty string, not {_describe(value)}")


def _item(value: Any, where: str) -> int:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return 0
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    raise DataError(
        f"{where}: 'item' must be an integer >= 0 (the text's index in the request), "
        f"not {_describe(value)}"
    )


def _describe(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "missing"
    return type(value).__name__
