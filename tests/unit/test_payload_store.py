"""The payload store on a real SQLite file and on a real PostgreSQL server started here.

The PostgreSQL server comes from the `initdb` and `postgres` binaries (on PATH or under
/usr/lib/postgresql/*/bin), listens only on a Unix socket in a temporary folder, and runs as
an unprivileged user when the tests run as root (PostgreSQL refuses root). Every test gets a
fresh database.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from textops.components.common.errors import PayloadStoreError
from textops.components.common.traffic import EVALUATION_REQUEST_PREFIX
from textops.components.monitor.storable import UnstorableDataError
from textops.components.monitor.store import (
    WINDOW_COLUMNS,
    PayloadEvent,
    PayloadStore,
    open_store,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC).timestamp()


def postgres_binaries() -> tuple[str, str] | None:
    """(initdb, postgres), from PATH or the newest /usr/lib/postgresql/<version>/bin."""
    on_path = shutil.which("initdb"), shutil.which("postgres")
    if all(on_path):
        return on_path  # type: ignore[return-value]
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    for directory in reversed(versions):
        initdb, postgres = Path(directory, "initdb"), Path(directory, "postgres")
        if initdb.is_file() and postgres.is_file():
            return str(initdb), str(postgres)
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server of this test module; yields the URL of its `postgres` database."""
    binaries = postgres_binaries()
    if binaries is None:
        pytest.skip(
            "PostgreSQL's initdb and postgres binaries were found neither on PATH nor under "
            "/usr/lib/postgresql/*/bin; install PostgreSQL (apt-get install postgresql) to run "
            "the PostgreSQL store tests"
        )
    import psycopg

    initdb, postgres = binaries
    root = Path(tempfile.mkdtemp(prefix="textops-pg-"))
    run_as: dict[str, Any] = {}
    if os.geteuid() == 0:
        # PostgreSQL will not run as root: run it as its own user, or as nobody.
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            account = pwd.getpwnam("nobody")
        os.chown(root, account.pw_uid, account.pw_gid)
        run_as = {"user": account.pw_uid, "group": account.pw_gid}
    data = root / "data"
    subprocess.run(
        [
            *(initdb, "-D", str(data), "--auth=trust", "--username=postgres", "--no-sync"),
            *("--encoding=UTF8", "--locale=C"),
        ],
        cwd=root,
        check=True,
        capture_output=True,
        timeout=120,
        **run_as,
    )
    port = _free_port()  # names the socket file; nothing listens on TCP
    log = open(root / "server.log", "wb")  # noqa: SIM115 (closed below)
    server = subprocess.Popen(
        [postgres, "-D", str(data), "-k", str(root), "-p", str(port), "-c", "listen_addresses="],
        cwd=root,
        stdout=log,
        stderr=subprocess.STDOUT,
        **run_as,
    )
    url = f"postgresql://postgres@/postgres?host={root}&port={port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            psycopg.connect(url, connect_timeout=2).close()
            break
        except psycopg.OperationalError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"PostgreSQL did not start: {(root / 'server.log').read_text()}")
            time.sleep(0.1)
    try:
        yield url
    finally:
        server.terminate()  # SIGTERM: smart shutdown once the clients are gone
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh database on the module's PostgreSQL server."""
    import psycopg

    name = f"t_{uuid.uuid4().hex}"
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield postgres_server.replace("@/postgres?", f"@/{name}?")
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store' / 'payloads.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def store(store_url: str) -> Iterator[PayloadStore]:
    with open_store(store_url) as opened:
        yield opened


def request(event_id: str, at: float, *texts: str, model: str = "m") -> PayloadEvent:
    return PayloadEvent(event_id, "request", T0 + at, model, texts=texts)


def response(event_id: str, at: float, *labels: str, version: str = "3") -> PayloadEvent:
    predictions = tuple((label, 0.5 + i / 10) for i, label in enumerate(labels))
    return PayloadEvent(event_id, "response", T0 + at, "m", version, predictions=predictions)


