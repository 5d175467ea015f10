"""A SQLite payload store holding labelled traffic, for the tests of feedback snapshots."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from textops.components.monitor.store import PayloadEvent, open_store

MODEL = "textops-classifier"


def labelled_store(path: Path, rows: list[tuple[str, str]], model: str = MODEL) -> str:
    """A SQLite store at `path` holding `rows` (text, label) as `model`'s labelled traffic,
    received now; its URL."""
    url = f"sqlite:///{path}"
    now = datetime.now(UTC).timestamp()
    with open_store(url) as store:
        for i, (text, label) in enumerate(rows):
            store.write_events([PayloadEvent(f"e{i}", "request", now, model, texts=(text,))])
            store.add_labels([(f"e{i}", 0, label)])
    return url
