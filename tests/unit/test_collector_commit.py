"""No answer leaves the collector before its commit: a held commit holds the answer, a failed one
gives an error.

The collector runs in uvicorn on a loopback port over the real SQLite store, whose commit can
be held or failed at the point after the rows are written and before COMMIT runs
(`collector_gate.GatedStore`). Every wait is on a signal from the other side (the gate was
reached, the answer came), never on a guessed time.
"""

from __future__ import annotations

import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.unit.collector_gate import WAIT_SECONDS, GatedStore, LiveCollector
from textops.components.monitor.events import REQUEST_TYPE

BODY = b'{"instances": ["the soup was cold"]}'


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveCollector]:
    collector = LiveCollector(GatedStore(tmp_path / "payloads.db"))
    collector.start()
    yield collector
    collector.stop()


def cloudevent_request(url: str, event_id: str) -> bytes:
    """A binary-mode request event, as KServe's agent POSTs it, in raw HTTP/1.1."""
    host = url.removeprefix("http://")
    return (
        f"POST /events HTTP/1.1\r\nHost: {host}\r\nCe-Specversion: 1.0\r\nCe-Id: {event_id}\r\n"
        f"Ce-Type: {REQUEST_TYPE}\r\nCe-Source: http://localhost/\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY


def committed(store: GatedStore, event_id: str) -> bool:
    """Whether another connection sees the request event: whether it is committed."""
    with sqlite3.connect(f"file:{store.path}?mode=ro", uri=True) as reader:
        rows = reader.execute(
            "SELECT 1 FROM textops_payload_events WHERE event_id = ?", (event_id,)
        ).fetchall()
    return bool(rows)


def status_line(client: socket.socket) -> bytes:
    """The status line of the answer on `client`, waiting for it."""
    client.settimeout(WAIT_SECONDS)
    answer = b""
    while b"\r\n" not in answer:
        chunk = client.recv(4096)
        assert chunk, "the collector closed the connection without an answer"
        answer += chunk
    return answer.split(b"\r\n", 1)[0]


def test_a_client_has_no_answer_while_its_commit_is_held(live: LiveCollector) -> None:
    live.store.hold.set()
    with socket.create_connection(("127.0.0.1", live.port)) as client:
        client.sendall(cloudevent_request(live.url, "held-1"))
        assert live.store.at_gate.wait(WAIT_SECONDS), "the event never reached the commit"
        # The rows are written and COMMIT waits at the gate. The collector goes on serving
        # (its health route answers), yet the client has no answer and the event is not
        # visible to another connection.
        assert httpx.get(f"{live.url}/healthz", timeout=WAIT_SECONDS).status_code == 200
        client.setblocking(False)
        with pytest.raises(BlockingIOError):
            client.recv(1)
        assert not committed(live.store, "held-1")

        live.store.gate_open.set()
        client.setblocking(True)
        assert status_line(client) == b"HTTP/1.1 200 OK"
    assert committed(live.store, "held-1")


def test_a_commit_that_fails_is_answered_with_an_error(live: LiveCollector) -> None:
    live.store.failure = sqlite3.OperationalError("disk I/O error")
    headers = {
        "Ce-Specversion": "1.0",
        "Ce-Id": "failed-1",
        "Ce-Type": REQUEST_TYPE,
        "Ce-Source": "http://localhost/",
        "Content-Type": "application/json",
    }
    answer = httpx.post(f"{live.url}/events", content=BODY, headers=headers, timeout=WAIT_SECONDS)
    assert answer.status_code == 503
    assert "send the event again" in answer.json()["error"]
    assert not committed(live.store, "failed-1")
    metrics = httpx.get(f"{live.url}/metrics", timeout=WAIT_SECONDS).text
    assert 'textops_collector_events_rejected_total{reason="store_unavailable"} 1.0' in metrics
    assert "textops_collector_events_stored_total 0.0" in metrics

    # The failure was that commit's: the same event sent again is stored.
    again = httpx.post(f"{live.url}/events", content=BODY, headers=headers, timeout=WAIT_SECONDS)
    assert again.status_code == 200
    assert committed(live.store, "failed-1")
