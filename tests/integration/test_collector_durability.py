"""Durability: every event the collector acknowledged is in the store after a SIGKILL under load.

The real collector runs as a process on a SQLite file; clients send request and response
events over many connections; the collector is killed with SIGKILL while they send, then
started again on the same file (this time through `textops collect`). Every event that had
been answered 2xx must be there, and the restarted collector must take new events.

Under load, an answer sent just before its commit would rarely be caught by that test: the
window is a disk flush long. So a second test kills the collector exactly there: its commit is
stopped after the rows are written and before COMMIT (`gated_collector.py`), the kill comes
once the commit has reached that point, and the client must have had no answer.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from textops.components.monitor.store import open_store

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
HERE = Path(__file__).parent
CONNECTIONS = 16
#: Acknowledged events to wait for before the kill.
ACKS_BEFORE_KILL = 400


def start_collector(
    command: list[str], store_url: str, log: Path
) -> tuple[subprocess.Popen[bytes], int]:
    """Start the collector on a free loopback port; (process, port) once it listens."""
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [*command, "--store", store_url, "--host", "127.0.0.1", "--port", "0"],
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = re.search(r"listening url=http://127\.0\.0\.1:(\d+)", log.read_text())
        if found:
            return process, int(found.group(1))
        if process.poll() is not None:
            pytest.fail(f"the collector exited: {log.read_text()}")
        time.sleep(0.05)
    process.kill()
    pytest.fail("the collector did not start within 60 s")


def event_bytes(port: int, event_id: str, kind: str) -> bytes:
    body = (
        json.dumps({"instances": [f"text of {event_id}"]})
        if kind == "request"
        else json.dumps({"predictions": ["positive"], "model_version": "1"})
    ).encode()
    head = (
        f"POST /events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCe-Specversion: 1.0\r\n"
        f"Ce-Id: {event_id}\r\nCe-Type: {REQUEST_TYPE if kind == 'request' else RESPONSE_TYPE}"
        "\r\nCe-Source: http://localhost/\r\nCe-Inferenceservicename: sentiment\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def read_status(reader: asyncio.StreamReader) -> int:
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


class Load(threading.Thread):
    """Clients that send request/response pairs until their connection breaks."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.acked: list[tuple[str, str]] = []
        self.broken = 0

    def run(self) -> None:
        asyncio.run(self._all())

    async def _all(self) -> None:
        await asyncio.gather(*(self._connection(c) for c in range(CONNECTIONS)))

    async def _connection(self, number: int) -> None:
        writer = None
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            for i in range(1_000_000):
                for kind in ("request", "response"):
                    writer.write(event_bytes(self.port, f"c{number}-{i}", kind))
                    status = await asyncio.wait_for(read_status(reader), timeout=30)
                    if 200 <= status < 300:
                        self.acked.append((f"c{number}-{i}", kind))
        except (OSError, asyncio.IncompleteReadError, IndexError, ValueError):
            self.broken += 1  # the collector was killed while this request was in flight
        finally:
            if writer is not None:
                writer.close()


@pytest.mark.integration
def test_acknowledged_events_survive_sigkill_under_load(tmp_path: Path) -> None:
    store_url = f"sqlite:///{tmp_path / 'payloads.db'}"
    module = [sys.executable, "-m", "textops.components.monitor.collector"]
    first, port = start_collector(module, store_url, tmp_path / "first.log")
    load = Load(port)
    load.start()
    deadline = time.monotonic() + 120
    while len(load.acked) < ACKS_BEFORE_KILL and time.monotonic() < deadline and load.is_alive():
        time.sleep(0.005)
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    load.join(timeout=60)
    acked = list(load.acked)
    assert len(acked) >= ACKS_BEFORE_KILL
    assert load.broken == CONNECTIONS  # every client was still sending when the kill came

    cli = [sys.executable, "-m", "textops.pipelines", "collect"]
    second, port = start_collector(cli, store_url, tmp_path / "second.log")
    try:
        post = urllib.request.Request(
            f"http://127.0.0.1:{port}/events",
            data=event_bytes(port, "after", "request").split(b"\r\n\r\n", 1)[1],
            headers={
                "Ce-Specversion": "1.0",
                "Ce-Id": "after-restart",
                "Ce-Type": REQUEST_TYPE,
                "Ce-Source": "http://localhost/",
                "Content-Type": "application/json",
            },
        )
        with urllib.request.urlopen(post, timeout=30) as answer:
            assert answer.status == 200
    finally:
        second.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then ends by the signal it got.
        assert second.wait(timeout=60) in (0, -signal.SIGTERM)
    assert "collector stopped" in (tmp_path / "second.log").read_text()

    with open_store(store_url) as store:
        assert store.missing_events(acked) == []  # type: ignore[arg-type]
        texts = set(store.fetch_window()["event_id"])
    assert {event_id for event_id, kind in acked if kind == "request"} <= texts
    assert "after-restart" in texts


@pytest.mark.integration
def test_an_event_killed_before_its_commit_was_never_acknowledged(tmp_path: Path) -> None:
    store_url = f"sqlite:///{tmp_path / 'payloads.db'}"
    at_commit = tmp_path / "at-commit"
    gated = [sys.executable, str(HERE / "gated_collector.py"), str(at_commit)]
    process, port = start_collector(gated, store_url, tmp_path / "gated.log")
    with socket.create_connection(("127.0.0.1", port), timeout=60) as client:
        client.sendall(event_bytes(port, "killed-1", "request"))
        deadline = time.monotonic() + 60
        while not at_commit.exists():
            assert time.monotonic() < deadline, "the event never reached its commit"
            assert process.poll() is None, (tmp_path / "gated.log").read_text()
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        try:
            answer = client.recv(4096)
        except ConnectionResetError:
            answer = b""
    assert answer == b"", f"the client got an answer before the commit: {answer[:80]!r}"
    with open_store(store_url) as store:
        assert store.missing_events([("killed-1", "request")]) == [("killed-1", "request")]
