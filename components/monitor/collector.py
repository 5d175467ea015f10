"""The payload collector: an HTTP sink for the CloudEvents of KServe's payload logger.

    python -m textops.components.monitor.collector --store sqlite:///payloads.db --port 8088

Routes: `POST /events` and `POST /` (CloudEvents, see `events.py`), `POST /labels` (ground
truth, a JSON list of `{"id": <Ce-Id>, "item": 0, "label": "..."}`), `GET /healthz` and
`GET /metrics` (Prometheus). An event is answered 200 only once it is committed to the store;
the writes of concurrent requests are committed together (`group_commit.py`), and no event
fails because of another's values. Malformed events get 400 with the reason, as do events whose
values the store cannot hold (`unstorable`, which validation should leave to no event), bodies
over the size limit 413, and a store that fails 503, so the sender may retry. Every refusal is
counted in `textops_collector_events_rejected_total{reason}` and logged in one line. Texts are
redacted before they are stored; what was redacted is counted in
`textops_collector_redactions_total{kind}` and never logged; values made storable (`storable.py`)
are counted in `textops_collector_values_normalized_total{reason}`.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client import Histogram as PromHistogram
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from textops.components.common.errors import (
    DataError,
    EventFormatError,
    PayloadStoreError,
    TextopsError,
)
from textops.components.common.redaction import KINDS
from textops.components.common.traffic import DEFAULT_MAX_BODY_BYTES
from textops.components.monitor.collector_cli import DEFAULT_COMMIT_WINDOW_MS, add_collect_arguments
from textops.components.monitor.events import ReadEvent, parse_cloudevents, to_payload_event
from textops.components.monitor.group_commit import MAX_BATCH_EVENTS, GroupCommitWriter
from textops.components.monitor.labels import label_rows
from textops.components.monitor.storable import NORMALIZATION_REASONS, UnstorableDataError
from textops.components.monitor.store import PayloadStore, mask_url, open_store

logger = logging.getLogger(__name__)

#: Reasons an event is rejected, the `reason` label of the rejected counter: malformed (400),
#: unstorable (400: values the store refused), too_large (413), store_unavailable (503) and
#: internal_error (500, a fault of the collector; its log line has the traceback).
REJECT_REASONS = ("malformed", "unstorable", "too_large", "store_unavailable", "internal_error")


class CollectorMetrics:
    """The collector's Prometheus metrics, in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.received = Counter(
            "textops_collector_events_received_total",
            "CloudEvents received, stored or not",
            registry=self.registry,
        )
        self.stored = Counter(
            "textops_collector_events_stored_total",
            "Events committed to the payload store",
            registry=self.registry,
        )
        self.duplicates = Counter(
            "textops_collector_events_duplicate_total",
            "Events answered 200 but not stored again: their Ce-Id and type were stored before",
            registry=self.registry,
        )
        self.rejected = Counter(
            "textops_collector_events_rejected_total",
            "Events refused: malformed (400), unstorable (400), too_large (413), "
            "store_unavailable (503), internal_error (500)",
            ["reason"],
            registry=self.registry,
        )
        self.normalized = Counter(
            "textops_collector_values_normalized_total",
            "Values stored changed so the store can hold them: texts or labels with a "
            "lone_surrogate or a nul (replaced by U+FFFD), a non_finite_confidence (unknown)",
            ["reason"],
            registry=self.registry,
        )
        self.redactions = Counter(
            "textops_collector_redactions_total",
            "Pieces of personal data replaced before storing, by kind",
            ["kind"],
            registry=self.registry,
        )
        self.labels = Counter(
            "textops_collector_labels_total",
            "Ground-truth labels recorded",
            registry=self.registry,
        )
        self.batch = PromHistogram(
            "textops_collector_commit_batch_events",
            "Events committed per store transaction",
            buckets=[2**i for i in range(MAX_BATCH_EVENTS.bit_length())],
            registry=self.registry,
        )
        # Every series exists from the start, so dashboards and alerts see zeros, not gaps.
        for reason in REJECT_REASONS:
            self.rejected.labels(reason)
        for reason in NORMALIZATION_REASONS:
            self.normalized.labels(reason)
        for kind in KINDS:
            self.redactions.labels(kind)


