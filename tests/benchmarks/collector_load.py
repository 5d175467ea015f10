"""The load generators of the collector benchmark (see bench_collector.py), in the child process.

Two shapes of traffic, the same CloudEvents (binary mode, as KServe's agent sends them):

- `pairs`, the best case: each of `--concurrency` clients keeps one connection open and sends,
  for one request id after another, the request event and then its response event.
- `logger`, what KServe's logger sends: `--concurrency` senders (the agent's workers) take the
  events from one queue, in the order requests and responses arrive, and POST one event each,
  waiting for its answer. Connections are kept as the agent's HTTP client keeps them: the
  agent sends with the CloudEvents Go SDK over Go's default transport, which keeps at most two
  idle connections per host, so a sender finding none idle opens a new one, and a connection
  that comes back to a full idle pool is closed.
- `predictor`, what the predictor's own payload logger (`--payload-logger-url`) sends for a
  predictor answering `rate` requests a second: the real `PayloadLogger`, fed open-loop at
  that rate, each response `PREDICTOR_LATENCY_SECONDS` after its request. What counts here is
  what it drops, and that it never keeps half a pair.
"""

from __future__ import annotations

import asyncio
import csv
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
MODEL = "textops-classifier"
PII = ("write to jane.doe@example.com", "call me on +44 20 7946 0958")
SEED = 0
#: Idle connections per host Go's default transport keeps (http.DefaultMaxIdleConnsPerHost).
GO_IDLE_CONNECTIONS_PER_HOST = 2
SHAPES = ("pairs", "logger", "predictor")
#: Time from a request to its response in the `predictor` shape.
PREDICTOR_LATENCY_SECONDS = 0.025

Event = tuple[str, str, bytes]  # (request id, Ce-Type, body)


def sentences() -> list[str]:
    """The bundled sample sentences."""
    from textops.components.common.config import sample_data_path

    with open(sample_data_path(), encoding="utf-8", newline="") as handle:
        return [row["text"] for row in csv.DictReader(handle)]


def event_bodies(request_id: str, rng: random.Random, texts: list[str]) -> list[tuple[str, bytes]]:
    """(Ce-Type, body) of the request event and then the response event of one request.

    Half V1, half V2 bodies of 1 to 4 sample sentences; one text in ten holds an e-mail address
    or a phone number, so redaction runs as on real traffic.
    """
    batch = [rng.choice(texts) for _ in range(rng.randint(1, 4))]
    if rng.random() < 0.1:
        batch[0] = f"{batch[0]} {rng.choice(PII)}"
    labels = [rng.choice(("negative", "positive")) for _ in batch]
    if rng.random() < 0.5:
        request: dict[str, Any] = {"instances": batch}
        response: dict[str, Any] = {
            "predictions": [
                {"label": label, "probabilities": {"negative": 0.3, "positive": 0.7}}
                for label in labels
            ],
            "model_version": "1",
        }
    else:
        request = {
            "id": request_id,
            "inputs": [{"name": "text", "shape": [len(batch)], "datatype": "BYTES", "data": batch}],
        }
        response = {
            "model_name": MODEL,
            "model_version": "1",
            "id": request_id,
            "outputs": [
                {"name": "label", "shape": [len(batch)], "datatype": "BYTES", "data": labels},
                {
                    "name": "probabilities",
                    "shape": [len(batch), 2],
                    "datatype": "FP32",
                    "data": [0.3, 0.7] * len(batch),
                },
            ],
        }
    return [
        (REQUEST_TYPE, json.dumps(request).encode()),
        (RESPONSE_TYPE, json.dumps(response).encode()),
    ]


