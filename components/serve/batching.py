"""Coalesce concurrent requests into ONNX Runtime calls that run off the event loop.

One consumer task per process takes the requests waiting when the previous call finishes and
runs them as one batch on a dedicated thread. Nothing waits for a batch to fill: a lone request
runs at once, and under load the batches grow by themselves while the previous call runs. One
call at a time also keeps ONNX Runtime's intra-op threads from competing with each other for
the cores; background work (explanations) gives way to these calls (`inference_gate`).

What one call costs is bounded, whatever the requests hold (their texts are already cut to
what the model reads, `TextModel.parse`):

- A batch pads every text to its longest, so a request joins a batch only while the batch's
  longest text stays within `WIDTH_RATIO` times its shortest (texts up to `NARROW_CHARS`
  characters count as that long): one long text among short ones would make the whole batch
  cost as many long texts (7x the batch's time, measured with all-MiniLM-L6-v2 at 128 tokens).
- A call holds at most `max_texts` texts and at most `max_texts * NARROW_CHARS` characters
  of padded text. A request with more runs in parts, one part per turn, between the other
  requests' batches, so that one big request cannot hold the model while others wait. Each
  request is still answered by one model version: its later parts run with the version its
  first part ran with.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from textops.components.serve.inference_gate import InferenceGate
from textops.components.serve.runtime import ClassifierRuntime

logger = logging.getLogger(__name__)

#: Texts up to this many characters count as this long when batches are formed: padding
#: short texts to each other costs little, and they batch together whatever their lengths.
NARROW_CHARS = 128
#: A batch's longest text is at most this many times as long as its shortest.
WIDTH_RATIO = 4


def text_width(texts: list[str]) -> int:
    """The characters a batch holding `texts` pads each text to (at least `NARROW_CHARS`)."""
    return max(NARROW_CHARS, max((len(text) for text in texts), default=0))


def texts_per_call(width: int, max_texts: int, max_chars: int | None = None) -> int:
    """How many texts of `width` characters one ONNX Runtime call may hold (at least one).

    Args:
        width: The longest text's characters.
        max_texts: Texts one call may hold.
        max_chars: Characters of padded text one call may hold; None: `max_texts` texts of
            `NARROW_CHARS` characters.
    """
    budget = max_texts * NARROW_CHARS if max_chars is None else max_chars
    return max(1, min(max_texts, budget // max(width, NARROW_CHARS)))


def shortest_first(texts: list[str]) -> list[int]:
    """The indices of `texts`, shortest text first (the order a request's parts run in)."""
    return sorted(range(len(texts)), key=lambda i: len(texts[i]))


def next_part(
    texts: list[str], order: list[int], start: int, max_texts: int, max_chars: int | None = None
) -> list[int]:
    """The indices of the texts one call runs next: `order[start:]`'s first ones, as many as
    one call may hold (`texts_per_call` of the widest of them)."""
    part: list[int] = []
    widest = NARROW_CHARS
    for i in order[start:]:
        widest = max(widest, len(texts[i]))
        if part and len(part) + 1 > texts_per_call(widest, max_texts, max_chars):
            break
        part.append(i)
    return part


@dataclass(frozen=True)
class BatchResult:
    """The probabilities of one request's texts and the runtime that computed them."""

    probabilities: np.ndarray
    runtime: ClassifierRuntime


@dataclass
class _Job:
    """One request's texts; a request too big for one call keeps its progress here."""

    texts: list[str]
    future: asyncio.Future[BatchResult] = field(repr=False)
    width: int = 0
    #: For a request run in parts: its texts' indices, shortest first, and what is done.
    order: list[int] | None = None
    done: int = 0
    parts: list[np.ndarray] = field(default_factory=list, repr=False)
    runtime: ClassifierRuntime | None = None

    def next_part(self, max_texts: int) -> list[int]:
        """The indices of the texts the next part runs (see `next_part`)."""
        if self.order is None:
            self.order = shortest_first(self.texts)
        return next_part(self.texts, self.order, self.done, max_texts)

    def probabilities(self) -> np.ndarray:
        """The parts' probabilities, back in request order."""
        assert self.order is not None
        rows = np.concatenate(self.parts)
        out = np.empty_like(rows)
        out[self.order] = rows
        return out


@dataclass
class _Call:
    """What one ONNX Runtime call runs: whole requests, or one part of one request."""

    jobs: list[_Job]
    texts: list[str]
    part: list[int] | None = None


class InferenceBatcher:
    """Queue of pending requests and the task that runs them in batches.

    Create it inside the running event loop of the process that serves (it owns asyncio
    objects and a thread), and `close()` it when done.
    """

    def __init__(
        self,
        current_runtime: Callable[[], ClassifierRuntime],
        *,
        max_texts: int,
        on_batch: Callable[[int], None] | None = None,
        gate: InferenceGate | None = None,
    ) -> None:
        """Set up the queue; the consumer task starts with the first request.

        Args:
            current_runtime: Returns the runtime to run the next batch with; called once per
                batch, so a swapped-in version serves from the next batch on.
            max_texts: Texts per ONNX Runtime call. A request with more (or with more
                characters than a call may hold) runs in parts.
            on_batch: Called with the number of texts of every call run (for metrics).
            gate: The process's ONNX Runtime gate, shared with background work; None runs
                calls without one.
        """
        self._current_runtime = current_runtime
        self._max_texts = max_texts
        self._on_batch = on_batch
        self._gate = gate
        self._pending: deque[_Job] = deque()
        self._running: list[_Job] = []
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="textops-ort")
        self._consumer: asyncio.Task[None] | None = None

    async def classify(self, texts: list[str]) -> BatchResult:
        """Probabilities of `texts`, computed in a batch with whatever else is waiting."""
        loop = asyncio.get_running_loop()
        job = _Job(texts, loop.create_future(), text_width(texts))
        if self._gate is not None:
            gate = self._gate
            gate.prediction_queued()
            job.future.add_done_callback(lambda _: gate.prediction_finished())
        self._pending.append(job)
        self._wakeup.set()
        if self._consumer is None or self._consumer.done():
            self._consumer = loop.create_task(self._consume(), name="textops-batcher")
        return await job.future

    def close(self, reason: Exception | None = None) -> None:
        """Stop the consumer task and the inference thread; waiting requests fail with `reason`.

        Args:
            reason: The error every request still waiting gets (default: a RuntimeError).
        """
        if self._consumer is not None:
            self._consumer.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
        error = reason or RuntimeError("the inference batcher was closed")
        for job in [*self._running, *self._pending]:
            if not job.future.done():
                job.future.set_exception(error)
        self._pending.clear()
        self._running = []

    def _fits_one_call(self, job: _Job) -> bool:
        return len(job.texts) <= texts_per_call(job.width, self._max_texts)

    def _take_call(self) -> _Call | None:
        """The next call: the oldest request, with the later ones that batch well with it."""
        while self._pending and self._pending[0].future.done():
            self._pending.popleft()  # its client gave up (a cancelled future)
        if not self._pending:
            return None
        head = self._pending.popleft()
        if head.order is not None or not self._fits_one_call(head):
            part = head.next_part(self._max_texts)
            return _Call([head], [head.texts[i] for i in part], part)
        jobs, skipped = [head], []
        narrowest = widest = head.width
        count = len(head.texts)
        while self._pending and count < self._max_texts:
            job = self._pending.popleft()
            low, high = min(narrowest, job.width), max(widest, job.width)
            if (
                job.order is None
                and not job.future.done()
                and high <= WIDTH_RATIO * low
                and count + len(job.texts) <= texts_per_call(high, self._max_texts)
            ):
                jobs.append(job)
                narrowest, widest, count = low, high, count + len(job.texts)
            elif not job.future.done():
                skipped.append(job)
        self._pending.extendleft(reversed(skipped))
        return _Call(jobs, [text for job in jobs for text in job.texts])

    async def _consume(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            call = self._take_call()
            if call is None:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            runtime = call.jobs[0].runtime or self._current_runtime()
            self._running = call.jobs
            try:
                run = functools.partial(runtime.predict_proba, call.texts, self._max_texts)
                if self._gate is not None:
                    run = functools.partial(self._gate.run_prediction, run)
                probabilities = await loop.run_in_executor(self._executor, run)
            except Exception as e:  # handed to every waiting request, which answers 500
                logger.exception(
                    "inference failed: texts=%d version=%s", len(call.texts), runtime.version
                )
                self._running = []
                for job in call.jobs:
                    if not job.future.done():
                        job.future.set_exception(e)
                continue
            self._running = []
            if self._on_batch is not None:
                self._on_batch(len(call.texts))
            if call.part is not None:
                self._part_done(call.jobs[0], call.part, probabilities, runtime)
                continue
            start = 0
            for job in call.jobs:
                end = start + len(job.texts)
                if not job.future.done():
                    job.future.set_result(BatchResult(probabilities[start:end], runtime))
                start = end

    def _part_done(
        self, job: _Job, part: list[int], probabilities: np.ndarray, runtime: ClassifierRuntime
    ) -> None:
        """Keep a part's probabilities; answer the request after its last part, or queue it
        behind the requests that came meanwhile."""
        if job.future.done():
            return
        job.runtime = runtime
        job.parts.append(probabilities)
        job.done += len(part)
        if job.done < len(job.texts):
            self._pending.append(job)
        else:
            job.future.set_result(BatchResult(job.probabilities(), runtime))
