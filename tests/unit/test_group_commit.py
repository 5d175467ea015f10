"""The group-commit writer on its own, over the real SQLite store with a gate at its commit.

While the gate holds the first commit, the writes that follow queue up; opening it shows which
of them the writer takes into the next commit, so batching is decided by the order of events,
never by timing (`collector_gate`). Each scenario runs on an event loop of the test's own, as
the collector's handlers do. A writer thread that dies leaves its writes unanswered for ever,
so every wait here fails as soon as the thread is gone instead of waiting it out.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.collector_gate import WAIT_SECONDS, GatedStore
from textops.components.common.errors import PayloadStoreError
from textops.components.monitor.group_commit import MAX_BATCH_EVENTS, GroupCommitWriter
from textops.components.monitor.storable import UnstorableDataError
from textops.components.monitor.store import PayloadEvent

HOUR = 3600.0


def event(event_id: str, *texts: str) -> PayloadEvent:
    return PayloadEvent(event_id, "request", 0.0, "m", texts=texts or ("a text",))


class Harness:
    """A writer over a gated store; `committed` lists each commit's event count."""

    def __init__(self, path: Path, **options: Any) -> None:
        self.store = GatedStore(path)
        self.committed: list[int] = []
        self.writer = GroupCommitWriter(self.store, on_batch=self.committed.append, **options)

    def run(self, scenario: Callable[[], Awaitable[None]]) -> None:
        """Start the writer, run `scenario` on a new event loop, stop the writer."""
        self.writer.start()
        try:
            asyncio.run(scenario())
        finally:
            self.store.hold.clear()
            self.store.gate_open.set()
            self.writer.stop()

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        """Wait for `condition`; fail at once if the writer thread has died."""
        deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
        while not condition():
            assert self.writer.alive, f"the writer thread died before {what}"
            assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.002)

    async def answers(self, *writes: Awaitable[Any]) -> list[Any]:
        """What each write gave (its result, or the exception it raised), once all have one."""
        gathered = asyncio.gather(*writes, return_exceptions=True)
        await self.until(gathered.done, "every write was answered")
        return list(gathered.result())

    async def behind_a_held_commit(self, *writes: Awaitable[Any]) -> list[Any]:
        """Hold a first commit, queue `writes` behind it, then let everything commit."""
        self.store.hold.set()
        blocker = asyncio.ensure_future(self.writer.write_events([event("blocker")]))
        await self.until(self.store.at_gate.is_set, "the first commit reached the gate")
        futures = [asyncio.ensure_future(w) for w in writes]
        await self.until(lambda: self.writer.queued() == len(writes), "the writes queued")
        self.store.hold.clear()
        self.store.gate_open.set()
        assert await self.answers(blocker) == [[True]]
        return await self.answers(*futures)


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    made = Harness(tmp_path / "payloads.db")
    yield made
    made.store.close()


def stored_ids(harness: Harness) -> set[str]:
    return set(harness.store.fetch_window()["event_id"])


def test_writes_queued_during_a_commit_share_the_next_one(harness: Harness) -> None:
    writer = harness.writer

    async def scenario() -> None:
        assert writer.queued() == 0
        results = await harness.behind_a_held_commit(
            writer.write_events([event("a"), event("b")]),
            writer.write_events([event("c")]),
            writer.write_events([event("a")]),
        )
        # Each write gets its own events' flags; a repeated id is not new.
        assert results == [[True, True], [True], [False]]

    harness.run(scenario)
    assert harness.committed == [1, 4]
    assert writer.batches == 2
    assert stored_ids(harness) == {"blocker", "a", "b", "c"}


def test_the_batch_bound_holds_back_what_does_not_fit_in_order(tmp_path: Path) -> None:
    harness = Harness(tmp_path / "payloads.db", max_batch_events=3)
    writer = harness.writer
    sizes = [2, 1, 2, 4, 1, 1, 1, 1, 1]

    async def scenario() -> None:
        writes = [
            writer.write_events([event(f"w{i}-{j}") for j in range(n)]) for i, n in enumerate(sizes)
        ]
        results = await harness.behind_a_held_commit(*writes)
        assert results == [[True] * n for n in sizes]

    harness.run(scenario)
    harness.store.close()
    # 2+1 fill the bound; 2 waits for the next commit, where 4 does not fit; 4 is over the
    # bound and goes alone; then three writes of one event fill a commit, and two are left.
    assert harness.committed == [1, 3, 2, 4, 3, 2]


def test_a_bound_of_one_commits_every_event_alone(tmp_path: Path) -> None:
    harness = Harness(tmp_path / "payloads.db", max_batch_events=1)
    writer = harness.writer

    async def scenario() -> None:
        writes = [writer.write_events([event(f"w{i}")]) for i in range(3)]
        assert await harness.behind_a_held_commit(*writes) == [[True]] * 3

    harness.run(scenario)
    harness.store.close()
    assert harness.committed == [1, 1, 1, 1]


