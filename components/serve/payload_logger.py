"""CloudEvents of every inference request and response, as KServe's agent logger sends them.

In a cluster KServe's agent (the `spec.predictor.logger` sidecar) sends these; on one machine
`--payload-logger-url` makes the predictor send the very same events itself. As in the agent
(kserve/kserve pkg/logger): binary content mode, `Ce-Id` shared by a request and its response
(the client's `Ce-Id` header, else its `X-Request-Id`, else a new uuid4), `Ce-Type`
`org.kubeflow.serving.inference.request` / `...response`, the extension attributes
`inferenceservicename`, `namespace`, `component`, `endpoint` and `metadata`, the request's
Content-Type, and the raw bytes as the body. The request event is sent for every request, the
response event only for status 200.

Sending never delays or fails an inference: events go into a bounded queue that background
tasks drain. A request and its response are kept or dropped together: when a request
arrives, it is admitted only if the queue has room for both its events, and that room is held
until its response is queued (or, for an answer other than 200, freed). A full queue
(`--payload-logger-queue-size` requests) therefore drops whole requests, never one half of a
pair that drift detection could not join; each event dropped is counted in
`textops_payload_events_dropped_total{reason="queue_full"}`, as are events the collector could
not be reached for (`send_failed`) or answered with an error (`rejected`).

The headers are written here rather than by the CloudEvents SDK's `to_binary`, which gives the
same event (tests/unit/test_payload_logger.py reads ours with the SDK's `from_http`) at ten
times the cost on the serving event loop (34 us against 3 us per event) and with lower-case
header names where the agent writes `Ce-Id`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime

import aiohttp

from textops.components.common.errors import ConfigError
from textops.components.serve import metrics
from textops.components.serve.settings import PayloadLoggerSettings

logger = logging.getLogger(__name__)

REQUEST_EVENT = "org.kubeflow.serving.inference.request"
RESPONSE_EVENT = "org.kubeflow.serving.inference.response"
#: Concurrent POSTs to the collector. The collector answers each event once it is committed
#: (a disk flush, several milliseconds), so the senders' rate is about SENDERS / that latency:
#: 16 keep up with a predictor answering several hundred requests a second (docs/benchmarks.md).
#: They share the serving process's event loop, hence aiohttp (KServe's own dependency): a POST
#: costs the loop a tenth of the CPU time it costs with httpx.
SENDERS = 16

_Event = tuple[dict[str, str], bytes, str]  # (headers, body, "request" or "response")


def event_id(headers: Mapping[str, str]) -> str:
    """The id a request's two events share (headers with lower-case names)."""
    return headers.get("ce-id") or headers.get("x-request-id") or str(uuid.uuid4())


def cloudevent_headers(
    settings: PayloadLoggerSettings,
    *,
    model_name: str,
    event_type: str,
    event_id: str,
    content_type: str,
    time: datetime | None = None,
) -> dict[str, str]:
    """The HTTP headers of one binary-mode CloudEvent, named as KServe's agent names them."""
    stamp = (time or datetime.now(UTC)).astimezone(UTC)
    return {
        "Ce-Specversion": "1.0",
        "Ce-Id": event_id,
        "Ce-Type": event_type,
        "Ce-Source": settings.source,
        "Ce-Time": stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "Ce-Inferenceservicename": model_name,
        "Ce-Namespace": settings.namespace,
        "Ce-Component": settings.component,
        "Ce-Endpoint": settings.endpoint,
        "Ce-Metadata": "{}",
        "Content-Type": content_type or "application/json",
    }


class LoggedRequest:
    """One request's place in the payload logger: admitted (its request event queued, room for
    its response held) or dropped (neither event is sent). `respond` settles it."""

    def __init__(self, payload_logger: PayloadLogger, event_id: str, admitted: bool) -> None:
        self.event_id = event_id
        self.admitted = admitted
        self._logger = payload_logger
        self._settled = False

    def respond(self, body: bytes | None, content_type: str) -> None:
        """Queue the response event into the room held for it (never blocks).

        Args:
            body: The 200 response's body; None when there is no response event to send (an
                error status, an exception, a client gone), which frees the room.
            content_type: The request's Content-Type, which the event carries.
        """
        if self._settled:
            return
        self._settled = True
        self._logger._respond(self, body, content_type)


