"""Benchmark: a soak of the predictor, 32 connections for 5 minutes: no errors, memory flat.

    .venv/bin/python tests/benchmarks/bench_soak.py --output bench-results/soak.json
    .venv/bin/python tests/benchmarks/bench_soak.py --seconds 20 --warmup-seconds 5   # smoke

The model is bench_serve.py's (all-MiniLM-L6-v2 fine-tuned briefly and exported, 128 tokens;
or `--model-dir`), served by the textops predictor with its defaults. A load generator in a
process of its own keeps `--connections` (32) closed-loop keep-alive connections busy with
the soak mix (`cost_runs.soak_mix`): mostly one real sentence over V1, some over V2, batches
of 8, a 1 MB text every 50th request, and one connection explaining a sentence every 20th.
After `--warmup-seconds` (30) of the same load and one request of each of the biggest shapes
a call can have (`prime_shapes`: ONNX Runtime keeps the memory of the biggest call it has run,
for the next), the server's resident set size (RSS) is read; then the soak runs for
`--seconds` (300) while the RSS is sampled every few seconds. Beside it, as the best case,
the same connections send only one real sentence each over V1 (`serve_runs.py load`) for
`BEST_CASE_S` seconds after warm-up.

Targets: zero failed requests (anything but 200), and the RSS at the end within
`RSS_BOUND_MB` of the RSS after warm-up (a leak of one request's worth per thousand
requests would exceed it). The exit status is 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from bench_serve import FULL, fine_tune_and_export, load, load_texts, start, stop
from bench_serve_costs import rss_mb
from cost_runs import MEGABYTE_OF_WORDS, V1_PREDICT
from machine import describe_machine
from serve_runs import MODEL_NAME

COST_RUNS = Path(__file__).resolve().parent / "cost_runs.py"
#: How much the RSS may grow from the end of warm-up to the end of the soak.
RSS_BOUND_MB = 32.0
#: Seconds between RSS samples.
SAMPLE_EVERY_S = 5.0
#: Seconds of the best case: the same connections, one sentence per request.
BEST_CASE_S = 15.0


def soak(
    port: int, pid: int, seconds: float, connections: int, texts_file: Path
) -> tuple[dict[str, Any], list[tuple[float, float]]]:
    """The soak load for `seconds`, with the server's RSS sampled: (load figures, samples)."""
    started = time.perf_counter()
    arguments = [str(port), str(seconds), str(connections), str(texts_file)]
    process = subprocess.Popen(
        [sys.executable, str(COST_RUNS), "soak", *arguments],
        stdout=subprocess.PIPE,
        text=True,
    )
    samples = []
    while process.poll() is None:
        samples.append((time.perf_counter() - started, rss_mb(pid)))
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=SAMPLE_EVERY_S)
    output = process.stdout.read() if process.stdout is not None else ""
    if process.returncode != 0:
        raise RuntimeError(f"the soak load failed with {process.returncode}")
    return json.loads(output), samples


def prime_shapes(port: int, texts: list[str]) -> None:
    """One request of each of the biggest calls the soak can make: 64 of the longest
    sentence, and max-length texts four to a call."""
    longest = max(texts, key=len)
    for instances in ([longest] * 64, [MEGABYTE_OF_WORDS[:4096]] * 8):
        answer = httpx.post(
            f"http://127.0.0.1:{port}{V1_PREDICT}", json={"instances": instances}, timeout=120
        )
        answer.raise_for_status()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, help="where the JSON figures go")
    parser.add_argument("--seconds", type=float, default=300.0, help="seconds of soak")
    parser.add_argument("--warmup-seconds", type=float, default=30.0, help="seconds of warm-up")
    parser.add_argument("--connections", type=int, default=32, help="closed-loop connections")
    parser.add_argument("--model-dir", type=Path, help="a train step output to serve")
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a temporary one)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(dir=args.workdir) as scratch:
        work = Path(scratch)
        bundle = fine_tune_and_export(work, FULL, args.model_dir)
        texts_file = work / "texts.json"
        texts_file.write_text(json.dumps(load_texts()))
        command = [sys.executable, "-m", "textops.components.serve", "--bundle", str(bundle)]
        process, port, _ = start([*command, "--model_name", MODEL_NAME], work / "server.log", {})
        try:
            metadata = httpx.get(f"http://127.0.0.1:{port}/v2/models/{MODEL_NAME}", timeout=30)
            served = metadata.json().get("parameters", {})
            rss_start = rss_mb(process.pid)
            warmup, _ = soak(port, process.pid, args.warmup_seconds, args.connections, texts_file)
            prime_shapes(port, json.loads(texts_file.read_text()))
            best = load(port, args.connections, min(BEST_CASE_S, args.seconds), texts_file)
            rss_warm = rss_mb(process.pid)
            figures, samples = soak(port, process.pid, args.seconds, args.connections, texts_file)
            rss_end = rss_mb(process.pid)
        finally:
            stop(process)
    targets = {
        "zero_errors": figures["errors"] == 0 and warmup["errors"] == best["errors"] == 0,
        f"rss_end_within_{RSS_BOUND_MB:g}_mb_of_warm": rss_end - rss_warm <= RSS_BOUND_MB,
    }
    report = {
        "benchmark": "soak: closed-loop connections with the soak mix; errors and memory",
        "model": "all-MiniLM-L6-v2 fine-tuned 1 epoch on sample rows"
        if args.model_dir is None
        else str(args.model_dir),
        "max_seq_length": FULL["max_seq_length"],
        "served": {key: served.get(key) for key in ("precision", "provider", "fallback")},
        "settings": {k: v for k, v in vars(args).items() if k not in ("output", "workdir")},
        "machine": describe_machine(("kserve", "onnxruntime", "tokenizers", "uvicorn")),
        "rss_mb": {
            "ready": rss_start,
            "after_warmup": rss_warm,
            "end": rss_end,
            "max_during_soak": max(rss for _, rss in samples),
            "samples": samples,
        },
        "warmup": warmup,
        "best_case": best,
        "soak": figures,
        "targets": targets,
    }
    print(
        f"soak {args.seconds:g} s at {args.connections} connections: {figures['requests']} "
        f"requests ({figures['requests_per_s']:.0f}/s), errors {figures['errors']}, p50 "
        f"{figures['p50_ms']:.1f} ms, p99 {figures['p99_ms']:.1f} ms; RSS MB ready "
        f"{rss_start:.0f}, after warm-up {rss_warm:.0f}, end {rss_end:.0f}, max "
        f"{report['rss_mb']['max_during_soak']:.0f}"
    )
    print(
        f"best case (one sentence per request, {args.connections} connections): "
        f"{best['requests_per_s']:.0f}/s, p50 {best['p50_ms']:.1f} ms, p99 {best['p99_ms']:.1f} ms"
    )
    for kind, v in figures["kinds"].items():
        print(f"  {kind:>12}: {v['requests']} requests {v['statuses']} p50 {v['p50_ms']} ms")
    print("targets: " + ", ".join(f"{k}={'pass' if v else 'FAIL'}" for k, v in targets.items()))
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"figures written to {args.output}")
    return 0 if all(targets.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