class _BodyTooLarge(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


def _json(content: Any, status: int = 200) -> Response:
    return Response(json.dumps(content), status_code=status, media_type="application/json")


class Collector:
    """The route handlers, over one group-commit writer and one set of metrics."""

    def __init__(
        self, writer: GroupCommitWriter, metrics: CollectorMetrics, max_body_bytes: int
    ) -> None:
        self.writer = writer
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def events(self, request: Request) -> Response:
        """Store the CloudEvents of one request; 200 once they are committed."""
        try:
            return await self._store_events(request)
        except Exception:  # a fault of the collector: answered, counted and logged all the same
            logger.exception("event rejected status=500 reason=internal_error")
            self.metrics.rejected.labels("internal_error").inc()
            return _json({"error": "the collector failed on this event; see its log"}, 500)

    async def _store_events(self, request: Request) -> Response:
        received_at = time.time()
        try:
            body = await self._body(request)
        except _BodyTooLarge as e:
            self.metrics.received.inc()
            return self._reject(413, "too_large", self._too_large_message(e.size))
        try:
            read = [
                to_payload_event(event, received_at)
                for event in parse_cloudevents(request.headers, body)
            ]
        except EventFormatError as e:
            self.metrics.received.inc()
            return self._reject(400, "malformed", str(e))
        self.metrics.received.inc(len(read))
        events = [one.event for one in read]
        try:
            new = await self.writer.write_events(events)
        except UnstorableDataError as e:
            return self._reject(
                400,
                "unstorable",
                f"the payload store cannot hold this request's events ({e}); they are not "
                "stored, and sending them again will fail again",
                count=len(events),
            )
        except PayloadStoreError as e:
            self.metrics.rejected.labels("store_unavailable").inc(len(events))
            logger.error(
                "events not stored reason=store_unavailable count=%d error=%s", len(events), e
            )
            return _json({"error": "the payload store is unavailable; send the event again"}, 503)
        self._count_stored(read, new)
        stored = sum(new)
        return _json({"stored": stored, "duplicates": len(events) - stored})

    def _count_stored(self, read: list[ReadEvent], new: list[bool]) -> None:
        """Count what was stored; a duplicate's redactions and normalizations were counted."""
        for one, is_new in zip(read, new, strict=True):
            if is_new:
                for kind, count in one.redactions.items():
                    self.metrics.redactions.labels(kind).inc(count)
                for reason, count in one.normalized.items():
                    self.metrics.normalized.labels(reason).inc(count)
        self.metrics.stored.inc(sum(new))
        self.metrics.duplicates.inc(len(new) - sum(new))

    async def labels(self, request: Request) -> Response:
        """Record ground truth: a JSON list of `{"id": ..., "item": 0, "label": ...}`."""
        try:
            body = await self._body(request)
        except _BodyTooLarge as e:
            return _json({"error": self._too_large_message(e.size)}, 413)
        try:
            records = json.loads(body)
            if not isinstance(records, list):
                raise DataError(
                    'labels must be a JSON list of {"id": <Ce-Id>, "item": 0, "label": "..."}'
                )
            rows = label_rows(records, "the labels")
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            return _json({"error": f"the labels are not valid JSON: {e}"}, 400)
        except DataError as e:
            return _json({"error": str(e)}, 400)
        try:
            matched = await self.writer.add_labels(rows)
        except UnstorableDataError as e:
            return _json({"error": str(e)}, 400)
        except PayloadStoreError as e:
            logger.error("labels not stored count=%d error=%s", len(rows), e)
            return _json({"error": "the payload store is unavailable; send the labels again"}, 503)
        self.metrics.labels.inc(len(rows))
        logger.info("labels stored count=%d matched=%d", len(rows), matched)
        return _json({"labels": len(rows), "matched": matched})

    async def healthz(self, request: Request) -> Response:
        """200 while the store writer runs, 503 once it has stopped."""
        if self.writer.alive:
            return _json({"status": "ok"})
        return _json({"status": "the payload store writer has stopped"}, 503)

    async def prometheus(self, request: Request) -> Response:
        """The metrics in Prometheus' text format."""
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def _body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            raise _BodyTooLarge(int(declared))
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.max_body_bytes:
                raise _BodyTooLarge(len(body))
        return bytes(body)

    def _too_large_message(self, size: int) -> str:
        return (
            f"the body has at least {size} bytes; the collector accepts at most "
            f"{self.max_body_bytes} (--max-body-bytes)"
        )

    def _reject(self, status: int, reason: str, message: str, count: int = 1) -> Response:
        self.metrics.rejected.labels(reason).inc(count)
        # Messages name fields and positions, never payload values: safe to log.
        logger.warning("event rejected status=%d reason=%s error=%s", status, reason, message)
        return _json({"error": message}, status)


def create_app(
    store: PayloadStore,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_commit_batch: int | None = None,
    commit_window_ms: float = DEFAULT_COMMIT_WINDOW_MS,
    metrics: CollectorMetrics | None = None,
) -> Starlette:
    """The collector as an ASGI app; it owns `store`, which it closes when it shuts down.

    The store's writer thread runs between the app's startup and shutdown (its lifespan).
    `max_commit_batch` bounds the events one store transaction takes (None: the writer's
    default, `MAX_BATCH_EVENTS`; 1: one transaction per event). `commit_window_ms` is how long
    a commit waits for more writes once concurrent senders were seen (see `group_commit.py`).
    """
    metrics = metrics or CollectorMetrics()
    writer = GroupCommitWriter(
        store,
        on_batch=metrics.batch.observe,
        max_batch_events=MAX_BATCH_EVENTS if max_commit_batch is None else max_commit_batch,
        commit_window_seconds=commit_window_ms / 1000,
    )
    collector = Collector(writer, metrics, max_body_bytes)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        writer.start()
        try:
            yield
        finally:
            writer.stop()
            store.close()
            logger.info("collector stopped; every acknowledged event is committed")

    app = Starlette(
        routes=[
            Route("/events", collector.events, methods=["POST"]),
            Route("/", collector.events, methods=["POST"]),
            Route("/labels", collector.labels, methods=["POST"]),
            Route("/healthz", collector.healthz, methods=["GET"]),
            Route("/metrics", collector.prometheus, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.collector = collector
    return app


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: a free port, read it from the socket)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise TextopsError(f"cannot listen on {host}:{port}: {e}; choose another --port") from e
    sock.listen(2048)
    return sock


def serve(
    store_url: str,
    *,
    host: str,
    port: int,
    max_body_bytes: int,
    max_commit_batch: int | None = None,
    commit_window_ms: float = DEFAULT_COMMIT_WINDOW_MS,
) -> None:
    """Run the collector until SIGINT or SIGTERM; in-flight events are committed first.

    `max_commit_batch` and `commit_window_ms` are as in `create_app`.

    Raises:
        PayloadStoreError: The store cannot be opened.
        TextopsError: The port cannot be bound.
    """
    import uvicorn

    store = open_store(store_url)
    try:
        sock = bind_socket(host, port)
    except TextopsError:
        store.close()
        raise
    app = create_app(
        store,
        max_body_bytes=max_body_bytes,
        max_commit_batch=max_commit_batch,
        commit_window_ms=commit_window_ms,
    )
    bound = sock.getsockname()[1]
    logger.info(
        "collector listening url=http://%s:%d store=%s max_commit_batch=%d commit_window_ms=%g",
        host,
        bound,
        mask_url(store_url),
        app.state.collector.writer.max_batch_events,
        commit_window_ms,
    )
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="on", server_header=False
    )
    # On SIGTERM or SIGINT uvicorn finishes the requests in flight, runs the app's shutdown
    # (the writer commits what is queued) and then ends the process by that same signal.
    uvicorn.Server(config).run(sockets=[sock])


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m textops.components.monitor.collector`: the same flags as `textops collect`."""
    from textops.components.monitor.collector_cli import collect_command

    parser = argparse.ArgumentParser(
        prog="python -m textops.components.monitor.collector",
        description="Collect KServe payload-logger CloudEvents into the payload store.",
    )
    add_collect_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return collect_command(args)
    except TextopsError as e:
        print(f"textops: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
