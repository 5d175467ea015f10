"""The group-commit writer under test: a started writer over the gated SQLite store.

While the gate (`collector_gate`) holds the first commit, the writes that follow queue up;
opening it shows which of them the writer takes into the next commit, so batching is decided
by the order of events, never by timing. A writer thread that dies leaves its writes
unanswered for ever, so every wait here fails as soon as the thread is gone instead of
waiting it out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tests.unit.collector_gate import WAIT_SECONDS, GatedStore
from textops.components.monitor.group_commit import GroupCommitWriter
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


def stored_ids(harness: Harness) -> set[str]:
    return set(harness.store.fetch_window()["event_id"])
