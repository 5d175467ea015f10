"""The collector, as `python -m textops.components.monitor.collector` runs it, stopped at commit.

    python gated_collector.py MARKER_FILE --store sqlite:///... --host 127.0.0.1 --port 0

Each write transaction of the SQLite store, once its rows are written and before COMMIT runs,
creates MARKER_FILE and waits there for good: for the SIGKILL of the durability test, which
then checks that the client had no answer and that nothing of the event is in the store.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from textops.components.monitor.collector import main
from textops.components.monitor.store_sqlite import SqlitePayloadStore


def gate_commits(marker: Path) -> None:
    """Make every SQLite write transaction stop before COMMIT, after creating `marker`."""
    transaction = SqlitePayloadStore._transaction

    @contextmanager
    def gated(self: SqlitePayloadStore, write: bool = True) -> Iterator[Any]:
        with transaction(self, write) as cursor:
            yield cursor
            if write:
                marker.touch()
                threading.Event().wait()  # never set: the process ends by SIGKILL here

    SqlitePayloadStore._transaction = gated  # type: ignore[method-assign]


if __name__ == "__main__":
    gate_commits(Path(sys.argv[1]))
    sys.exit(main(sys.argv[2:]))
