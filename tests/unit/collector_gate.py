"""The real collector on a loopback port, over the real SQLite store with a gate at its commit.

`GatedStore` is `SqlitePayloadStore` itself; only its transaction can be stopped after the
rows are written and before COMMIT runs, until the test opens the gate, or made to fail
there. That is the point where an acknowledgement sent too early would show: a client must
have no answer while the commit waits at the gate, and an error if it fails there.
`LiveCollector` runs the collector app in uvicorn, in a thread of the test's process, on a
socket bound by `collector.bind_socket`, as `textops collect` runs it.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn

from textops.components.monitor.collector import bind_socket, create_app
from textops.components.monitor.group_commit import GroupCommitWriter
from textops.components.monitor.store_sqlite import SqlitePayloadStore

#: Longest wait for something another thread does; reached only when the test fails.
WAIT_SECONDS = 60.0


class GatedStore(SqlitePayloadStore):
    """The SQLite store; while `hold` is set, each write transaction waits before COMMIT."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.hold = threading.Event()
        self.at_gate = threading.Event()
        self.gate_open = threading.Event()
        #: Raised at the gate by the next write transaction (then cleared).
        self.failure: Exception | None = None

    @contextmanager
    def _transaction(self, write: bool = True) -> Iterator[sqlite3.Cursor]:
        with super()._transaction(write) as cursor:
            yield cursor
            if write and self.hold.is_set():
                # The rows are written, COMMIT has not run: nothing is durable yet.
                self.at_gate.set()
                self.gate_open.wait(WAIT_SECONDS)
            if write and self.failure is not None:
                failure, self.failure = self.failure, None
                raise failure


class LiveCollector:
    """The collector app served by uvicorn on 127.0.0.1 in a background thread."""

    def __init__(self, store: GatedStore, **app_options: int) -> None:
        self.store = store
        self.app = create_app(store, **app_options)
        sock = bind_socket("127.0.0.1", 0)
        self.port = int(sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True
        )

    @property
    def writer(self) -> GroupCommitWriter:
        """The collector's group-commit writer."""
        writer: GroupCommitWriter = self.app.state.collector.writer
        return writer

    def start(self) -> None:
        """Serve, and return once the server listens."""
        self._thread.start()
        wait_for(lambda: self.server.started, "the collector to start")

    def stop(self) -> None:
        """Open the gate for anything still held, and stop the server (the store is closed)."""
        self.store.hold.clear()
        self.store.gate_open.set()
        self.server.should_exit = True
        self._thread.join(WAIT_SECONDS)


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll `condition()` until it is true; fail after `WAIT_SECONDS`.

    Polling a condition, not sleeping for a guessed time: a slow machine only waits longer.
    """
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)