class PayloadLogger:
    """A bounded queue of CloudEvents and the tasks that POST them to the collector.

    The tasks start with the first event, in the event loop of the process that serves.

    Raises:
        ConfigError: The queue size is less than 1.
    """

    def __init__(self, settings: PayloadLoggerSettings, model_name: str) -> None:
        if settings.queue_size < 1:
            raise ConfigError(
                f"--payload-logger-queue-size must be at least 1, not {settings.queue_size}"
            )
        self.settings = settings
        self.model_name = model_name
        self._queue: asyncio.Queue[_Event] | None = None
        # Events queued plus responses whose room is held: at most two per admitted request.
        self._slots_used = 0
        self._senders: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._failing = False
        self._dropping = False

    @property
    def capacity(self) -> int:
        """Events the queue holds at most: a request and its response for each of queue_size."""
        return 2 * self.settings.queue_size

    def log_request(self, event_id: str, body: bytes, content_type: str) -> LoggedRequest:
        """Admit the request with room for its response, or drop both (never blocks).

        Returns:
            The request's place; call its `respond` once the answer is known.
        """
        if self._slots_used + 2 > self.capacity:
            self._dropped_pair()
            return LoggedRequest(self, event_id, admitted=False)
        if self._dropping:
            self._dropping = False
            logger.info("payload logger queue has room again: requests are logged again")
        self._slots_used += 2
        self._put(REQUEST_EVENT, event_id, body, content_type)
        return LoggedRequest(self, event_id, admitted=True)

    async def aclose(self) -> None:
        """Stop the senders; events still queued are not sent."""
        for task in self._senders:
            task.cancel()
        self._senders.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _respond(self, request: LoggedRequest, body: bytes | None, content_type: str) -> None:
        if not request.admitted:
            if body is not None:  # the response event that would have been sent
                metrics.PAYLOAD_EVENTS_DROPPED.labels(self.model_name, "queue_full").inc()
            return
        if body is None:
            self._slots_used -= 1  # no response event: its room is free again
            return
        self._put(RESPONSE_EVENT, request.event_id, body, content_type)

    def _put(self, event_type: str, event_id: str, body: bytes, content_type: str) -> None:
        """Queue an event into room already counted in `_slots_used`."""
        if self._queue is None:
            self._start()
        assert self._queue is not None
        headers = cloudevent_headers(
            self.settings,
            model_name=self.model_name,
            event_type=event_type,
            event_id=event_id,
            content_type=content_type,
        )
        kind = "request" if event_type == REQUEST_EVENT else "response"
        self._queue.put_nowait((headers, body, kind))

    def _dropped_pair(self) -> None:
        metrics.PAYLOAD_EVENTS_DROPPED.labels(self.model_name, "queue_full").inc()
        if not self._dropping:  # one line when drops start, not one per request
            self._dropping = True
            logger.warning(
                "payload logger queue full: requests are dropped with their responses "
                "queue_size=%d url=%s",
                self.settings.queue_size,
                self.settings.url,
            )

    def _start(self) -> None:
        # Unbounded: admission in log_request bounds what it holds.
        self._queue = asyncio.Queue()
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=SENDERS),
            timeout=aiohttp.ClientTimeout(total=self.settings.timeout_seconds),
        )
        loop = asyncio.get_running_loop()
        self._senders = [
            loop.create_task(self._send_forever(), name=f"textops-payload-logger-{i}")
            for i in range(SENDERS)
        ]

    async def _send_forever(self) -> None:
        assert self._queue is not None and self._session is not None
        while True:
            headers, body, kind = await self._queue.get()
            self._slots_used -= 1  # taken out of the queue: its room is free again
            try:
                async with self._session.post(
                    self.settings.url, data=body, headers=headers
                ) as response:
                    await response.read()  # the whole answer, so the connection is reused
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as e:
                self._failed("send_failed", repr(e))
                continue
            if 200 <= status < 300:
                metrics.PAYLOAD_EVENTS_SENT.labels(self.model_name, kind).inc()
                if self._failing:
                    self._failing = False
                    logger.info("payload events delivered again: url=%s", self.settings.url)
            else:
                self._failed("rejected", f"status {status}")

    def _failed(self, reason: str, detail: str) -> None:
        metrics.PAYLOAD_EVENTS_DROPPED.labels(self.model_name, reason).inc()
        if not self._failing:  # one line when delivery starts failing, not one per event
            self._failing = True
            logger.warning(
                "payload events not delivered: url=%s reason=%s detail=%s",
                self.settings.url,
                reason,
                detail,
            )
