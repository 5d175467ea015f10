"""Group commit: the writes of concurrent requests share one transaction and one disk flush.

The collector answers an event only after it is committed. One transaction per event would
cost one flush to disk each; here a single writer thread owns the store and takes every write
queued while the previous commit was flushing, writes them all in one transaction, commits,
and only then resolves each waiting request. Under load, batches grow by themselves; with one
request at a time, each is committed alone, with no timer adding delay.

`max_batch_events` (the collector's `--max-commit-batch`) bounds how many queued events one
commit takes: writes that do not fit wait, in order, for the next commit. A smaller bound makes
each commit shorter, so a write waits less for the commit it joins, at the price of more
transactions (and disk flushes) under load; 1 commits every event alone, which is the
collector without group commit. One request's events are never split: a request with more
events than the bound is committed alone.

Senders of one event per request (KServe's logger) come back as soon as they are answered, so
a commit that starts with the first of them to return splits them into two alternating groups.
`commit_window_seconds` (`--commit-window-ms`, off by default) lets a commit wait for them:
once the last batches held several writes, the next commit waits until it holds as many as the
largest of the last 16 batches, or until the window has passed. A lone sender is never kept
waiting: its batches hold one write. docs/benchmarks.md has what this gives.

No write fails because of another. The collector makes every value storable before a write
is queued (`events.py`, `storable.py`); should a shared transaction still fail on the values
of one write (`UnstorableDataError`, or an error the store did not classify), the writer
commits the batch's writes again one at a time, each in its own transaction, and only the
write at fault gets the error. An error of the store itself (a full disk, a lost connection)
is answered to every write of the batch at once: committing them one by one would fail the
same way, only slower.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from textops.components.common.errors import PayloadStoreError
from textops.components.monitor.storable import UnstorableDataError
from textops.components.monitor.store import PayloadEvent, PayloadStore

logger = logging.getLogger(__name__)

#: Most events written in one transaction unless the writer is given another bound.
MAX_BATCH_EVENTS = 2048
#: Batches whose sizes say how many writes a commit window waits for (the largest of them).
_RECENT_BATCHES = 16


@dataclass
class _Write:
    """One request's events (or labels), and the future its handler awaits."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    events: Sequence[PayloadEvent] = ()
    labels: Sequence[tuple[str, int, str]] | None = None


_STOP = object()


