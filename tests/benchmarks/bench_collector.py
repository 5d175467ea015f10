"""Benchmark of the payload collector: events per second into SQLite on loopback, zero loss.

    .venv/bin/python tests/benchmarks/bench_collector.py --output bench-results/collector.json

The collector runs as it does in production (`python -m textops.components.monitor.collector`,
one process, SQLite in WAL mode with `synchronous=FULL`, group commit) on a loopback port. A
load generator in a separate process sends CloudEvents exactly as KServe's payload logger
does (binary mode; for each request id the request event, then its response event) over
`--concurrency` keep-alive connections: half V1, half V2 bodies of 1 to 4 sample sentences,
one text in ten holding an e-mail address or a phone number, so redaction runs as on real
traffic. A short warm-up comes first. The rate is the events acknowledged (2xx) during the
timed phase over its wall time. Then the collector is stopped and the store is read back:
zero loss means every acknowledged event is in the store, and no event was refused.

The baseline, measured in the same run, is the same collector under the same load (event count,
concurrency, bodies) with group commit turned off: `--max-commit-batch 1`, one transaction, and
so one flush to disk, per event. It runs first, then textops's default, each collector on a
fresh store; the report gives both rates and `default_over_baseline`, the default's rate over
the baseline's.

Targets (issue 8), on the default: at least 1,000 events/s, zero loss. The exit status is 1
when one is missed. `--quick` sends a few thousand events: a smoke run, not a measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import random
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import describe_machine

TARGET_EVENTS_PER_SECOND = 1000.0
EVENTS = 40_000
QUICK_EVENTS = 4_000
WARMUP_EVENTS = 1_000
CONCURRENCY = 32
#: The baseline's --max-commit-batch: one event per transaction, no group commit.
BASELINE_MAX_COMMIT_BATCH = 1
SEED = 0
REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
MODEL = "textops-classifier"
PII = ("write to jane.doe@example.com", "call me on +44 20 7946 0958")


def sentences() -> list[str]:
    """The bundled sample sentences."""
    from textops.components.common.config import sample_data_path

    with open(sample_data_path(), encoding="utf-8", newline="") as handle:
        return [row["text"] for row in csv.DictReader(handle)]


def event_bodies(request_id: str, rng: random.Random, texts: list[str]) -> list[tuple[str, bytes]]:
    """(Ce-Type, body) of the request event and then the response event of one request."""
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


def http_request(port: int, request_id: str, ce_type: str, body: bytes) -> bytes:
    """The bytes of one binary-mode CloudEvent POST, as KServe's agent sends it."""
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


async def client(
    port: int, work: list[list[tuple[str, str, bytes]]], acked: list[str], latencies: list[float]
) -> list[int]:
    """Send each request's events in order over one keep-alive connection; failed statuses."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    failed = []
    try:
        for events in work:
            for request_id, ce_type, body in events:
                start = time.perf_counter()
                writer.write(http_request(port, request_id, ce_type, body))
                status = await read_status(reader)
                latencies.append(time.perf_counter() - start)
                if 200 <= status < 300:
                    acked.append(f"{request_id} {ce_type.rsplit('.', 1)[1]}")
                else:
                    failed.append(status)
    finally:
        writer.close()
    return failed


async def send_all(port: int, prefix: str, events: int, concurrency: int) -> dict[str, Any]:
    """Send `events` events (events/2 requests) over `concurrency` connections."""
    rng = random.Random(f"{SEED}-{prefix}")
    texts = sentences()
    requests = [
        [(f"{prefix}-{i}", t, b) for t, b in event_bodies(f"{prefix}-{i}", rng, texts)]
        for i in range(events // 2)
    ]
    shares = [requests[i::concurrency] for i in range(concurrency)]
    acked: list[str] = []
    latencies: list[float] = []
    start = time.perf_counter()
    results = await asyncio.gather(*(client(port, share, acked, latencies) for share in shares))
    elapsed = time.perf_counter() - start
    failed = [status for statuses in results for status in statuses]
    latencies.sort()
    return {
        "events_sent": len(acked) + len(failed),
        "events_acknowledged": len(acked),
        "failed_statuses": sorted(set(failed)),
        "seconds": elapsed,
        "events_per_second": len(acked) / elapsed,
        "latency_ms_p50": 1000 * statistics.median(latencies),
        "latency_ms_p99": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
        "acked": acked,
    }


def load_child(port: int, events: int, concurrency: int, acked_file: Path) -> None:
    """The load generator's process: warm-up, then the timed run; figures to stdout."""
    warmup = asyncio.run(send_all(port, "warmup", WARMUP_EVENTS, concurrency))
    timed = asyncio.run(send_all(port, "timed", events, concurrency))
    acked_file.write_text("\n".join(warmup.pop("acked") + timed["acked"]) + "\n")
    timed.pop("acked")
    print(json.dumps({"warmup": warmup, "timed": timed}))


def start_collector(
    store_url: str, log: Path, max_commit_batch: int | None
) -> tuple[subprocess.Popen[bytes], int]:
    """The collector on a free loopback port, as a separate process; (process, port).

    `max_commit_batch` None runs it with its default group commit.
    """
    handle = log.open("wb")
    bound = () if max_commit_batch is None else ("--max-commit-batch", str(max_commit_batch))
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "textops.components.monitor.collector"),
            *("--store", store_url, "--host", "127.0.0.1", "--port", "0"),
            *bound,
        ],
        stdout=handle,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = re.search(r"listening url=http://127\.0\.0\.1:(\d+)", log.read_text())
        if found:
            return process, int(found.group(1))
        if process.poll() is not None:
            raise RuntimeError(f"the collector exited: {log.read_text()[-2000:]}")
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("the collector did not start within 60 s")


