"""Benchmark: ordinary predictions' p99 while worst-case requests stream in, against the quiet
p99 measured in the same run.

    .venv/bin/python tests/benchmarks/bench_serve_costs.py --output bench-results/serve_costs.json
    .venv/bin/python tests/benchmarks/bench_serve_costs.py --seconds 4 --rounds 1   # a smoke run

The model is bench_serve.py's (all-MiniLM-L6-v2 fine-tuned briefly and exported, 128 tokens;
or `--model-dir`), served by the textops predictor with its defaults. A load generator in a
process of its own runs closed-loop V1 requests of one real sample sentence each at
`--concurrency` (8) for `--seconds` (15):

- quiet: nothing else;
- stressed: while a second process streams worst-case requests: a client predicting a 1 MB
  text `--stream-rate` (2) times a second, and one explaining a 1 MB text after another;
- flood, for information: the same two clients with no pause, each sending its next request
  as soon as the last is answered. Cut, a 1 MB text costs what any text of max_seq_length
  tokens costs, several times a short one, and predictions are answered in the order they
  come: a client sending such texts back to back takes its turns like any client, at that
  cost each, as it would with ordinary long texts (rate-limit such a client at the ingress);
- biggest_body, for information: a client sending the biggest text the 4 MiB body limit lets
  through, back to back. Its cost is reading and decoding 4 MB of JSON on the event loop,
  which the body limit bounds.

The runs alternate for `--rounds` (3) rounds, since this VM's speed drifts over minutes; each
figure is the median of the rounds. Also measured: one 1 MB explain on the idle server, and
the server's RSS after warm-up and at the end.

Targets: the stressed p99 is at most 2x the quiet p99; no ordinary request fails; every
worst-case request is answered 200, or 503 naming the explain setting that refused it; at
least one 1 MB explanation is answered while the stream runs. The exit status is 1 when a
target is missed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from bench_serve import FULL, fine_tune_and_export, load, load_texts, start, stop
from cost_runs import MEGABYTE_OF_WORDS, V1_EXPLAIN
from machine import describe_machine
from serve_runs import MODEL_NAME

COST_RUNS = Path(__file__).resolve().parent / "cost_runs.py"
TARGET_P99_RATIO = 2.0
#: Seconds the worst-case stream runs before the measured load starts (and after it ends).
STREAM_LEAD_S = 2.0
#: Each stressed run: whether its stream is paced (--stream-rate) and the worst-case kinds
#: (`cost_runs.WORST_CASE`) it sends, one client each.
STREAMS: dict[str, tuple[bool, tuple[str, ...]]] = {
    "stressed": (True, ("predict_1mb", "explain_1mb")),
    "flood": (False, ("predict_1mb", "explain_1mb")),
    "biggest_body": (False, ("predict_4mb",)),
}
PHASES = ("quiet", *STREAMS)


def rss_mb(pid: int) -> float:
    """A process's resident set size, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def stressed_load(
    port: int, args: argparse.Namespace, texts_file: Path, kinds: tuple[str, ...], rate: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ordinary load while worst-case requests of `kinds` stream in, each kind at most
    `rate` a second (0: back to back): (ordinary figures, the stream's)."""
    stream_seconds = str(args.seconds + 2 * STREAM_LEAD_S)
    stream = subprocess.Popen(
        [sys.executable, str(COST_RUNS), "worst", str(port), stream_seconds, str(rate), *kinds],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(STREAM_LEAD_S)
    ordinary = load(port, args.concurrency, args.seconds, texts_file)
    # The stream's clients wait for their last answers, an explanation's included.
    output, _ = stream.communicate(timeout=300)
    if stream.returncode != 0:
        raise RuntimeError(f"the worst-case stream failed with {stream.returncode}")
    return ordinary, json.loads(output)


def explain_alone(port: int) -> dict[str, Any]:
    """One 1 MB explanation on the idle server: its status and seconds."""
    started = time.perf_counter()
    answer = httpx.post(
        f"http://127.0.0.1:{port}{V1_EXPLAIN}",
        json={"instances": [MEGABYTE_OF_WORDS]},
        timeout=300,
    )
    return {"status": answer.status_code, "seconds": time.perf_counter() - started}


def measure(bundle: Path, work: Path, args: argparse.Namespace, texts_file: Path) -> dict[str, Any]:
    """Warm up, then alternate the quiet and stressed runs; the figures of each."""
    command = [sys.executable, "-m", "textops.components.serve", "--bundle", str(bundle)]
    command += ["--model_name", MODEL_NAME]
    if args.precision is not None:
        command += ["--precision", args.precision]
    process, port, _ = start(command, work / "server.log", {})
    try:
        metadata = httpx.get(f"http://127.0.0.1:{port}/v2/models/{MODEL_NAME}", timeout=30)
        served = metadata.json().get("parameters", {})
        load(port, args.concurrency, min(3.0, args.seconds), texts_file)
        alone = explain_alone(port)  # also warms the explain path up
        rss_warm = rss_mb(process.pid)
        rounds = []
        for _ in range(args.rounds):
            figures: dict[str, Any] = {
                "quiet": load(port, args.concurrency, args.seconds, texts_file)
            }
            for phase, (paced, kinds) in STREAMS.items():
                rate = args.stream_rate if paced else 0.0
                figures[phase], figures[f"{phase}_stream"] = stressed_load(
                    port, args, texts_file, kinds, rate
                )
            rounds.append(figures)
            print(
                f"round {len(rounds)}: p99 ms "
                + ", ".join(f"{phase} {figures[phase]['p99_ms']:.1f}" for phase in PHASES)
                + "; streams "
                + "; ".join(_stream_line(figures[f"{phase}_stream"]) for phase in STREAMS),
                flush=True,
            )
        rss_end = rss_mb(process.pid)
    finally:
        stop(process)
    return {
        "served": {key: served.get(key) for key in ("precision", "provider", "fallback")},
        "explain_1mb_alone": alone,
        "rounds": rounds,
        "rss_mb": [rss_warm, rss_end],
    }


def _stream_line(stream: dict[str, Any]) -> str:
    return ", ".join(f"{kind} {v['statuses']}" for kind, v in stream["kinds"].items())


def summarise(figures: dict[str, Any]) -> dict[str, Any]:
    """Medians of the rounds, the streams' answers summed, and the targets."""
    rounds = figures["rounds"]
    summary: dict[str, Any] = {}
    for phase in PHASES:
        for key in ("p50_ms", "p99_ms", "requests_per_s"):
            summary[f"{phase}_{key}"] = statistics.median(r[phase][key] for r in rounds)
    for phase in STREAMS:
        summary[f"{phase}_p99_ratio"] = summary[f"{phase}_p99_ms"] / summary["quiet_p99_ms"]
    statuses: dict[str, dict[str, int]] = {}
    refusals_named = True
    for r in rounds:
        for phase in STREAMS:
            for kind, v in r[f"{phase}_stream"]["kinds"].items():
                counted = statuses.setdefault(f"{phase}:{kind}", {})
                for status, n in v["statuses"].items():
                    counted[status] = counted.get(status, 0) + n
                refusals_named &= all(
                    e.startswith("503") and "--explain-" in e for e in v["examples"]
                )
    summary["stream_statuses"] = statuses
    ordinary_errors = sum(r[phase]["errors"] for r in rounds for phase in PHASES)
    explained = statuses.get("stressed:explain_1mb", {}).get("200", 0)
    summary["targets"] = {
        f"stressed_p99_at_most_{TARGET_P99_RATIO:g}x_quiet": summary["stressed_p99_ratio"]
        <= TARGET_P99_RATIO,
        "no_ordinary_errors": ordinary_errors == 0,
        "worst_case_answered_or_refused_by_name": refusals_named,
        "explanations_answered_under_the_stream": explained > 0,
    }
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, help="where the JSON figures go")
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds of load per run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of quiet and stressed runs")
    parser.add_argument("--concurrency", type=int, default=8, help="ordinary clients")
    parser.add_argument(
        "--stream-rate",
        type=float,
        default=2.0,
        help="1 MB texts predicted per second in the stressed runs (0: back to back)",
    )
    parser.add_argument(
        "--precision",
        choices=("fp32", "int8"),
        help="the model file to serve (default: the predictor's choice for the bundle)",
    )
    parser.add_argument("--model-dir", type=Path, help="a train step output to serve")
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a temporary one)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(dir=args.workdir) as scratch:
        work = Path(scratch)
        bundle = fine_tune_and_export(work, FULL, args.model_dir)
        texts_file = work / "texts.json"
        texts_file.write_text(json.dumps(load_texts()))
        figures = measure(bundle, work, args, texts_file)
    summary = summarise(figures)
    report = {
        "benchmark": "ordinary predictions' p99 under a stream of worst-case requests",
        "model": "all-MiniLM-L6-v2 fine-tuned 1 epoch on sample rows"
        if args.model_dir is None
        else str(args.model_dir),
        "max_seq_length": FULL["max_seq_length"],
        "settings": {k: v for k, v in vars(args).items() if k not in ("output", "workdir")},
        "machine": describe_machine(("kserve", "onnxruntime", "tokenizers", "uvicorn")),
        **summary,
        **figures,
    }
    print(
        f"p99 quiet {summary['quiet_p99_ms']:.1f} ms, stressed "
        f"{summary['stressed_p99_ms']:.1f} ms ({summary['stressed_p99_ratio']:.2f}x; target "
        f"<= {TARGET_P99_RATIO:g}x); p50 {summary['quiet_p50_ms']:.1f} -> "
        f"{summary['stressed_p50_ms']:.1f} ms; flood p99 {summary['flood_p99_ms']:.1f} ms "
        f"({summary['flood_p99_ratio']:.2f}x); biggest bodies p99 "
        f"{summary['biggest_body_p99_ms']:.1f} ms ({summary['biggest_body_p99_ratio']:.2f}x)"
    )
    print(f"worst-case answers: {summary['stream_statuses']}")
    print(f"1 MB explain alone: {figures['explain_1mb_alone']}; RSS MB {figures['rss_mb']}")
    print(f"served: {figures['served']}")
    print(
        "targets: "
        + ", ".join(f"{k}={'pass' if v else 'FAIL'}" for k, v in summary["targets"].items())
    )
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"figures written to {args.output}")
    return 0 if all(summary["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
