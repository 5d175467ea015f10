"""The processes the serving benchmark starts, each on its own (see bench_serve.py).

serve_runs.py baseline --serve-baseline MODEL_DIR --model_name NAME --http_port PORT
    A KServe model whose `predict` runs `transformers.pipeline("text-classification")` in
    PyTorch on a fine-tuned model directory, as KServe's Hugging Face runtime runs an
    encoder: the baseline.
serve_runs.py load PORT CONCURRENCY SECONDS TEXTS_JSON
    Closed-loop clients (one keep-alive connection each) sending V1 requests of one text;
    prints requests/s, p50, p99, errors, the CPU seconds the clients used and the
    machine's busy cores (everyone's) as JSON.
serve_runs.py engine TEXTS_JSON MEAN SECONDS CONCURRENCY STRIDE -- SERVER_ARGS...
    The predictor's engine alone, opened from the predictor's command line, on the load's
    texts in batches of MEAN texts, tokenized beforehand; prints predictions/s as JSON (see
    serve_overhead.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from serve_overhead import engine_main, machine_cores_busy, read_cpu_times

MODEL_NAME = "textops-classifier"
#: Client k starts at text k * CLIENT_STRIDE, so concurrent clients send different texts.
CLIENT_STRIDE = 37


def serve_baseline(argv: list[str]) -> None:
    """A KServe model whose predict runs a transformers text-classification pipeline."""
    from kserve import Model, ModelServer
    from kserve.model_server import parser as kserve_parser

    parser = argparse.ArgumentParser(parents=[kserve_parser])
    parser.add_argument("--serve-baseline", type=Path, required=True)
    parser.add_argument("--max-seq-length", type=int, default=128)
    args = parser.parse_args(argv)

    class PipelineModel(Model):
        def load(self) -> bool:
            from transformers import pipeline

            self.pipe = pipeline(
                "text-classification", model=str(args.serve_baseline), top_k=None, device=-1
            )
            self.ready = True
            return True

        def predict(self, payload: dict[str, Any], headers: Any = None) -> dict[str, Any]:
            texts = [t if isinstance(t, str) else t["text"] for t in payload["instances"]]
            outputs: Any = self.pipe(texts, truncation=True, max_length=args.max_seq_length)
            return {
                "predictions": [
                    {
                        "label": max(scores, key=lambda s: s["score"])["label"],
                        "probabilities": {s["label"]: s["score"] for s in scores},
                    }
                    for scores in outputs
                ]
            }

    model = PipelineModel(args.model_name)
    model.load()
    ModelServer(http_port=args.http_port, enable_grpc=False).start([model])


async def _client(
    port: int,
    bodies: list[bytes],
    stop: float,
    first: int,
    latencies: list[float],
    errors: list[str],
) -> None:
    path = f"/v1/models/{MODEL_NAME}:predict"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = first
    while time.perf_counter() < stop:
        body = bodies[i % len(bodies)]
        i += 1
        request = (
            f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        started = time.perf_counter()
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
            errors.append(repr(e))
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            continue
        latencies.append(time.perf_counter() - started)
        status = int(head.split(b" ", 2)[1])
        if status != 200:
            errors.append(f"HTTP {status}")
    writer.close()


def run_load(argv: list[str]) -> None:
    """Closed-loop clients for a while; prints requests/s, p50, p99 and errors as JSON."""
    port, concurrency, seconds = int(argv[0]), int(argv[1]), float(argv[2])
    texts = json.loads(Path(argv[3]).read_text())
    bodies = [json.dumps({"instances": [t]}).encode() for t in texts]
    latencies: list[float] = []
    errors: list[str] = []

    # The clients' own CPU time: on a small machine they take cores from the server, and the
    # serving overhead benchmark reports how much.
    cpu_before, machine_before = time.process_time(), read_cpu_times()

    async def main() -> None:
        stop = time.perf_counter() + seconds
        await asyncio.gather(
            *(
                _client(port, bodies, stop, k * CLIENT_STRIDE, latencies, errors)
                for k in range(concurrency)
            )
        )

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
    cpu_seconds = time.process_time() - cpu_before
    machine = machine_cores_busy(machine_before, read_cpu_times(), os.cpu_count() or 1)
    latencies.sort()
    print(
        json.dumps(
            {
                "concurrency": concurrency,
                "requests": len(latencies),
                "requests_per_s": len(latencies) / seconds,
                "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else None,
                "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
                if latencies
                else None,
                "errors": len(errors),
                "error_examples": sorted(set(errors))[:3],
                "client_cpu_seconds": cpu_seconds,
                "machine_cores_busy": machine,
            }
        )
    )


if __name__ == "__main__":
    if sys.argv[1] == "baseline":
        serve_baseline(sys.argv[2:])
    elif sys.argv[1] == "engine":
        engine_main(sys.argv[2:])
    else:
        run_load(sys.argv[2:])
