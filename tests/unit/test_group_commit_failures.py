"""The group-commit writer when things go wrong, and its life: a store outage, a value the
store cannot hold, a bug, a request that went away, an event loop that closed, stop, and the
bounds it refuses.

Over the real SQLite store with a gate at its commit (`group_commit_harness`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.group_commit_harness import Harness, event, stored_ids
from textops.components.common.errors import PayloadStoreError
from textops.components.monitor.group_commit import MAX_BATCH_EVENTS, GroupCommitWriter
from textops.components.monitor.storable import UnstorableDataError


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    made = Harness(tmp_path / "payloads.db")
    yield made
    made.store.close()


def test_a_store_outage_fails_every_write_of_the_commit_once(harness: Harness) -> None:
    writer = harness.writer
    outage = PayloadStoreError("disk full")
    tries: list[int] = []
    write_events = harness.store.write_events

    def outage_at_the_shared_commit(events: Any) -> list[bool]:
        tries.append(len(events))
        if len(events) == 3:  # the commit of the three queued writes fails at COMMIT
            harness.store.failure = outage
        return write_events(events)

    harness.store.write_events = outage_at_the_shared_commit  # type: ignore[method-assign]

    async def scenario() -> None:
        writes = [writer.write_events([event(f"w{i}")]) for i in range(3)]
        assert await harness.behind_a_held_commit(*writes) == [outage] * 3

    harness.run(scenario)
    # One try for the three: committing them one by one would fail the same way.
    assert tries == [1, 3]
    assert harness.committed == [1]
    assert writer.batches == 1


def test_a_value_the_store_cannot_hold_fails_only_its_own_write(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    writer = harness.writer

    async def scenario() -> None:
        results = await harness.behind_a_held_commit(
            writer.write_events([event("good-1")]),
            writer.write_events([event("poison", "lone \ud800 surrogate")]),
            writer.write_events([event("good-2"), event("good-3")]),
        )
        assert results[0] == [True] and results[2] == [True, True]
        assert isinstance(results[1], UnstorableDataError)

    with caplog.at_level(logging.WARNING, logger="textops.components.monitor.group_commit"):
        harness.run(scenario)
    # The shared commit failed on the poison; then each write went alone.
    assert harness.committed == [1, 1, 2]
    assert stored_ids(harness) == {"blocker", "good-1", "good-2", "good-3"}
    assert [r.getMessage() for r in caplog.records] == [
        "shared commit failed; committing its writes one at a time writes=3 "
        "error=UnstorableDataError"
    ]


def test_of_two_writes_sharing_a_commit_the_poisoned_one_fails_alone(harness: Harness) -> None:
    writer = harness.writer

    async def scenario() -> None:
        good, poisoned = await harness.behind_a_held_commit(
            writer.write_events([event("good")]),
            writer.write_events([event("poison", "lone \ud800 surrogate")]),
        )
        assert good == [True]
        assert isinstance(poisoned, UnstorableDataError)

    harness.run(scenario)
    assert stored_ids(harness) == {"blocker", "good"}


def test_an_unexpected_error_of_a_lone_write_is_answered_and_logged(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    writer = harness.writer
    bug = RuntimeError("a bug in the store")

    async def scenario() -> None:
        harness.store.failure = bug
        assert await harness.answers(writer.write_events([event("x")])) == [bug]
        # The writer goes on.
        assert await harness.answers(writer.write_events([event("y")])) == [[True]]

    with caplog.at_level(logging.ERROR, logger="textops.components.monitor.group_commit"):
        harness.run(scenario)
    [record] = caplog.records
    assert record.getMessage() == "store write failed error=RuntimeError"
    assert record.exc_info is not None and record.exc_info[1] is bug  # with its traceback
    assert harness.committed == [1]


def test_a_store_error_is_answered_without_a_traceback_in_the_log(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    # The store's own errors are expected: the collector logs them once, as it answers 503.
    writer = harness.writer
    outage = PayloadStoreError("disk full")

    async def scenario() -> None:
        harness.store.failure = outage
        assert await harness.answers(writer.write_events([event("x")])) == [outage]

    with caplog.at_level(logging.DEBUG, logger="textops.components.monitor.group_commit"):
        harness.run(scenario)
    assert caplog.records == []


def test_labels_are_answered_with_the_matches_or_their_error(harness: Harness) -> None:
    writer = harness.writer

    async def scenario() -> None:
        assert await harness.answers(writer.write_events([event("r1")])) == [[True]]
        [refused] = await harness.answers(writer.add_labels([("r1", 0, "")]))
        assert isinstance(refused, UnstorableDataError)
        assert await harness.answers(writer.add_labels([("r1", 0, "ok")])) == [1]
        assert await harness.answers(writer.add_labels([("r9", 0, "ok")])) == [0]

    harness.run(scenario)
    assert harness.committed == [1]  # labels are not event batches


def test_the_writer_thread_is_named_and_never_keeps_the_process_alive(harness: Harness) -> None:
    before = set(threading.enumerate())
    harness.writer.start()
    try:
        [thread] = set(threading.enumerate()) - before
        assert (thread.name, thread.daemon) == ("payload-store-writer", True)
    finally:
        harness.writer.stop()


def test_stop_commits_what_is_queued_and_later_writes_are_refused(harness: Harness) -> None:
    writer = harness.writer
    writer.start()
    assert writer.alive

    async def queue_then_stop() -> list[Any]:
        harness.store.hold.set()
        blocker = asyncio.ensure_future(writer.write_events([event("blocker")]))
        await harness.until(harness.store.at_gate.is_set, "the first commit reached the gate")
        late = asyncio.ensure_future(writer.write_events([event("late")]))
        await harness.until(lambda: writer.queued() == 1, "the late write queued")
        harness.store.hold.clear()
        harness.store.gate_open.set()
        await asyncio.to_thread(writer.stop)  # returns once both are committed
        assert not writer.alive
        return [blocker.result(), late.result()]

    assert asyncio.run(queue_then_stop()) == [[True], [True]]
    assert harness.committed == [1, 1]

    async def write_after_stop() -> None:
        await writer.write_events([event("too-late")])

    with pytest.raises(PayloadStoreError, match=r"^the payload store writer is not running$"):
        asyncio.run(write_after_stop())
    writer.stop()  # again: nothing to do


def test_a_write_whose_request_went_away_is_still_committed(harness: Harness) -> None:
    writer = harness.writer

    async def scenario() -> None:
        harness.store.hold.set()
        gone = asyncio.ensure_future(writer.write_events([event("gone")]))
        await harness.until(harness.store.at_gate.is_set, "the commit reached the gate")
        gone.cancel()  # the client disconnected while its commit ran
        harness.store.hold.clear()
        harness.store.gate_open.set()
        # The writer settles the cancelled write without error and serves the next one.
        assert await harness.answers(writer.write_events([event("next")])) == [[True]]

    harness.run(scenario)
    assert stored_ids(harness) == {"gone", "next"}


def test_an_answer_for_a_closed_event_loop_is_logged_not_raised(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    writer = harness.writer
    orphans: list[asyncio.Future[list[bool]]] = []

    async def submit() -> None:
        harness.store.hold.set()
        # Queue the write and return at once: this loop closes before the commit ends.
        orphans.append(asyncio.ensure_future(writer.write_events([event("orphan")])))
        await harness.until(harness.store.at_gate.is_set, "the commit reached the gate")

    async def scenario() -> None:
        with caplog.at_level(logging.WARNING, logger="textops.components.monitor.group_commit"):
            await asyncio.to_thread(asyncio.run, submit())
            harness.store.hold.clear()
            harness.store.gate_open.set()
            await harness.until(lambda: bool(caplog.records), "the writer's warning")
        # The writer goes on.
        assert await harness.answers(writer.write_events([event("next")])) == [[True]]

    harness.run(scenario)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["store write finished after its event loop closed"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_batch_events": 0}, "max_batch_events must be 1 or more, not 0"),
        ({"commit_window_seconds": -0.5}, "commit_window_seconds must be 0 or more, not -0.5"),
    ],
)
def test_bounds_below_their_least_are_refused(
    harness: Harness, options: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError) as raised:
        GroupCommitWriter(harness.store, **options)  # type: ignore[arg-type]
    assert str(raised.value) == message


def test_the_least_bounds_and_the_defaults_are_accepted(harness: Harness) -> None:
    least = GroupCommitWriter(harness.store, max_batch_events=1, commit_window_seconds=0.0)
    assert (least.max_batch_events, least.commit_window_seconds) == (1, 0.0)
    default = GroupCommitWriter(harness.store)
    assert (default.max_batch_events, default.commit_window_seconds) == (MAX_BATCH_EVENTS, 0.0)
    assert default.batches == 0 and not default.alive
