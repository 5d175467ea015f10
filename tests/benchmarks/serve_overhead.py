"""Serving overhead: the predictor at concurrency 8 against the engine it chose, run alone.

bench_serve.py reads the predictor's `/metrics` before and after a load window to learn the
batches it formed and the variant it serves (`batch_totals`, `runtime_labels`); then
`serve_runs.py engine` opens that variant the way the predictor does (the predictor's command
line with `--variant` naming it, parsed by the predictor's parser and loaded by its model
class: the same threads, spinning and graph; named, so that no second probe can pick another
variant) and runs it, in a process of its own, on the sentences the load sends, in batches of
the size the server formed (`batch_plan`), tokenized beforehand, for a window of the same
length (`run_engine_alone`). What the server answered per second over what the engine alone
did is the share of the engine's speed that serving keeps; HTTP, JSON, tokenization,
batching and the event loop cost the rest.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: The predictor's histogram of texts per ONNX Runtime call (components/serve/metrics.py).
BATCH_HISTOGRAM = "textops_inference_batch_texts"
#: The predictor's gauge naming the engine it serves with.
RUNTIME_INFO = "textops_model_runtime_info"
#: The runtime labels that name an engine (those the predictor exports are compared).
SAME_ENGINE_LABELS = ("variant", "engine", "precision", "provider")


def metric_samples(
    exposition: str, family: str, model_name: str
) -> list[tuple[str, dict[str, str], float]]:
    """The samples of one metric family for one model in Prometheus text format.

    Args:
        exposition: A `/metrics` body.
        family: The metric's name (for a histogram, without `_sum`, `_count`, `_bucket`).
        model_name: The `model_name` label to keep.

    Returns:
        (sample name, labels without model_name, value) of each of the model's samples.
    """
    from prometheus_client.parser import text_string_to_metric_families

    found = []
    for metric in text_string_to_metric_families(exposition):
        if metric.name != family:
            continue
        for sample in metric.samples:
            labels = dict(sample.labels)
            if labels.pop("model_name", None) == model_name:
                found.append((sample.name, labels, float(sample.value)))
    return found


def batch_totals(exposition: str, model_name: str) -> tuple[float, float]:
    """(texts, calls) the predictor has run so far: its batch histogram's sum and count
    (0 and 0 before its first call, when the histogram has no series yet)."""
    totals = {
        name: value for name, _, value in metric_samples(exposition, BATCH_HISTOGRAM, model_name)
    }
    return totals.get(f"{BATCH_HISTOGRAM}_sum", 0.0), totals.get(f"{BATCH_HISTOGRAM}_count", 0.0)


def mean_batch(before: tuple[float, float], after: tuple[float, float]) -> float:
    """Texts per call between two `batch_totals` readings.

    Raises:
        ValueError: No call ran between them.
    """
    calls = after[1] - before[1]
    if calls <= 0:
        raise ValueError("the predictor ran no batch between the two readings")
    return (after[0] - before[0]) / calls


def runtime_labels(exposition: str, model_name: str) -> dict[str, str]:
    """The labels of the runtime-info series set to 1: the engine the predictor serves with
    (`ClassifierRuntime.metric_labels`); empty when it exports none."""
    for name, labels, value in metric_samples(exposition, RUNTIME_INFO, model_name):
        if name == RUNTIME_INFO and value == 1:
            return labels
    return {}


def batch_plan(mean: float, texts: int) -> list[int]:
    """Batch sizes whose mean is `mean`, covering at least `texts` texts.

    The sizes are the two whole numbers around `mean`, interleaved so that every prefix's
    mean stays within one text of it (6.25 gives 6, 6, 6, 7, 6, 6, 6, 7...).

    Args:
        mean: Texts per call, at least 1.
        texts: Texts the batches hold at least.

    Raises:
        ValueError: `mean` is below 1.
    """
    if not mean >= 1:
        raise ValueError(f"a batch holds at least one text; got a mean of {mean}")
    sizes: list[int] = []
    total = 0
    while total < texts:
        size = math.floor((len(sizes) + 1) * mean + 1e-9) - math.floor(len(sizes) * mean + 1e-9)
        sizes.append(size)
        total += size
    return sizes


def arrival_order(count: int, concurrency: int, stride: int) -> list[int]:
    """Indices of the load's texts in the order the server receives them when its
    `concurrency` clients keep step: client k sends texts k * stride, k * stride + 1, ...
    (`serve_runs._client`), so step j brings one text of each client. Over `count` steps,
    every client's whole cycle, each text comes `concurrency` times."""
    return [(k * stride + j) % count for j in range(count) for k in range(concurrency)]


