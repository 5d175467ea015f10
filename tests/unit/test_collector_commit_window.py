"""The commit window: once concurrent senders were seen, a commit waits for as many writes.

The writer runs over the real SQLite store with a gate at its commit (`collector_gate`), so
which writes share a commit is decided by the order of events, not by timing. The windows are
an hour long: a commit that waited out its window instead of ending it early would stop the
test (after `WAIT_SECONDS`), never pass it by luck.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import pytest

from tests.unit.collector_gate import WAIT_SECONDS, GatedStore, wait_for
from textops.components.monitor.collector import create_app
from textops.components.monitor.collector_cli import DEFAULT_COMMIT_WINDOW_MS, add_collect_arguments
from textops.components.monitor.group_commit import GroupCommitWriter
from textops.components.monitor.store import PayloadEvent

HOUR = 3600.0


def event(event_id: str) -> PayloadEvent:
    return PayloadEvent(event_id, "request", 0.0, "m", texts=("a text",))


def test_a_commit_waits_for_as_many_writes_as_the_last_batches_held(tmp_path: Path) -> None:
    store = GatedStore(tmp_path / "payloads.db")
    batches: list[int] = []
    writer = GroupCommitWriter(store, on_batch=batches.append, commit_window_seconds=HOUR)

    async def scenario() -> None:
        # Three writes queue behind a held commit and are committed together: three
        # concurrent senders were seen.
        store.hold.set()
        blocker = asyncio.ensure_future(writer.write_events([event("blocker")]))
        assert await asyncio.to_thread(store.at_gate.wait, WAIT_SECONDS)
        three = [asyncio.ensure_future(writer.write_events([event(f"w{i}")])) for i in range(3)]
        await asyncio.to_thread(wait_for, lambda: writer.queued() == 3, "three queued writes")
        store.hold.clear()
        store.gate_open.set()
        await asyncio.wait_for(asyncio.gather(blocker, *three), WAIT_SECONDS)
        assert batches == [1, 3]

        # Now one write comes alone. The writer takes it and waits for two more, which
        # arrive one after the other: the three share one commit, which ends the window.
        first = asyncio.ensure_future(writer.write_events([event("a")]))
        await asyncio.sleep(0)  # `first` is queued
        await asyncio.to_thread(wait_for, lambda: writer.queued() == 0, "the writer to take a")
        assert not first.done()
        rest = [asyncio.ensure_future(writer.write_events([event(name)])) for name in "bc"]
        await asyncio.wait_for(asyncio.gather(first, *rest), WAIT_SECONDS)
        assert batches == [1, 3, 3]

    writer.start()
    try:
        asyncio.run(scenario())
    finally:
        writer.stop()
        store.close()


def test_a_lone_sender_never_waits(tmp_path: Path) -> None:
    store = GatedStore(tmp_path / "payloads.db")
    batches: list[int] = []
    writer = GroupCommitWriter(store, on_batch=batches.append, commit_window_seconds=HOUR)

    async def one_at_a_time() -> None:
        for name in ("x", "y", "z"):
            assert await asyncio.wait_for(writer.write_events([event(name)]), WAIT_SECONDS) == [
                True
            ]

    writer.start()
    try:
        asyncio.run(one_at_a_time())
    finally:
        writer.stop()
        store.close()
    assert batches == [1, 1, 1]


def test_commit_window_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_collect_arguments(parser)
    assert parser.parse_args([]).commit_window_ms == DEFAULT_COMMIT_WINDOW_MS
    assert parser.parse_args(["--commit-window-ms", "2.5"]).commit_window_ms == 2.5
    for bad in ("-1", "soon", "inf", "nan"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--commit-window-ms", bad])
        assert "--commit-window-ms: expected a number of 0 or more" in capsys.readouterr().err
    app = create_app(GatedStore(tmp_path / "payloads.db"), commit_window_ms=2.0)
    assert app.state.collector.writer.commit_window_seconds == pytest.approx(0.002)
    app.state.collector.writer.store.close()
    with pytest.raises(ValueError, match="0 or more"):
        GroupCommitWriter(app.state.collector.writer.store, commit_window_seconds=-1.0)