class GroupCommitWriter:
    """The only writer of a store: batches concurrent writes into shared transactions.

    Args:
        store: The store; the writer's thread uses it alone while the writer runs.
        on_batch: Called in the writer's thread after each committed batch of events with the
            number of events in it (for metrics).
        max_batch_events: Most queued events one transaction takes (see the module's
            docstring); 1 gives one transaction per event.
        commit_window_seconds: Longest a commit waits for the writes of concurrent senders
            (see the module's docstring); 0 never waits.

    Raises:
        ValueError: `max_batch_events` is less than 1, or `commit_window_seconds` below 0.
    """

    def __init__(
        self,
        store: PayloadStore,
        on_batch: Callable[[int], None] | None = None,
        max_batch_events: int = MAX_BATCH_EVENTS,
        commit_window_seconds: float = 0.0,
    ) -> None:
        if max_batch_events < 1:
            raise ValueError(f"max_batch_events must be 1 or more, not {max_batch_events}")
        if commit_window_seconds < 0:
            raise ValueError(
                f"commit_window_seconds must be 0 or more, not {commit_window_seconds}"
            )
        self.store = store
        self.max_batch_events = max_batch_events
        self.commit_window_seconds = commit_window_seconds
        # Writes in each of the last batches: how many concurrent senders to wait for.
        self._recent_writes: deque[int] = deque(maxlen=_RECENT_BATCHES)
        self._on_batch = on_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # A write taken from the queue that did not fit in the last batch: the next one's first.
        self._held: Any = None
        self._thread = threading.Thread(target=self._run, name="payload-store-writer", daemon=True)
        self.batches = 0

    def start(self) -> None:
        """Start the writer thread."""
        self._thread.start()

    def stop(self) -> None:
        """Commit what is queued, then end the writer thread."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()

    def queued(self) -> int:
        """Writes waiting for a commit that has not begun."""
        return self._queue.qsize() + (self._held is not None)

    @property
    def alive(self) -> bool:
        """Whether the writer thread is running."""
        return self._thread.is_alive()

    async def write_events(self, events: Sequence[PayloadEvent]) -> list[bool]:
        """Write `events`; returns once they are committed (see `PayloadStore.write_events`).

        Raises:
            PayloadStoreError: The transaction holding them failed.
        """
        loop = asyncio.get_running_loop()
        write = _Write(loop, loop.create_future(), events=events)
        self._submit(write)
        return list(await write.future)

    async def add_labels(self, labels: Sequence[tuple[str, int, str]]) -> int:
        """Record ground truth; returns once committed (see `PayloadStore.add_labels`)."""
        loop = asyncio.get_running_loop()
        write = _Write(loop, loop.create_future(), labels=labels)
        self._submit(write)
        return int(await write.future)

    def _submit(self, write: _Write) -> None:
        if not self._thread.is_alive():
            raise PayloadStoreError("the payload store writer is not running")
        self._queue.put(write)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            pending = self._next_batch()
            stopping = any(item is _STOP for item in pending)
            writes = [item for item in pending if item is not _STOP]
            self._commit_events([w for w in writes if w.labels is None])
            for write in writes:
                if write.labels is not None:
                    self._commit_labels(write)

    def _next_batch(self) -> list[Any]:
        """The oldest queued write, then those queued after it while they fit the bound."""
        if self._held is not None:
            pending, self._held = [self._held], None
        else:
            pending = [self._queue.get()]
        count = _event_count(pending[0])
        # Senders of one event each come back as soon as they are answered: once the last
        # batches held several writes, wait (up to the window) until as many are in hand.
        expected = max(self._recent_writes, default=1) if self.commit_window_seconds else 1
        deadline = time.monotonic() + self.commit_window_seconds
        # What queued up during the last commit joins this batch, in order, up to the bound;
        # nothing queued after stop()'s marker is taken.
        while count < self.max_batch_events and pending[-1] is not _STOP:
            try:
                item = self._take(deadline if len(pending) < expected else None)
            except queue.Empty:
                break
            if count + _event_count(item) > self.max_batch_events:
                self._held = item
                break
            pending.append(item)
            count += _event_count(item)
        self._recent_writes.append(len(pending))
        return pending

    def _take(self, deadline: float | None) -> Any:
        """The next queued item; by `deadline` (monotonic time), or at once when None."""
        remaining = 0.0 if deadline is None else deadline - time.monotonic()
        if remaining <= 0:
            return self._queue.get_nowait()
        return self._queue.get(timeout=remaining)

    def _commit_events(self, writes: list[_Write]) -> None:
        if not writes:
            return
        events = [event for write in writes for event in write.events]
        try:
            flags = self.store.write_events(events)
        except Exception as e:  # every waiting request is answered, whatever failed
            if len(writes) > 1 and _may_be_one_writes_fault(e):
                logger.warning(
                    "shared commit failed; committing its writes one at a time writes=%d error=%s",
                    len(writes),
                    type(e).__name__,
                )
                for write in writes:
                    self._commit_events([write])
                return
            if not isinstance(e, PayloadStoreError):
                logger.error("store write failed error=%s", type(e).__name__, exc_info=e)
            for write in writes:
                _settle(write, error=e)
            return
        self.batches += 1
        if self._on_batch is not None:
            self._on_batch(len(events))
        start = 0
        for write in writes:
            _settle(write, result=flags[start : start + len(write.events)])
            start += len(write.events)

    def _commit_labels(self, write: _Write) -> None:
        try:
            matched = self.store.add_labels(write.labels or ())
        except Exception as e:  # answered to the waiting request
            _settle(write, error=e)
        else:
            _settle(write, result=matched)


def _may_be_one_writes_fault(error: Exception) -> bool:
    """Whether a shared transaction may have failed on one write's values, not on the store."""
    return isinstance(error, UnstorableDataError) or not isinstance(error, PayloadStoreError)


def _event_count(item: Any) -> int:
    """Events in a queued item (labels and the stop marker hold none)."""
    return len(item.events) if isinstance(item, _Write) else 0


def _settle(write: _Write, *, result: Any = None, error: BaseException | None = None) -> None:
    """Resolve the write's future from the writer thread, on the future's own event loop."""

    def settle() -> None:
        if write.future.done():  # the request was cancelled (the client went away)
            return
        if error is not None:
            write.future.set_exception(error)
        else:
            write.future.set_result(result)

    try:
        write.loop.call_soon_threadsafe(settle)
    except RuntimeError:
        # The event loop has closed: nobody waits for this answer any more.
        logger.warning("store write finished after its event loop closed")
