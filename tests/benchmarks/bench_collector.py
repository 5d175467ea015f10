"""Benchmark of the payload collector: events per second into SQLite on loopback, zero loss.

    .venv/bin/python tests/benchmarks/bench_collector.py --output bench-results/collector.json
    .venv/bin/python tests/benchmarks/bench_collector.py --quick    # a smoke run, a minute

The collector runs as it does in production (`python -m textops.components.monitor.collector`,
one process, SQLite in WAL mode with `synchronous=FULL`, group commit) on a loopback port, on a
fresh store for each run. A load generator in a separate process (`collector_load.py`) sends
CloudEvents as KServe's payload logger does (binary mode): half V1, half V2 bodies of 1 to 4
sample sentences, one text in ten holding an e-mail address or a phone number, so redaction
runs as on real traffic. A short warm-up comes first; the rate is the events acknowledged (2xx)
in the timed phase over its wall time, and the CPU used by the collector in that phase is
reported beside it. Then the collector is stopped and the store is read back: zero loss means
every acknowledged event is there, no event was refused, and no request has one of its two
events without the other.

The runs, all in one invocation, so their rates compare (`--runs` picks some):

- `default`, the best case: 32 clients, each on one keep-alive connection sending a request's
  event and then its response's, one answer at a time.
- `baseline`: the same traffic with group commit off (`--max-commit-batch 1`): one
  transaction, and so one flush to disk, per event. The report gives each run's rate over it.
- `logger`: what KServe's logger sends: 16 senders (the agent's workers, about three replicas'
  worth) of one event per POST, drawing connections from a pool that keeps two idle, as Go's
  default transport does, so many events come on a new connection.
- `logger_window`: the same with `--commit-window-ms 2`.
- `predictor` and `predictor_overload`: the predictor's own payload logger (`PayloadLogger`),
  fed open-loop at 300 requests a second (what the predictor answered at 8 concurrent
  clients) and at three times that: what it sends and drops, and that no request is stored
  with only one of its events.

Targets: `default` at least 1,000 events/s; zero loss in every run; the predictor's logger
drops nothing at 300 requests a second. The exit status is 1 when one is missed. `--quick`
sends a few thousand events a run: a smoke run, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collector_load import SHAPES, run_load
from machine import describe_machine

TARGET_EVENTS_PER_SECOND = 1000.0
EVENTS = 40_000
QUICK_EVENTS = 4_000
WARMUP_EVENTS = 1_000
QUICK_WARMUP_EVENTS = 200
#: Clients of the best case (`pairs`): keep-alive connections, a request's two events in order.
PAIRS_CONCURRENCY = 32
#: Senders of the logger-shaped traffic, one event per POST (KServe's agent runs 5 workers per
#: replica: 16 is about three replicas sending to one collector).
LOGGER_CONCURRENCY = 16
#: The predictor's rate in the `predictor` run: what it answered at 8 concurrent clients. The
#: overload run offers three times that, more than the collector takes: the logger must drop.
PREDICTOR_REQUESTS_PER_SECOND = 300.0


@dataclass(frozen=True)
class Run:
    """One collector on a fresh store under one load: its traffic, its flags."""

    shape: str
    flags: tuple[str, ...] = ()
    requests_per_second: float = 0.0


#: The runs, in the order they run. The baseline is the best case's traffic with group commit
#: off: one transaction, one flush, per event.
RUNS = {
    "baseline": Run("pairs", ("--max-commit-batch", "1")),
    "default": Run("pairs"),
    "logger": Run("logger"),
    "logger_window": Run("logger", ("--commit-window-ms", "2")),
    "predictor": Run("predictor", requests_per_second=PREDICTOR_REQUESTS_PER_SECOND),
    "predictor_overload": Run("predictor", requests_per_second=3 * PREDICTOR_REQUESTS_PER_SECOND),
}


def load_child(args: argparse.Namespace, events: int, warmup: int) -> None:
    """The load generator's process: warm-up, then the timed run; figures to stdout."""
    figures = run_load(
        args.port, args.collector_pid, events, warmup, args.concurrency, args.shape, args.rate
    )
    acked = figures["warmup"].pop("acked") + figures["timed"].pop("acked")
    args.acked_file.write_text("\n".join(acked) + "\n")
    print(json.dumps(figures))


