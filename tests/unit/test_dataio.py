"""Reading labelled tables (formats, URIs, encodings, delimiters) and writing fixed schemas."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.s3_server import S3Bucket
from textops.components.common.dataio import detect_format, read_table, write_table
from textops.components.common.errors import DataError

ROWS = pd.DataFrame({"text": ["good phone", "bad case"], "label": ["pos", "neg"]})


def _write(tmp_path: Path, name: str, content: str | bytes) -> str:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return str(path)


@pytest.fixture
def bucket_dir(s3_bucket: S3Bucket) -> str:
    """A fresh folder in a bucket of the S3 server (tests/s3_server.py), as an `s3://` URI."""
    return s3_bucket.url("data")


@pytest.mark.parametrize("fmt", ["csv", "tsv", "parquet", "jsonl"])
def test_every_format_reads_from_a_uri(bucket_dir: str, fmt: str) -> None:
    uri = f"{bucket_dir}/data.{fmt}"
    if fmt == "parquet":
        ROWS.to_parquet(uri, index=False)
    else:
        with fsspec.open(uri, "w", encoding="utf-8") as handle:
            if fmt == "jsonl":
                ROWS.to_json(handle, orient="records", lines=True)
            else:
                ROWS.to_csv(handle, sep="," if fmt == "csv" else "\t", index=False)

    assert read_table(uri).to_dict("records") == ROWS.to_dict("records")


def test_a_missing_uri_is_named(bucket_dir: str) -> None:
    with pytest.raises(DataError, match=f"data file not found: {bucket_dir}/nothing.csv"):
        read_table(f"{bucket_dir}/nothing.csv")


#: A URI scheme whose fsspec backend textops never installs (s3fs comes with the pipeline
#: extra; gcsfs and adlfs do not).
MISSING_BACKEND = next(
    ((scheme, package) for scheme, package in (("az", "adlfs"), ("gs", "gcsfs"))
     if importlib.util.find_spec(package) is None),
    None,
)  # fmt: skip


@pytest.mark.skipif(MISSING_BACKEND is None, reason="adlfs and gcsfs are both installed")
def test_a_uri_without_its_backend_says_what_to_install() -> None:
    assert MISSING_BACKEND is not None
    scheme, package = MISSING_BACKEND
    with pytest.raises(DataError, match=f"install {package}"):
        read_table(f"{scheme}://some-bucket/data.csv")


def test_non_utf8_on_a_uri_names_the_byte(bucket_dir: str) -> None:
    with fsspec.open(f"{bucket_dir}/latin1.csv", "wb") as handle:
        handle.write("text,label\ncafé,a\n".encode("latin-1"))

    with pytest.raises(DataError, match=r"byte 14 \(line 2\) is b'\\xe9'"):
        read_table(f"{bucket_dir}/latin1.csv")


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("semi.csv", "text;label\ngood;pos\n", "split by semicolons (';'), not commas (',')"),
        ("pipe.csv", "text|label\ngood|pos\n", "split by pipes ('|')"),
        (
            "tabs.csv",
            "text\tlabel\ngood\tpos\n",
            "split by tabs ('\\t'), not commas (','); name it .tsv or set",
        ),
        ("commas.tsv", "text,label\ngood,pos\n", "not tabs ('\\t'); name it .csv or set"),
        # A comma inside the data makes the parser fail before a frame exists.
        ("ragged.csv", "text;label\ngood, really;pos\nbad;neg\n", "split by semicolons"),
    ],
)
def test_a_wrong_delimiter_is_named(tmp_path: Path, name: str, content: str, fragment: str) -> None:
    with pytest.raises(DataError) as caught:
        read_table(_write(tmp_path, name, content))

    assert fragment in str(caught.value)


def test_quoted_delimiters_quotes_and_line_breaks_are_read_as_written(tmp_path: Path) -> None:
    content = (
        "text,label\n"
        '"Good, really good",pos\n'
        '"She said ""never"", then left",neg\n'
        '"Line one\nline two\r\nline three",pos\n'
        "NA,null\n"
        ",007\n"
    )

    frame = read_table(_write(tmp_path, "d.csv", content))

    assert frame["text"].tolist()[:4] == [
        "Good, really good",
        'She said "never", then left',
        "Line one\nline two\r\nline three",
        "NA",  # only an empty field is missing
    ]
    assert pd.isna(frame["text"].iloc[4])
    assert frame["label"].tolist() == ["pos", "neg", "pos", "null", "007"]


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("bom.csv", "\ufefftext,label\ngood phone,pos\nbad case,neg\n"),
        ("bom.tsv", "\ufefftext\tlabel\ngood phone\tpos\nbad case\tneg\n"),
        (
            "bom.jsonl",
            '\ufeff{"text": "good phone", "label": "pos"}\n{"text": "bad case", "label": "neg"}\n',
        ),
    ],
)
def test_a_byte_order_mark_is_accepted(tmp_path: Path, name: str, content: str) -> None:
    frame = read_table(_write(tmp_path, name, content))

    assert list(frame.columns) == ["text", "label"]
    assert frame.to_dict("records") == ROWS.to_dict("records")


def test_the_first_bad_byte_is_found_past_the_parsers_buffer(tmp_path: Path) -> None:
    # About 2.5 MB: a valid two-byte character straddles the 1 MiB chunk boundary, and the
    # bad byte lies far past it.
    line = "é" + "x" * 98 + "\n"  # 101 bytes
    head = ("text,label\n" + "".join(f"{line[:-1]},a\n" for _ in range(9000))).encode("utf-8")
    head = head[: (1 << 20) - 1] + "é".encode()
    tail = ("x" * 99 + ",a\n").encode("utf-8") * 14_000
    bad_at = len(head) + len(tail) + 5
    content = head + tail + b"text \xff,a\n"

    with pytest.raises(DataError) as caught:
        read_table(_write(tmp_path, "big.csv", content))

    lines = content[:bad_at].count(b"\n") + 1
    assert f"byte {bad_at} (line {lines}) is b'\\xff'" in str(caught.value)


def test_utf16_is_recognised(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="starts with a UTF-16 byte-order mark"):
        read_table(_write(tmp_path, "u.csv", "text,label\na,b\n".encode("utf-16")))


def test_an_unclosed_quote_is_explained(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="a quoted field is never closed"):
        read_table(_write(tmp_path, "q.csv", 'text,label\n"open,a\nnext,b\n'))


def test_compressed_files_are_read_by_their_extension(tmp_path: Path) -> None:
    path = _write(
        tmp_path, "d.csv.gz", gzip.compress(b"text,label\ngood phone,pos\nbad case,neg\n")
    )

    assert detect_format(path) == "csv"
    assert read_table(path).to_dict("records") == ROWS.to_dict("records")


def test_an_unknown_extension_asks_for_the_format(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"cannot tell the format of .*data\.txt"):
        read_table(_write(tmp_path, "data.txt", "text,label\n"))


def test_a_bad_jsonl_line_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"cannot read .* as JSONL"):
        read_table(_write(tmp_path, "d.jsonl", '{"text": "a", "label": "b"}\nnot json\n'))


def test_write_table_fixes_names_order_and_types(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "source": pd.Series(["web", "app"], dtype="string[pyarrow]"),
            "label_id": [0, 1],  # int64 in pandas
            "stars": [4.5, None],
            "text": pd.Series(["a", "b"], dtype="str"),
            "label": pd.Series(["x", "y"], dtype=object),
        }
    )
    path = tmp_path / "nested" / "out.parquet"

    written = write_table(
        frame, path, {"text": pa.string(), "label": pa.string(), "label_id": pa.int32()}
    )

    schema = pq.read_schema(path)
    assert schema == written
    assert schema.names == ["text", "label", "label_id", "source", "stars"]
    assert [schema.field(n).type for n in schema.names] == [
        pa.string(),
        pa.string(),
        pa.int32(),
        pa.string(),  # a large string is written as a string
        pa.float64(),
    ]
    assert schema.metadata is None  # no pandas metadata describing pre-cast types
    assert pq.read_table(path).column("label_id").to_pylist() == [0, 1]
