"""Load for the serving cost benchmarks, run in a process of its own (see bench_serve_costs.py
and bench_soak.py).

cost_runs.py worst PORT SECONDS RATE KIND [KIND ...]
    One client per worst-case KIND (a key of `WORST_CASE`), each on its own keep-alive
    connection, for SECONDS, starting a request at most RATE times a second (0: each as soon
    as the previous one is answered); prints, per kind, the answers by status and the
    latencies.
cost_runs.py soak PORT SECONDS CONNECTIONS TEXTS_JSON
    CONNECTIONS closed-loop clients sending the soak mix (`soak_mix`) for SECONDS; prints the
    answers by kind and status, requests/s, p50 and p99.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from serve_runs import MODEL_NAME

V1_PREDICT = f"/v1/models/{MODEL_NAME}:predict"
V1_EXPLAIN = f"/v1/models/{MODEL_NAME}:explain"
V2_INFER = f"/v2/models/{MODEL_NAME}/infer"
#: A 1 MB text of words: 200,000 words an explanation could score.
MEGABYTE_OF_WORDS = " ".join(["word"] * 200_000)
#: The worst-case requests: a 1 MB text predicted, the same explained, and the biggest text
#: the default body limit (4 MiB) lets through.
WORST_CASE: dict[str, tuple[str, dict[str, Any]]] = {
    "predict_1mb": (V1_PREDICT, {"instances": [MEGABYTE_OF_WORDS]}),
    "explain_1mb": (V1_EXPLAIN, {"instances": [MEGABYTE_OF_WORDS]}),
    "predict_4mb": (V1_PREDICT, {"instances": ["x" * (4 * 1024 * 1024 - 1024)]}),
}

Request = tuple[str, bytes]


def http_request(path: str, body: dict[str, Any]) -> bytes:
    """A keep-alive HTTP/1.1 POST of `body` as JSON."""
    payload = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


def v2_body(texts: list[str]) -> dict[str, Any]:
    """A V2 infer body of `texts`."""
    return {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]}


def soak_mix(texts: list[str], connection: int) -> list[Request]:
    """What one soak connection sends, in a loop: mostly one real sentence (V1), some V2 and
    batches of 8, and every 50th request a 1 MB text; connection 0 also explains a sentence
    every 20th request (one explanation at a time, within --explain-concurrency). Each
    connection starts the loop at a place of its own."""
    requests: list[Request] = []
    for i in range(100):
        text = texts[(connection * 37 + i) % len(texts)]
        if i % 50 == 49:
            requests.append(
                ("predict_1mb", http_request(V1_PREDICT, {"instances": [MEGABYTE_OF_WORDS]}))
            )
        elif connection == 0 and i % 20 == 10:
            requests.append(("explain", http_request(V1_EXPLAIN, {"instances": [text]})))
        elif i % 10 == 3:
            requests.append(("v2", http_request(V2_INFER, v2_body([text]))))
        elif i % 10 == 7:
            batch = [texts[(connection + i + k) % len(texts)] for k in range(8)]
            requests.append(("batch_8", http_request(V1_PREDICT, {"instances": batch})))
        else:
            requests.append(("predict", http_request(V1_PREDICT, {"instances": [text]})))
    # Each connection starts at its own place in the cycle, so that the connections' batches
    # and megabytes do not all arrive at once.
    start = connection * 37 % len(requests)
    return requests[start:] + requests[:start]


class Tally:
    """Latencies and statuses by request kind."""

    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.statuses: dict[str, Counter[str]] = defaultdict(Counter)
        self.examples: dict[str, set[str]] = defaultdict(set)

    def record(self, kind: str, status: str, seconds: float, body: bytes) -> None:
        self.statuses[kind][status] += 1
        if status == "200":
            self.latencies[kind].append(seconds)
        elif len(self.examples[kind]) < 3:
            self.examples[kind].add(f"{status} {body[:300].decode(errors='replace')}")

    def summary(self, seconds: float) -> dict[str, Any]:
        kinds: dict[str, Any] = {}
        for kind, statuses in self.statuses.items():
            latencies = sorted(self.latencies[kind])
            kinds[kind] = {
                "requests": sum(statuses.values()),
                "statuses": dict(statuses),
                "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else None,
                "p99_ms": _p99(latencies),
                "max_ms": 1000 * latencies[-1] if latencies else None,
                "examples": sorted(self.examples[kind]),
            }
        everything = sorted(x for values in self.latencies.values() for x in values)
        total = sum(sum(s.values()) for s in self.statuses.values())
        errors = total - len(everything)
        return {
            "seconds": seconds,
            "requests": total,
            "requests_per_s": total / seconds,
            "p50_ms": 1000 * everything[len(everything) // 2] if everything else None,
            "p99_ms": _p99(everything),
            "errors": errors,
            "kinds": kinds,
        }


def _p99(latencies: list[float]) -> float | None:
    if not latencies:
        return None
    return 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]


async def closed_loop(
    port: int, requests: list[Request], stop: float, tally: Tally, interval: float = 0.0
) -> None:
    """Send `requests` in a loop on one keep-alive connection until `stop`, each request
    starting at least `interval` seconds after the previous one started."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = 0
    next_start = time.perf_counter()
    while time.perf_counter() < stop:
        await asyncio.sleep(max(0.0, next_start - time.perf_counter()))
        next_start = time.perf_counter() + interval
        kind, request = requests[i % len(requests)]
        i += 1
        started = time.perf_counter()
        try:
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = await reader.readexactly(length)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
            tally.record(kind, type(e).__name__, time.perf_counter() - started, repr(e).encode())
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            continue
        tally.record(kind, head.split(b" ", 2)[1].decode(), time.perf_counter() - started, body)
    writer.close()


def run(
    clients: list[list[Request]], port: int, seconds: float, interval: float = 0.0
) -> dict[str, Any]:
    """Run one client per request list for `seconds`; the tally's summary."""
    tally = Tally()

    async def main() -> None:
        stop = time.perf_counter() + seconds
        await asyncio.gather(
            *(closed_loop(port, requests, stop, tally, interval) for requests in clients)
        )

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
    return tally.summary(seconds)


def main(argv: list[str]) -> None:
    mode, port, seconds = argv[0], int(argv[1]), float(argv[2])
    if mode == "worst":
        rate = float(argv[3])
        clients = [[(kind, http_request(*WORST_CASE[kind]))] for kind in argv[4:]]
        print(json.dumps(run(clients, port, seconds, 1 / rate if rate else 0.0)))
    else:
        connections, texts = int(argv[3]), json.loads(Path(argv[4]).read_text())
        clients = [soak_mix(texts, c) for c in range(connections)]
        print(json.dumps(run(clients, port, seconds)))


if __name__ == "__main__":
    main(sys.argv[1:])