def start_collector(
    store_url: str, log: Path, flags: tuple[str, ...]
) -> tuple[subprocess.Popen[bytes], int]:
    """The collector with `flags` on a free loopback port, in a process; (process, port)."""
    handle = log.open("wb")
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "textops.components.monitor.collector"),
            *("--store", store_url, "--host", "127.0.0.1", "--port", "0"),
            *flags,
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
    """Whether every acknowledged event is in the store; how many timed requests have both
    events there, and how many only one."""
    from textops.components.monitor.store import open_store, sqlite_path

    acked = [tuple(line.split(" ", 1)) for line in acked_file.read_text().splitlines() if line]
    with open_store(store_url) as store:
        missing = store.missing_events(acked)  # type: ignore[arg-type]
        rows = len(store.fetch_window())
    with sqlite3.connect(sqlite_path(store_url)) as db:
        halves = db.execute(
            "SELECT count(*) FILTER (WHERE n = 2), count(*) FILTER (WHERE n = 1) FROM "
            "(SELECT event_id, count(*) AS n FROM textops_payload_events "
            "WHERE event_id LIKE 'timed-%' GROUP BY event_id)"
        ).fetchone()
    return {
        "acknowledged": len(acked),
        "missing_from_store": len(missing),
        "stored_texts": rows,
        "timed_requests_with_both_events": halves[0],
        "timed_requests_with_one_event": halves[1],
    }


def run(name: str, events: int, quick: bool, workdir: Path) -> dict[str, Any]:
    """One collector on a fresh store in `workdir`, under the load of run `name`; its figures."""
    shape, flags = RUNS[name].shape, RUNS[name].flags
    concurrency = PAIRS_CONCURRENCY if shape == "pairs" else LOGGER_CONCURRENCY
    workdir.mkdir(parents=True)
    # An absolute path after sqlite:/// makes the four slashes of an absolute SQLite URL.
    store_url = f"sqlite:///{workdir.resolve() / 'payloads.db'}"
    process, port = start_collector(store_url, workdir / "collector.log", flags)
    acked_file = workdir / "acked.txt"
    try:
        load = subprocess.run(
            [
                *(sys.executable, __file__, "--child-load", "--port", str(port)),
                *("--collector-pid", str(process.pid), "--shape", shape),
                *("--rate", str(RUNS[name].requests_per_second)),
                *("--events", str(events), "--concurrency", str(concurrency)),
                *("--acked-file", str(acked_file), *(("--quick",) if quick else ())),
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
        "shape": shape,
        "concurrency": concurrency,
        "collector_flags": list(flags),
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
    """Every acknowledged (for `predictor`: sent) event is in the store, no event was refused
    or failed, and no timed request has one of its events without the other."""
    store, collector, timed = result["store"], result["collector"], result["timed"]
    whole = store["timed_requests_with_one_event"] == 0 and collector["events_rejected"] == 0
    if result["shape"] == "predictor":
        sent = result["warmup"]["events_sent"] + timed["events_sent"]
        return whole and collector["events_stored"] == sent
    return (
        whole
        and store["missing_from_store"] == 0
        and not timed["failed_statuses"]
        and not result["warmup"]["failed_statuses"]
        and collector["events_stored"] == store["acknowledged"]
    )


def print_run(name: str, result: dict[str, Any]) -> None:
    """Two lines on one run: rate, latency, CPU and transactions; what the store holds."""
    timed, store, collector = result["timed"], result["store"], result["collector"]
    if result["shape"] == "predictor":
        print(
            f"{name} (the predictor's payload logger at "
            f"{timed['offered_requests_per_second']:.0f} requests/s): {timed['events_sent']:.0f} "
            f"events sent, {timed['events_dropped']:.0f} dropped, "
            f"{store['timed_requests_with_both_events']} requests stored with both events, "
            f"{store['timed_requests_with_one_event']} with one; CPU: collector "
            f"{timed['collector_cpu_percent']:.0f}%, logger {timed['load_cpu_percent']:.0f}%, "
            f"{collector['mean_events_per_transaction'] or 0:.1f} events per transaction",
            flush=True,
        )
        return
    print(
        f"{name} ({result['shape']} x{result['concurrency']} {' '.join(result['collector_flags'])}"
        f"): {timed['events_acknowledged']} events in {timed['seconds']:.2f} s = "
        f"{timed['events_per_second']:.0f} events/s (p50 {timed['latency_ms_p50']:.1f} ms, "
        f"p99 {timed['latency_ms_p99']:.1f} ms), collector CPU "
        f"{timed['collector_cpu_percent']:.0f}% (load {timed['load_cpu_percent']:.0f}%), "
        f"{timed['connections_opened']} connections, "
        f"{collector['transactions']:.0f} transactions, "
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
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_EVENTS} events a run after {QUICK_WARMUP_EVENTS} of warm-up: a smoke run",
    )
    parser.add_argument("--events", type=int, help=f"events in each timed run (default {EVENTS})")
    parser.add_argument(
        "--runs",
        nargs="+",
        choices=sorted(RUNS),
        default=list(RUNS),
        help="which runs (default: all, in the order " + ", ".join(RUNS) + ")",
    )
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--child-load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--collector-pid", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--shape", choices=SHAPES, help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--acked-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    events = args.events or (QUICK_EVENTS if args.quick else EVENTS)

    if args.child_load:
        load_child(args, events, QUICK_WARMUP_EVENTS if args.quick else WARMUP_EVENTS)
        return 0

    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(dir=args.workdir) as scratch:
        for name in [name for name in RUNS if name in args.runs]:
            results[name] = run(name, events, args.quick, Path(scratch) / name)
            results[name]["zero_loss"] = zero_loss(results[name])
            print_run(name, results[name])
    report = summary(results, events, args.quick)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"figures written to {args.output}")
    return 0 if all(report["targets"].values()) else 1