def test_join_in_either_order_and_types(store: PayloadStore) -> None:
    assert store.write_events([request("a", 0, "x", "y"), response("b", 1, "neg")]) == [True, True]
    assert store.write_events([response("a", 2, "pos", "neg"), request("b", 3, "café ☕")]) == [
        True,
        True,
    ]
    frame = store.fetch_window()
    assert list(frame.columns) == list(WINDOW_COLUMNS)
    assert frame[["event_id", "item", "text", "prediction", "model_version"]].values.tolist() == [
        ["a", 0, "x", "pos", "3"],
        ["a", 1, "y", "neg", "3"],
        ["b", 0, "café ☕", "neg", "3"],  # received_at: its first event (the response) at T0 + 1
    ]
    assert frame["confidence"].tolist() == pytest.approx([0.5, 0.6, 0.5])
    assert str(frame["received_at"].dtype) == "datetime64[ns, UTC]"
    assert frame["received_at"].iloc[0] == pd.Timestamp(T0, unit="s", tz="UTC")
    assert frame["item"].dtype == "int64" and frame["confidence"].dtype == "float64"
    assert frame["label"].tolist() == [None, None, None]


def test_a_repeated_event_changes_nothing(store: PayloadStore) -> None:
    first = request("a", 0, "original")
    assert store.write_events([first, request("a", 5, "copy", "more")]) == [True, False]
    assert store.write_events([first]) == [False]
    frame = store.fetch_window()
    assert frame["text"].tolist() == ["original"]
    assert store.missing_events([("a", "request"), ("a", "response")]) == [("a", "response")]


def test_window_filters(store: PayloadStore) -> None:
    store.write_events(
        [request(f"e{i}", i * 60, f"t{i}", model="m" if i % 2 else "n") for i in range(6)]
    )
    start = datetime.fromtimestamp(T0, UTC)
    assert store.fetch_window(model_name="m")["text"].tolist() == ["t1", "t3", "t5"]
    since, until = start + timedelta(minutes=2), start + timedelta(minutes=4)
    assert store.fetch_window(since=since, until=until)["text"].tolist() == ["t2", "t3"]
    naive = since.replace(tzinfo=None)  # naive times are UTC
    assert store.fetch_window(since=naive)["text"].tolist() == ["t2", "t3", "t4", "t5"]
    assert store.fetch_window(last=2)["text"].tolist() == ["t4", "t5"]
    assert store.fetch_window(model_name="n", last=2)["text"].tolist() == ["t2", "t4"]
    empty = store.fetch_window(model_name="absent")
    assert empty.empty and list(empty.columns) == list(WINDOW_COLUMNS)


def test_a_window_can_leave_out_the_evaluate_steps_traffic(store: PayloadStore) -> None:
    store.write_events(
        [
            request("textops-evaluate-1", 0, "scored by evaluate"),
            request("real-1", 1, "a customer"),
            request("real-2", 2, "another customer"),
        ]
    )
    window = store.fetch_window(exclude_event_prefix=EVALUATION_REQUEST_PREFIX, last=2)
    assert window["text"].tolist() == ["a customer", "another customer"]
    assert len(store.fetch_window(exclude_event_prefix=EVALUATION_REQUEST_PREFIX)) == 2
    assert len(store.fetch_window()) == 3


def test_a_labelled_window_holds_only_labelled_texts(store: PayloadStore) -> None:
    store.write_events(
        [
            request("textops-evaluate-1", 0, "scored by evaluate"),
            request("real-1", 1, "first", "second"),
            request("real-2", 2, "third"),
            request("other", 3, "another model's", model="n"),
        ]
    )
    store.add_labels([("textops-evaluate-1", 0, "pos"), ("real-1", 1, "neg"), ("real-2", 0, "pos")])
    store.add_labels([("other", 0, "pos"), ("no-text-yet", 0, "neg")])
    window = store.fetch_window(
        model_name="m", labelled=True, exclude_event_prefix=EVALUATION_REQUEST_PREFIX
    )
    assert window[["text", "label"]].values.tolist() == [["second", "neg"], ["third", "pos"]]
    assert store.fetch_window(model_name="m", labelled=True, last=1)["text"].tolist() == ["third"]


def test_a_read_transaction_cannot_write(store: PayloadStore) -> None:
    store.write_events([request("e", 0, "kept")])
    with pytest.raises(PayloadStoreError), store._transaction(write=False) as cursor:
        cursor.execute(store._sql("DELETE FROM textops_payload_items"))
    assert store.fetch_window()["text"].tolist() == ["kept"]
    store.write_events([request("f", 1, "written after")])  # writers still write
    assert len(store.fetch_window()) == 2


