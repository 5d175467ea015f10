"""CloudEvents of every inference request and response, as KServe's agent logger sends them.

In a cluster KServe's agent (the `spec.predictor.logger` sidecar) sends these; on one machine
`--payload-logger-url` makes the predictor send the very same events itself. As in the agent
(kserve/kserve pkg/logger): binary content mode, `Ce-Id` shared by a request and its response
(the client's `Ce-Id` header, else its `X-Request-Id`, else a new uuid4), `Ce-Type`
`org.kubeflow.serving.inference.request` / `...response`, the extension attributes
`inferenceservicename`, `namespace`, `component`, `endpoint` and `metadata`, the request's
Content-Type, and the raw bytes as the body. The request event is sent for every request, the
response event only for status 200.

Sending never delays or fails an inference: events go into a bounded queue that a background
task drains; when the queue is full the event is dropped and counted
(`textops_payload_events_dropped_total{reason="queue_full"}`), as are events the collector
could not be reached for (`send_failed`) or answered with an error (`rejected`).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime

import httpx

from textops.components.serve import metrics
from textops.components.serve.settings import PayloadLoggerSettings

logger = logging.getLogger(__name__)

REQUEST_EVENT = "org.kubeflow.serving.inference.request"
RESPONSE_EVENT = "org.kubeflow.serving.inference.response"
#: Concurrent POSTs to the collector.
SENDERS = 4


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


class PayloadLogger:
    """A bounded queue of CloudEvents and the tasks that POST them to the collector.

    The tasks start with the first event, in the event loop of the process that serves.
    """

    def __init__(self, settings: PayloadLoggerSettings, model_name: str) -> None:
        self.settings = settings
        self.model_name = model_name
        self._queue: asyncio.Queue[tuple[dict[str, str], bytes, str]] | None = None
        self._senders: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None
        self._failing = False

    def log_request(self, event_id: str, body: bytes, content_type: str) -> None:
        """Queue the request event (never blocks)."""
        self._enqueue(REQUEST_EVENT, event_id, body, content_type)

    def log_response(self, event_id: str, body: bytes, content_type: str) -> None:
        """Queue the response event (never blocks)."""
        self._enqueue(RESPONSE_EVENT, event_id, body, content_type)

    async def aclose(self) -> None:
        """Stop the senders; events still queued are not sent."""
        for task in self._senders:
            task.cancel()
        self._senders.clear()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _enqueue(self, event_type: str, event_id: str, body: bytes, content_type: str) -> None:
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
        try:
            self._queue.put_nowait((headers, body, kind))
        except asyncio.QueueFull:
            metrics.PAYLOAD_EVENTS_DROPPED.labels(self.model_name, "queue_full").inc()

    def _start(self) -> None:
        self._queue = asyncio.Queue(maxsize=self.settings.queue_size)
        self._client = httpx.AsyncClient(timeout=self.settings.timeout_seconds)
        loop = asyncio.get_running_loop()
        self._senders = [
            loop.create_task(self._send_forever(), name=f"textops-payload-logger-{i}")
            for i in range(SENDERS)
        ]

    async def _send_forever(self) -> None:
        assert self._queue is not None and self._client is not None
        while True:
            headers, body, kind = await self._queue.get()
            try:
                response = await self._client.post(self.settings.url, content=body, headers=headers)
            except httpx.HTTPError as e:
                self._failed("send_failed", repr(e))
                continue
            if response.is_success:
                metrics.PAYLOAD_EVENTS_SENT.labels(self.model_name, kind).inc()
                if self._failing:
                    self._failing = False
                    logger.info("payload events delivered again: url=%s", self.settings.url)
            else:
                self._failed("rejected", f"status {response.status_code}")

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