def summary(results: dict[str, dict[str, Any]], events: int, quick: bool) -> dict[str, Any]:
    """The report: every run, the rates, their ratios to the baseline and to the best case
    (closed-loop runs only: the predictor's runs send what they are offered), the targets."""
    rates = {name: result["timed"]["events_per_second"] for name, result in results.items()}
    ratios: dict[str, dict[str, float]] = {}
    for reference in ("baseline", "default"):
        if reference in rates:
            ratios[f"over_{reference}"] = {
                name: rates[name] / rates[reference]
                for name, result in results.items()
                if name != reference and result["shape"] != "predictor"
            }
            for name, ratio in ratios[f"over_{reference}"].items():
                versus = f"{rates[name]:.0f} vs {rates[reference]:.0f} events/s"
                print(f"{name} / {reference}: {ratio:.2f}x ({versus})")
    targets = {
        f"{name}_events_per_second_at_least_1000": rates[name] >= TARGET_EVENTS_PER_SECOND
        for name in ("default",)
        if name in rates
    } | {f"{name}_zero_loss": result["zero_loss"] for name, result in results.items()}
    if "predictor" in results:
        targets["predictor_drops_nothing"] = results["predictor"]["timed"]["events_dropped"] == 0
    print("targets: " + ", ".join(f"{k}={'pass' if v else 'FAIL'}" for k, v in targets.items()))
    return {
        "benchmark": "payload collector into SQLite on loopback",
        "quick": quick,
        "events": events,
        "machine": describe_machine(("starlette", "uvicorn", "uvloop", "httptools")),
        "sqlite": sqlite3.sqlite_version,
        "runs": results,
        "events_per_second": rates,
        **ratios,
        "targets": targets,
    }


if __name__ == "__main__":
    sys.exit(main())