def http_request(port: int, event: Event) -> bytes:
    """The bytes of one binary-mode CloudEvent POST, as KServe's agent sends it."""
    request_id, ce_type, body = event
    head = (
        f"POST /events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Ce-Specversion: 1.0\r\nCe-Id: {request_id}\r\nCe-Type: {ce_type}\r\n"
        "Ce-Source: http://localhost:9081/\r\n"
        f"Ce-Time: 2026-01-01T00:00:00Z\r\nCe-Inferenceservicename: {MODEL}\r\n"
        "Ce-Namespace: default\r\nCe-Component: predictor\r\nCe-Endpoint: default\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def read_status(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 response; its status code."""
    status = int((await reader.readline()).split()[1])
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


class Tally:
    """What the clients saw: events acknowledged, failed statuses, latencies, connections."""

    def __init__(self) -> None:
        self.acked: list[str] = []
        self.failed: list[int] = []
        self.latencies: list[float] = []
        self.connections = 0

    def record(self, event: Event, status: int, started: float) -> None:
        self.latencies.append(time.perf_counter() - started)
        if 200 <= status < 300:
            self.acked.append(f"{event[0]} {event[1].rsplit('.', 1)[1]}")
        else:
            self.failed.append(status)


async def pairs_client(port: int, work: list[list[Event]], tally: Tally) -> None:
    """One keep-alive connection: each request's events in order, one answer at a time."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    tally.connections += 1
    try:
        for events in work:
            for event in events:
                started = time.perf_counter()
                writer.write(http_request(port, event))
                tally.record(event, await read_status(reader), started)
    finally:
        writer.close()


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def logger_sender(
    port: int, queue: asyncio.Queue[Event], idle: list[Connection], tally: Tally
) -> None:
    """One of the agent's workers: one event per POST, connections from Go's idle pool."""
    while not queue.empty():
        event = queue.get_nowait()
        started = time.perf_counter()
        if idle:
            reader, writer = idle.pop()
        else:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            tally.connections += 1
        writer.write(http_request(port, event))
        tally.record(event, await read_status(reader), started)
        if len(idle) < GO_IDLE_CONNECTIONS_PER_HOST:
            idle.append((reader, writer))
        else:
            writer.close()
        # The worker goes back to the agent's dispatcher for its next event: the other workers
        # whose answers came in the meantime return their connections first.
        await asyncio.sleep(0)


async def send_all(
    port: int, prefix: str, events: int, concurrency: int, shape: str, rate: float
) -> dict[str, Any]:
    """Send `events` events (events/2 requests) in `shape` with `concurrency` clients (for
    `predictor`: at `rate` requests a second)."""
    rng = random.Random(f"{SEED}-{prefix}")
    texts = sentences()
    requests = [
        [(f"{prefix}-{i}", t, b) for t, b in event_bodies(f"{prefix}-{i}", rng, texts)]
        for i in range(events // 2)
    ]
    if shape == "predictor":
        return await predictor_logger(port, requests, rate)
    tally = Tally()
    start = time.perf_counter()
    if shape == "pairs":
        shares = [requests[i::concurrency] for i in range(concurrency)]
        await asyncio.gather(*(pairs_client(port, share, tally) for share in shares))
    else:
        queue: asyncio.Queue[Event] = asyncio.Queue()
        for event in interleave(requests, concurrency):
            queue.put_nowait(event)
        idle: list[Connection] = []
        await asyncio.gather(*(logger_sender(port, queue, idle, tally) for _ in range(concurrency)))
        for _, writer in idle:
            writer.close()
    elapsed = time.perf_counter() - start
    tally.latencies.sort()
    return {
        "events_sent": len(tally.acked) + len(tally.failed),
        "events_acknowledged": len(tally.acked),
        "failed_statuses": sorted(set(tally.failed)),
        "connections_opened": tally.connections,
        "seconds": elapsed,
        "events_per_second": len(tally.acked) / elapsed,
        "latency_ms_p50": 1000 * statistics.median(tally.latencies),
        "latency_ms_p99": 1000 * tally.latencies[int(0.99 * (len(tally.latencies) - 1))],
        "acked": tally.acked,
    }


async def predictor_logger(port: int, requests: list[list[Event]], rate: float) -> dict[str, Any]:
    """Feed the predictor's PayloadLogger `rate` requests a second; what it did."""
    from prometheus_client import REGISTRY

    from textops.components.serve.payload_logger import PayloadLogger
    from textops.components.serve.settings import PayloadLoggerSettings

    def counted(name: str) -> float:
        return sum(
            sample.value
            for metric in REGISTRY.collect()
            for sample in metric.samples
            if sample.name == f"textops_payload_events_{name}_total"
        )

    sent_before, dropped_before = counted("sent"), counted("dropped")
    settings = PayloadLoggerSettings(url=f"http://127.0.0.1:{port}/events", source="bench")
    sender = PayloadLogger(settings, MODEL)
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    for i, (request, response) in enumerate(requests):
        await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
        logged = sender.log_request(request[0], request[2], "application/json")
        loop.call_later(PREDICTOR_LATENCY_SECONDS, logged.respond, response[2], "application/json")
    offered = time.perf_counter() - start
    # Every event is sent or dropped, in the end.
    while counted("sent") - sent_before + counted("dropped") - dropped_before < 2 * len(requests):
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - start
    await sender.aclose()
    sent, dropped = counted("sent") - sent_before, counted("dropped") - dropped_before
    return {
        "requests": len(requests),
        "offered_requests_per_second": len(requests) / offered,
        "events_sent": sent,
        "events_dropped": dropped,
        "seconds": elapsed,
        "events_per_second": sent / elapsed,
        "acked": [],
    }


def interleave(requests: list[list[Event]], in_flight: int) -> list[Event]:
    """Events in the order a predictor queues them with `in_flight` requests being served: a
    request's event when it arrives, its response's when it is answered, `in_flight` later."""
    order: list[Event] = []
    for i, (request, _) in enumerate(requests):
        order.append(request)
        if i >= in_flight:
            order.append(requests[i - in_flight][1])
    order.extend(response for _, response in requests[max(0, len(requests) - in_flight) :])
    return order


def cpu_seconds(pid: int) -> float:
    """User and system CPU time the process `pid` has used so far (Linux /proc)."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_load(
    port: int,
    collector_pid: int,
    events: int,
    warmup: int,
    concurrency: int,
    shape: str,
    rate: float,
) -> dict[str, Any]:
    """Warm-up, then the timed run with the collector's CPU use; figures and acked events."""
    import os

    warm = asyncio.run(send_all(port, f"warmup-{shape}", warmup, concurrency, shape, rate))
    before = cpu_seconds(collector_pid), cpu_seconds(os.getpid())
    timed = asyncio.run(send_all(port, f"timed-{shape}", events, concurrency, shape, rate))
    for key, pid, start in (
        ("collector", collector_pid, before[0]),
        ("load", os.getpid(), before[1]),
    ):
        timed[f"{key}_cpu_percent"] = 100 * (cpu_seconds(pid) - start) / timed["seconds"]
    return {"warmup": warm, "timed": timed}
