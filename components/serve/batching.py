"""Coalesce concurrent requests into ONNX Runtime calls that run off the event loop.

One consumer task per process takes every request waiting when the previous call finishes
(up to `max_texts` texts) and runs them as one batch on a dedicated thread. Nothing waits for
a batch to fill: a lone request runs at once, and under load the batches grow by themselves
while the previous call runs. One call at a time also keeps ONNX Runtime's intra-op threads
from competing with each other for the cores.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from textops.components.serve.runtime import ClassifierRuntime

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchResult:
    """The probabilities of one request's texts and the runtime that computed them."""

    probabilities: np.ndarray
    runtime: ClassifierRuntime


@dataclass
class _Job:
    texts: list[str]
    future: asyncio.Future[BatchResult] = field(repr=False)


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
    ) -> None:
        """Set up the queue; the consumer task starts with the first request.

        Args:
            current_runtime: Returns the runtime to run the next batch with; called once per
                batch, so a swapped-in version serves from the next batch on.
            max_texts: Texts per ONNX Runtime call. A request with more is run alone, in
                chunks of this size.
            on_batch: Called with the number of texts of every batch run (for metrics).
        """
        self._current_runtime = current_runtime
        self._max_texts = max_texts
        self._on_batch = on_batch
        self._pending: deque[_Job] = deque()
        self._running: list[_Job] = []
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="textops-ort")
        self._consumer: asyncio.Task[None] | None = None

    async def classify(self, texts: list[str]) -> BatchResult:
        """Probabilities of `texts`, computed in a batch with whatever else is waiting."""
        loop = asyncio.get_running_loop()
        job = _Job(texts, loop.create_future())
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

    def _take_batch(self) -> list[_Job]:
        batch = [self._pending.popleft()]
        size = len(batch[0].texts)
        while self._pending and size + len(self._pending[0].texts) <= self._max_texts:
            job = self._pending.popleft()
            batch.append(job)
            size += len(job.texts)
        return batch

    async def _consume(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = [job for job in self._take_batch() if not job.future.done()]
            if not batch:
                continue  # every client in it gave up (cancelled futures)
            runtime = self._current_runtime()
            texts = [text for job in batch for text in job.texts]
            self._running = batch
            try:
                probabilities = await loop.run_in_executor(
                    self._executor, runtime.predict_proba, texts, self._max_texts
                )
            except Exception as e:  # handed to every waiting request, which answers 500
                logger.exception(
                    "inference failed: texts=%d version=%s", len(texts), runtime.version
                )
                self._running = []
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(e)
                continue
            if self._on_batch is not None:
                self._on_batch(len(texts))
            self._running = []
            start = 0
            for job in batch:
                end = start + len(job.texts)
                if not job.future.done():
                    job.future.set_result(BatchResult(probabilities[start:end], runtime))
                start = end