def test_labels_before_and_after_and_corrected(store: PayloadStore) -> None:
    assert store.add_labels([("a", 1, "neg"), ("zz", 0, "pos")]) == 0
    store.write_events([request("a", 0, "x", "y")])
    assert store.fetch_window()["label"].tolist() == [None, "neg"]
    assert store.add_labels([("a", 0, "pos"), ("a", 1, "pos")]) == 2
    assert store.fetch_window()["label"].tolist() == ["pos", "pos"]
    assert len(store.fetch_window()) == 2  # the label of an unknown request is not a text
    with pytest.raises(PayloadStoreError, match="item -1"):
        store.add_labels([("a", -1, "pos")])


def assert_refused_as_unstorable(store: PayloadStore, text: str) -> None:
    """A write holding `text` fails whole, as the values' fault; the store goes on."""
    with pytest.raises(UnstorableDataError):
        store.write_events([request("good", 0, "fine"), request("poison", 0, text)])
    assert store.fetch_window().empty  # the transaction was rolled back whole
    assert store.write_events([request("good", 0, "fine")]) == [True]
    with pytest.raises(UnstorableDataError, match="a label's label holds"):
        store.add_labels([("good", 0, text)])


def test_a_lone_surrogate_fails_as_unstorable(store: PayloadStore) -> None:
    # The collector normalizes such texts before they come here (storable.py); a writer that
    # does not must get an error that says the values are at fault, not the store.
    assert_refused_as_unstorable(store, "lone \ud800 surrogate")


def test_postgresql_refuses_nul_as_unstorable(postgres_url: str) -> None:
    with open_store(postgres_url) as store:
        assert_refused_as_unstorable(store, "nul \x00 inside")


def test_data_survives_reopening(store_url: str) -> None:
    with open_store(store_url) as first:
        first.write_events([request("a", 0, "x")])
    with open_store(store_url) as second:  # the schema is there already
        assert second.fetch_window()["text"].tolist() == ["x"]


def test_concurrent_writers_store_an_event_once(store_url: str) -> None:
    stores = [open_store(store_url) for _ in range(2)]
    results: list[list[bool]] = []

    def write(target: PayloadStore) -> None:
        results.append(target.write_events([request(f"c{i}", i, "t") for i in range(50)]))

    threads = [threading.Thread(target=write, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for opened in stores:
        opened.close()
    assert [a or b for a, b in zip(*results, strict=True)] == [True] * 50
    assert not any(a and b for a, b in zip(*results, strict=True))


def test_sqlite_uses_wal_and_full_sync(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    with open_store(f"sqlite:///{path}") as opened:
        opened.write_events([request("a", 0, "x")])
        assert Path(f"{path}-wal").exists()
        with sqlite3.connect(path) as other:  # WAL is recorded in the file itself
            assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        connection = opened._conn  # type: ignore[attr-defined]
        assert connection.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_sqlite_relative_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with open_store("sqlite:///nested/p.db"):
        pass
    assert (tmp_path / "nested" / "p.db").is_file()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u@h/db", "unsupported payload store URL"),
        ("payloads.db", "use sqlite:///relative/file.db"),
        ("sqlite:///", "bad SQLite URL"),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(PayloadStoreError, match=message):
        open_store(url)


def test_postgres_errors_hide_the_password(tmp_path: Path) -> None:
    url = f"postgresql://bob:s3cret@/db?host={tmp_path}&port=1"
    with pytest.raises(PayloadStoreError) as error:
        open_store(url)
    assert "s3cret" not in str(error.value) and "bob:***@" in str(error.value)


def test_collector_on_postgresql(postgres_url: str) -> None:
    from starlette.testclient import TestClient

    from textops.components.monitor.collector import create_app

    headers = {"Ce-Specversion": "1.0", "Ce-Id": "pg-1", "Ce-Source": "s"}
    with TestClient(create_app(open_store(postgres_url))) as client:
        for kind, body in (
            ("response", '{"predictions": ["pos"], "model_version": "2"}'),
            ("request", '{"instances": ["mail jane@example.com"]}'),
        ):
            ce_type = f"org.kubeflow.serving.inference.{kind}"
            answer = client.post("/events", content=body, headers={**headers, "Ce-Type": ce_type})
            assert answer.status_code == 200
        assert client.post("/labels", json=[{"id": "pg-1", "label": "pos"}]).status_code == 200
    with open_store(postgres_url) as store:
        frame = store.fetch_window()
    assert frame[["text", "prediction", "model_version", "label"]].values.tolist() == [
        ["mail [EMAIL]", "pos", "2", "pos"]
    ]
