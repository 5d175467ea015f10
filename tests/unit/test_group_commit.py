"""The group-commit writer's batching: which writes share a commit, the bound on a commit's
events and what it holds back, the commit window, and labels after events.

Over the real SQLite store with a gate at its commit (`group_commit_harness`); each scenario
runs on an event loop of the test's own, as the collector's handlers do.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.collector_gate import WAIT_SECONDS
from tests.unit.group_commit_harness import HOUR, Harness, event, stored_ids


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    made = Harness(tmp_path / "payloads.db")
    yield made
    made.store.close()


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