def collector_metrics(port: int) -> dict[str, float]:
    """The collector's own counters, from /metrics."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    figures: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("textops_collector_") and "_created" not in line:
            name, _, value = line.rpartition(" ")
            figures[name] = float(value)
    return figures


def check_store(store_url: str, acked_file: Path) -> dict[str, Any]:
    """Whether every acknowledged event is in the store."""
    from textops.components.monitor.store import open_store

    acked = [tuple(line.split(" ", 1)) for line in acked_file.read_text().splitlines() if line]
    with open_store(store_url) as store:
        missing = store.missing_events(acked)  # type: ignore[arg-type]
        rows = len(store.fetch_window())
    return {"acknowledged": len(acked), "missing_from_store": len(missing), "stored_texts": rows}


def run(
    events: int, concurrency: int, workdir: Path, max_commit_batch: int | None
) -> dict[str, Any]:
    """One collector on a fresh store in `workdir` under the load; its figures."""
    workdir.mkdir(parents=True)
    # An absolute path after sqlite:/// makes the four slashes of an absolute SQLite URL.
    store_url = f"sqlite:///{workdir.resolve() / 'payloads.db'}"
    process, port = start_collector(store_url, workdir / "collector.log", max_commit_batch)
    acked_file = workdir / "acked.txt"
    try:
        load = subprocess.run(
            [
                *(sys.executable, __file__, "--child-load", "--port", str(port)),
                *("--events", str(events), "--concurrency", str(concurrency)),
                *("--acked-file", str(acked_file)),
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=3600,
        )
        figures = json.loads(load.stdout)
        metrics = collector_metrics(port)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    store = check_store(store_url, acked_file)
    batches = metrics.get("textops_collector_commit_batch_events_count", 0.0)
    return {
        "max_commit_batch": max_commit_batch,
        **figures,
        "collector": {
            "events_received": metrics.get("textops_collector_events_received_total"),
            "events_stored": metrics.get("textops_collector_events_stored_total"),
            "events_rejected": sum(
                v for k, v in metrics.items() if k.startswith("textops_collector_events_rejected")
            ),
            "redactions": sum(
                v for k, v in metrics.items() if k.startswith("textops_collector_redactions")
            ),
            "transactions": batches,
            "mean_events_per_transaction": (
                metrics.get("textops_collector_commit_batch_events_sum", 0.0) / batches
                if batches
                else None
            ),
        },
        "store": store,
    }


def zero_loss(result: dict[str, Any]) -> bool:
    """Every acknowledged event is in the store, and no event was refused or failed."""
    store, collector = result["store"], result["collector"]
    return (
        store["missing_from_store"] == 0
        and not result["timed"]["failed_statuses"]
        and not result["warmup"]["failed_statuses"]
        and collector["events_rejected"] == 0
        and collector["events_stored"] == store["acknowledged"]
    )


def print_run(name: str, result: dict[str, Any]) -> None:
    """Two lines on one run: rate, latency and transactions; what the store holds."""
    timed, store, collector = result["timed"], result["store"], result["collector"]
    print(
        f"{name}: {timed['events_acknowledged']} events in {timed['seconds']:.2f} s = "
        f"{timed['events_per_second']:.0f} events/s (p50 {timed['latency_ms_p50']:.1f} ms, "
        f"p99 {timed['latency_ms_p99']:.1f} ms), {collector['transactions']:.0f} transactions, "
        f"{collector['mean_events_per_transaction'] or 0:.1f} events per transaction"
    )
    print(
        f"  store: {store['acknowledged']} acknowledged, {store['missing_from_store']} missing, "
        f"{collector['events_rejected']:.0f} rejected",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, help="where the JSON figures go")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_EVENTS} events: a smoke run")
    parser.add_argument("--events", type=int, help=f"events in the timed phase (default {EVENTS})")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY, help="connections")
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--child-load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--acked-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    events = args.events or (QUICK_EVENTS if args.quick else EVENTS)

    if args.child_load:
        load_child(args.port, events, args.concurrency, args.acked_file)
        return 0

    with tempfile.TemporaryDirectory(dir=args.workdir) as scratch:
        baseline = run(
            events, args.concurrency, Path(scratch) / "baseline", BASELINE_MAX_COMMIT_BATCH
        )
        print_run("baseline (--max-commit-batch 1)", baseline)
        result = run(events, args.concurrency, Path(scratch) / "default", None)
        print_run("default", result)
    rates = {
        "default": result["timed"]["events_per_second"],
        "baseline": baseline["timed"]["events_per_second"],
    }
    report = {
        "benchmark": "payload collector into SQLite on loopback",
        "quick": args.quick,
        "events": events,
        "concurrency": args.concurrency,
        "machine": describe_machine(("starlette", "uvicorn", "uvloop", "httptools")),
        "sqlite": sqlite3.sqlite_version,
        **result,
        "baseline": {**baseline, "zero_loss": zero_loss(baseline)},
        "events_per_second": rates,
        "default_over_baseline": rates["default"] / rates["baseline"],
        "targets": {
            "events_per_second_at_least_1000": rates["default"] >= TARGET_EVENTS_PER_SECOND,
            "zero_loss": zero_loss(result),
        },
    }
    print(
        f"default / baseline: {report['default_over_baseline']:.1f}x "
        f"({rates['default']:.0f} vs {rates['baseline']:.0f} events/s)"
    )
    print(
        "targets: "
        + ", ".join(f"{k}={'pass' if v else 'FAIL'}" for k, v in report["targets"].items())
    )
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"figures written to {args.output}")
    return 0 if all(report["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
