"""Reading labelled tables (CSV, TSV, Parquet, JSONL) and writing Parquet with a fixed schema.

Paths may be local or fsspec URIs (`s3://`, `gs://`, `memory://`, ...) whose backend is
installed. Reading never changes a value silently: text stays text ("007", "1.0" and "NA" are
read as written), a byte-order mark is dropped, quoted fields may hold delimiters, quotes and
line breaks, and what cannot be read is a `DataError` that says where and why.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

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
_COMPRESSION_SUFFIXES = {".gz", ".bz2", ".zst", ".xz", ".zip"}
_SEPARATORS = {"csv": ",", "tsv": "\t"}
# The delimiters a header is sniffed for when a file does not split on the expected one.
_DELIMITER_NAMES = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
# Backends fsspec needs per URI scheme, for the message when one is missing.
_BACKENDS = {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}


def is_uri(path: str) -> bool:
    """Whether `path` is a URI (`scheme://...`) rather than a local path."""
    return "://" in path


def detect_format(path: str, data_format: str = "auto") -> str:
    """Return the table format of `path`: the one given, or the one its extension names."""
    if data_format != "auto":
        return data_format
    suffixes = [s.lower() for s in Path(path).suffixes if s.lower() not in _COMPRESSION_SUFFIXES]
    if suffixes and suffixes[-1] in _EXTENSIONS:
        return _EXTENSIONS[suffixes[-1]]
    raise DataError(
        f"cannot tell the format of {path} from its extension: name it .csv, .tsv, .parquet "
        "or .jsonl, or set data_format"
    )


def read_table(path: str, data_format: str = "auto") -> pd.DataFrame:
    """Read a labelled table. Text columns stay text; nothing is coerced silently.

    CSV and TSV are read with every field as a string and only empty fields as missing, so a
    text "NA" or a label "007" arrives as written. A UTF-8 byte-order mark is accepted.
    Compressed files (.gz, .bz2, .zst, .xz) are decompressed by their extension.

    Args:
        path: A local path or an fsspec URI (s3://, gs://, ...) whose backend is installed.
        data_format: One of auto, csv, tsv, parquet, jsonl.

    Raises:
        DataError: The file is missing, empty, not in the format (a wrong delimiter is named),
            not valid UTF-8 (the first bad byte's offset and line are named), or on a
            filesystem whose fsspec backend is not installed.
    """
    fmt = detect_format(path, data_format)
    try:
        if fmt in _SEPARATORS:
            frame = pd.read_csv(
                path,
                sep=_SEPARATORS[fmt],
                dtype=str,
                encoding="utf-8-sig",  # accepts and drops a byte-order mark
                quoting=csv.QUOTE_MINIMAL,
                # Only an empty field is missing: "NA", "null" or "None" may be real text.
                keep_default_na=False,
                na_values=[""],
            )
            _check_delimiter(frame, path, fmt)
            return frame
        if fmt == "parquet":
            return pd.read_parquet(path)
        return pd.read_json(path, lines=True, dtype=False, encoding="utf-8-sig")
    except FileNotFoundError as e:
        raise DataError(f"data file not found: {path}") from e
    except ImportError as e:
        raise DataError(missing_backend_message(path, e)) from e
    except UnicodeDecodeError as e:
        raise DataError(_decode_error_message(path)) from e
    except pd.errors.EmptyDataError as e:
        raise DataError(f"{path} is empty: it has no header and no rows") from e
    except pd.errors.ParserError as e:
        raise DataError(_parse_error_message(path, fmt, e)) from e
    except (ValueError, OSError, pa.ArrowException) as e:
        raise DataError(f"cannot read {path} as {fmt.upper()}: {e}") from e


def require_columns(frame: pd.DataFrame, columns: list[str], source: str) -> None:
    """Raise DataError naming every column of `columns` that `frame` lacks."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"{source} has no column {', '.join(repr(c) for c in missing)}; "
            f"columns found: {describe_columns(frame)}. "
            "Set text_column/label_column to the right names."
        )


def describe_columns(frame: pd.DataFrame, limit: int = 20) -> str:
    """The frame's column names for a message, at most `limit` of them."""
    names = ", ".join(map(str, frame.columns[:limit])) or "none"
    return names + (", …" if len(frame.columns) > limit else "")


def write_table(
    frame: pd.DataFrame, path: str | Path, types: Mapping[str, pa.DataType]
) -> pa.Schema:
    """Write `frame` as Parquet with a schema that does not depend on pandas' choices.

    The columns named in `types` come first, in that order, with exactly those types; every
    other column follows in the frame's order with its Arrow type, except that large strings
    become strings. The same input columns therefore always give the same schema.

    Args:
        frame: The rows to write; its index is not written.
        path: A local file path; missing parent directories are created.
        types: The fixed columns and their Arrow types, e.g. `{"text": pa.string()}`.

    Returns:
        The schema written.
    """
    ordered = frame[[*types, *(c for c in frame.columns if c not in types)]]
    table = pa.Table.from_pandas(ordered, preserve_index=False)
    schema = pa.schema(
        [
            field.with_type(
                types.get(
                    field.name, pa.string() if field.type == pa.large_string() else field.type
                )
            )
            for field in table.schema
        ]
    )
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    # pandas' schema metadata would describe the pre-cast types; the Arrow schema is enough.
    table = table.cast(schema).replace_schema_metadata(None)
    pq.write_table(table, str(path))
    return table.schema


@contextlib.contextmanager
def _open_binary(path: str) -> Iterator[IO[bytes]]:
    """Open a local path or URI for reading bytes, decompressing by extension where fsspec can."""
    try:
        import fsspec
    except ImportError as e:
        if is_uri(path):
            raise DataError(f"reading {path} needs fsspec: pip install fsspec") from e
        with open(path, "rb") as plain:
            yield plain
        return
    with fsspec.open(path, "rb", compression="infer") as handle:
        yield handle


def missing_backend_message(path: str, error: ImportError) -> str:
    """What to install to read `path`, when fsspec's backend for its scheme is missing."""
    scheme = path.split("://", 1)[0] if is_uri(path) else "file"
    backend = _BACKENDS.get(scheme, f"the fsspec backend for {scheme}://")
    return f"cannot read {path}: a library it needs is missing ({error}); install {backend}"


def _check_delimiter(frame: pd.DataFrame, path: str, fmt: str) -> None:
    """A single column whose name holds another delimiter means the delimiter is wrong."""
    if len(frame.columns) != 1:
        return
    message = _delimiter_hint(str(frame.columns[0]), path, fmt)
    if message is not None:
        raise DataError(message)


def _delimiter_hint(header: str, path: str, fmt: str) -> str | None:
    """A message naming the delimiter `header` looks split by, or None if it looks right."""
    expected = _SEPARATORS[fmt]
    counts = {d: header.count(d) for d in _DELIMITER_NAMES if d != expected}
    likely = max(counts, key=lambda d: counts[d])
    if counts[likely] == 0 or header.count(expected) >= counts[likely]:
        return None
    if likely == "\t":
        fix = "name it .tsv or set data_format to tsv"
    elif likely == ",":
        fix = "name it .csv or set data_format to csv"
    else:
        fix = "save it comma-separated (CSV) or tab-separated (TSV)"
    return (
        f"{path} does not look {fmt.upper()}: its header {header[:80]!r} is split by "
        f"{_DELIMITER_NAMES[likely]}s ({likely!r}), not {_DELIMITER_NAMES[expected]}s "
        f"({expected!r}); {fix}"
    )


def _first_line(path: str) -> str | None:
    """The file's first line, decoded leniently, or None if it cannot be read."""
    try:
        with _open_binary(path) as handle:
            line: bytes = handle.readline(1 << 16)
    except (OSError, ValueError, DataError):
        return None
    return line.decode("utf-8-sig", errors="replace").rstrip("\r\n")


def _parse_error_message(path: str, fmt: str, error: Exception) -> str:
    header = _first_line(path)
    hint = _delimiter_hint(header, path, fmt) if header is not None else None
    if hint is not None:
        return hint
    reason = str(error).strip()
    if "EOF inside string" in reason:
        advice = "a quoted field is never closed; close the quote or double it inside the field"
    else:
        advice = "a field that holds the delimiter, a quote or a line break must be quoted"
    return f"cannot read {path} as {fmt.upper()}: {reason}; {advice}"


def _decode_error_message(path: str) -> str:
    located = _first_invalid_utf8(path)
    if located is None:
        return f"{path} is not valid UTF-8; re-encode it as UTF-8"
    offset, line, byte = located
    if offset == 0 and byte in {b[:1] for b in _UTF16_BOMS}:
        return (
            f"{path} is not valid UTF-8: it starts with a UTF-16 byte-order mark; "
            "re-encode it as UTF-8"
        )
    return (
        f"{path} is not valid UTF-8: byte {offset} (line {line}) is {byte!r}; re-encode it as "
        "UTF-8 (for example `iconv -f latin1 -t utf-8`)"
    )


def _first_invalid_utf8(path: str) -> tuple[int, int, bytes] | None:
    """The file offset, 1-based line and value of the first byte that is not UTF-8, if any.

    The file is decoded in chunks, so the offset is exact in files of any size (the parser's
    own error counts from the start of its current buffer).
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0  # file offset of the chunk being decoded
    lines = 1
    try:
        with _open_binary(path) as handle:
            while chunk := handle.read(1 << 20):
                pending = decoder.getstate()[0]
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as e:
                    # e.object is the undecoded tail of the previous chunk followed by this one.
                    start = offset - len(pending)
                    lines += e.object[: e.start].count(b"\n")
                    return start + e.start, lines, e.object[e.start : e.start + 1]
                lines += chunk.count(b"\n")
                offset += len(chunk)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError as e:  # the file ends inside a multi-byte sequence
        return offset - len(e.object) + e.start, lines, e.object[e.start : e.start + 1]
    except (OSError, ValueError, DataError):
        return None
    return None