def test_a_commit_window_waits_for_as_many_writes_as_the_last_batches_held(
    tmp_path: Path,
) -> None:
    harness = Harness(tmp_path / "payloads.db", commit_window_seconds=HOUR)
    writer = harness.writer

    async def scenario() -> None:
        # Three writes behind a held commit: three concurrent senders were seen.
        writes = [writer.write_events([event(f"w{i}")]) for i in range(3)]
        assert await harness.behind_a_held_commit(*writes) == [[True]] * 3
        # One write alone now waits (the window is an hour) until two more are in hand.
        first = asyncio.ensure_future(writer.write_events([event("a")]))
        await asyncio.sleep(0)  # `first` is queued
        await harness.until(lambda: writer.queued() == 0, "the writer took the first write")
        assert not first.done()
        rest = [writer.write_events([event(name)]) for name in "bc"]
        assert await harness.answers(first, *rest) == [[True]] * 3

    harness.run(scenario)
    harness.store.close()
    assert harness.committed == [1, 3, 3]


def test_a_write_is_committed_alone_once_the_window_has_passed(tmp_path: Path) -> None:
    # No second write comes: the write is committed when its window (50 ms) ends; a writer
    # that waited on would leave it unanswered.
    harness = Harness(tmp_path / "payloads.db", commit_window_seconds=0.05)
    writer = harness.writer

    async def scenario() -> None:
        writes = [writer.write_events([event(f"w{i}")]) for i in range(3)]
        assert await harness.behind_a_held_commit(*writes) == [[True]] * 3
        assert await harness.answers(writer.write_events([event("alone")])) == [[True]]

    harness.run(scenario)
    harness.store.close()
    assert harness.committed == [1, 3, 1]


def test_the_window_follows_the_last_16_batches_only(tmp_path: Path) -> None:
    # A burst of two writes, then 16 commits of one write each (each fills the bound of two
    # events, so none waits): the burst has left the last 16, and a lone write waits for no
    # other. The window is an hour: waiting for a second write would never end.
    harness = Harness(tmp_path / "payloads.db", commit_window_seconds=HOUR, max_batch_events=2)
    writer = harness.writer

    async def scenario() -> None:
        burst = [writer.write_events([event(f"b{i}")]) for i in range(2)]
        assert await harness.behind_a_held_commit(*burst) == [[True]] * 2
        for i in range(16):
            pair = [event(f"p{i}-a"), event(f"p{i}-b")]
            assert await harness.answers(writer.write_events(pair)) == [[True, True]]
        assert await harness.answers(writer.write_events([event("alone")])) == [[True]]

    harness.run(scenario)
    harness.store.close()
    assert harness.committed == [1, 2] + [2] * 16 + [1]


def test_without_a_window_a_write_never_waits_for_another(harness: Harness) -> None:
    writer = harness.writer

    async def scenario() -> None:
        writes = [writer.write_events([event(f"w{i}")]) for i in range(3)]
        assert await harness.behind_a_held_commit(*writes) == [[True]] * 3
        for name in "abc":
            assert await harness.answers(writer.write_events([event(name)])) == [[True]]

    harness.run(scenario)
    assert harness.committed == [1, 3, 1, 1, 1]


def test_labels_queued_with_their_request_are_committed_after_it(harness: Harness) -> None:
    writer = harness.writer

    async def scenario() -> None:
        results = await harness.behind_a_held_commit(
            writer.add_labels([("r1", 0, "positive"), ("r0", 0, "negative")]),
            writer.write_events([event("r1")]),
        )
        # The label came first but matches: events are written before labels.
        assert results == [1, [True]]

    harness.run(scenario)
    assert harness.committed == [1, 1]
    window = harness.store.fetch_window()
    assert window.set_index("event_id").loc["r1", "label"] == "positive"


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


def test_a_write_held_back_by_the_bound_still_counts_as_queued(tmp_path: Path) -> None:
    harness = Harness(tmp_path / "payloads.db", max_batch_events=3)
    writer = harness.writer
    in_commit, release = threading.Event(), threading.Event()
    write_events = harness.store.write_events

    def pause_in_the_next_commit(events: Any) -> list[bool]:
        if len(events) == 2:  # the commit after the blocker's
            in_commit.set()
            release.wait(WAIT_SECONDS)
        return write_events(events)

    harness.store.write_events = pause_in_the_next_commit  # type: ignore[method-assign]

    async def scenario() -> None:
        harness.store.hold.set()
        blocker = asyncio.ensure_future(writer.write_events([event("blocker")]))
        await harness.until(harness.store.at_gate.is_set, "the first commit reached the gate")
        pairs = [
            asyncio.ensure_future(writer.write_events([event(f"{n}-1"), event(f"{n}-2")]))
            for n in ("x", "y")
        ]
        await harness.until(lambda: writer.queued() == 2, "both writes queued")
        harness.store.hold.clear()
        harness.store.gate_open.set()
        # x is being committed; y, which did not fit the bound with it, waits in the writer.
        await harness.until(in_commit.is_set, "the next commit began")
        assert writer.queued() == 1
        release.set()
        assert await harness.answers(blocker, *pairs) == [[True], [True, True], [True, True]]

    harness.run(scenario)
    harness.store.close()
    assert harness.committed == [1, 2, 2]


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
