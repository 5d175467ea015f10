"""Reading labelled tables in the formats textops accepts: CSV, TSV, Parquet, JSONL."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd

from textops.components.common.errors import DataError

_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}


def detect_format(path: str, data_format: str = "auto") -> str:
    """Return the table format of `path`: the one given, or the one its extension names."""
    if data_format != "auto":
        return data_format
    suffixes = [s.lower() for s in Path(path).suffixes if s.lower() not in {".gz", ".bz2", ".zst"}]
    if suffixes and suffixes[-1] in _EXTENSIONS:
        return _EXTENSIONS[suffixes[-1]]
    raise DataError(
        f"cannot tell the format of {path} from its extension: name it .csv, .tsv, .parquet "
        "or .jsonl, or set data_format"
    )


def read_table(path: str, data_format: str = "auto") -> pd.DataFrame:
    """Read a labelled table. Text columns stay text; nothing is coerced silently.

    Args:
        path: A local path or an fsspec URI (s3://, gs://) whose backend is installed.
        data_format: One of auto, csv, tsv, parquet, jsonl.

    Raises:
        DataError: The file is missing, is not in the format, or is not valid UTF-8.
    """
    fmt = detect_format(path, data_format)
    try:
        if fmt in ("csv", "tsv"):
            # dtype=str keeps "007" and "1.0" as written; empty fields still read as missing.
            return pd.read_csv(
                path,
                sep="," if fmt == "csv" else "\t",
                dtype=str,
                encoding="utf-8-sig",  # accepts and drops a byte-order mark
                quoting=csv.QUOTE_MINIMAL,
            )
        if fmt == "parquet":
            return pd.read_parquet(path)
        return pd.read_json(path, lines=True, dtype=False, encoding="utf-8")
    except FileNotFoundError as e:
        raise DataError(f"data file not found: {path}") from e
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path} is not valid UTF-8 (byte {e.start}: {e.object[e.start : e.start + 1]!r}); "
            "re-encode it as UTF-8"
        ) from e
    except pd.errors.EmptyDataError as e:
        raise DataError(f"{path} is empty: it has no header and no rows") from e
    except (pd.errors.ParserError, ValueError, OSError) as e:
        raise DataError(f"cannot read {path} as {fmt.upper()}: {e}") from e


def require_columns(frame: pd.DataFrame, columns: list[str], source: str) -> None:
    """Raise DataError naming every column of `columns` that `frame` lacks."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        found = ", ".join(map(str, frame.columns[:20])) or "none"
        raise DataError(
            f"{source} has no column {', '.join(repr(c) for c in missing)}; "
            f"columns found: {found}. Set text_column/label_column to the right names."
        )