def cpu_times(stat: str) -> tuple[int, int]:
    """(busy, all) clock ticks of every CPU of the machine from a /proc/stat body: busy is
    all but idle and iowait (guest time is already inside user and nice)."""
    fields = [int(value) for value in stat.splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    return total - idle, total


def machine_cores_busy(before: tuple[int, int], after: tuple[int, int], cpus: int) -> float:
    """Cores of the machine busy, on average, between two `cpu_times` readings: this
    benchmark's processes and everyone else's (the machine is shared)."""
    busy, total = after[0] - before[0], after[1] - before[1]
    return cpus * busy / total if total > 0 else 0.0


def read_cpu_times() -> tuple[int, int]:
    """`cpu_times` of the machine now."""
    return cpu_times(Path("/proc/stat").read_text())


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user and system) a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime and stime are the stat file's 14th and 15th fields; the split starts at the 3rd.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def engine_args(server_args: Sequence[str], served: dict[str, str]) -> list[str]:
    """The predictor's command line naming the variant it serves (`served`, its runtime
    labels), so that the engine alone is that one; before the predictor named variants, or
    when it exports none, its own command line."""
    variant = served.get("variant")
    return [*server_args, "--variant", variant] if variant else list(server_args)


def same_engine(served: dict[str, str], alone: dict[str, str]) -> bool:
    """Whether two runtime-label sets name the same engine: the labels `SAME_ENGINE_LABELS`
    that either holds agree (how it was chosen, and the version, may differ)."""
    keys = [key for key in SAME_ENGINE_LABELS if key in served or key in alone]
    return bool(keys) and all(served.get(key) == alone.get(key) for key in keys)


def run_engine_alone(
    server_args: Sequence[str], texts: Sequence[str], mean: float, seconds: float, order: list[int]
) -> dict[str, Any]:
    """The predictor's engine, opened as the predictor opens it, run alone for `seconds`.

    Args:
        server_args: The predictor's command line (without --http_port; see `engine_args`),
            parsed by its own parser and loaded by its own model class, so that threads,
            spinning and the engine are the predictor's.
        texts: The load's sentences.
        mean: Texts per call the server formed.
        seconds: The timed window.
        order: The order the texts go into batches (`arrival_order`).

    Returns:
        predictions/s, calls, the engine's name and runtime labels, and the cores it and
        the machine's other users took.
    """
    from textops.components.serve.model import TextClassifierModel
    from textops.components.serve.server import build_parser, settings_from_args

    settings = settings_from_args(build_parser().parse_args(list(server_args)))
    model = TextClassifierModel(settings)
    model.load()
    runtime = model.runtime
    classifier = runtime.classifier
    sizes = batch_plan(mean, len(order))
    batches, start = [], 0
    for size in sizes:
        rows = [texts[order[(start + i) % len(order)]] for i in range(size)]
        batches.append((size, classifier.encode(rows)))  # tokenized before the window
        start += size
    for _, features in batches[:20]:
        classifier.run(features)
    predictions = calls = 0
    cpu_before, machine_before = time.process_time(), read_cpu_times()
    started = time.perf_counter()
    stop = started + seconds
    while time.perf_counter() < stop:
        size, features = batches[calls % len(batches)]
        classifier.run(features)
        predictions += size
        calls += 1
    elapsed = time.perf_counter() - started
    machine = machine_cores_busy(machine_before, read_cpu_times(), os.cpu_count() or 1)
    cores = (time.process_time() - cpu_before) / elapsed
    execution = runtime.execution
    return {
        "engine": str(getattr(execution, "variant", execution.precision)),
        "runtime_labels": runtime.metric_labels(),
        "threads": settings.intra_op_threads,
        "spinning": settings.intra_op_spinning,
        "seconds": elapsed,
        "calls": calls,
        "mean_batch": predictions / calls if calls else None,
        "predictions_per_s": predictions / elapsed,
        "cpu_cores_used": cores,
        "machine_cores_busy": machine,
        "other_cores_busy": max(0.0, machine - cores),
    }


def engine_main(argv: Sequence[str]) -> None:
    """`serve_runs.py engine TEXTS_JSON MEAN SECONDS CONCURRENCY STRIDE -- SERVER_ARGS...`:
    prints `run_engine_alone`'s figures as JSON."""
    split = list(argv).index("--")
    texts_file, mean, seconds, concurrency, stride = argv[:split]
    texts = json.loads(Path(texts_file).read_text())
    order = arrival_order(len(texts), int(concurrency), int(stride))
    figures = run_engine_alone(argv[split + 1 :], texts, float(mean), float(seconds), order)
    print(json.dumps(figures))
