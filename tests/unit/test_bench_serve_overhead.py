"""The serving overhead benchmark's pure parts: reading the predictor's /metrics, the batch
sizes the engine alone runs, and the order of the load's texts."""

from __future__ import annotations

import importlib
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def overhead() -> Iterator[ModuleType]:
    """serve_overhead, imported as the benchmark scripts import it: from their folder."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module("serve_overhead")
    finally:
        sys.path.remove(str(BENCHMARKS))
        sys.modules.pop("serve_overhead", None)


def exposition(batches: dict[str, list[int]], runtime: dict[str, str] | None = None) -> str:
    """A /metrics body as the predictor's registry writes it: the batch histogram with the
    predictor's buckets, one series per model, and optionally the runtime-info gauge."""
    registry = CollectorRegistry()
    histogram = Histogram(
        "textops_inference_batch_texts",
        "Texts per ONNX Runtime call.",
        ["model_name"],
        buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        registry=registry,
    )
    for model, sizes in batches.items():
        for size in sizes:
            histogram.labels(model_name=model).observe(size)
    if runtime is not None:
        gauge = Gauge(
            "textops_model_runtime_info",
            "How the served model version runs.",
            ["model_name", *runtime],
            registry=registry,
        )
        gauge.labels("clf", *runtime.values()).set(1)
        gauge.labels("clf", *(f"old-{value}" for value in runtime.values())).set(0)
    return generate_latest(registry).decode()


def test_batch_totals_read_one_models_histogram(overhead: ModuleType) -> None:
    body = exposition({"clf": [1, 7, 8, 8], "other": [64, 64]})

    assert overhead.batch_totals(body, "clf") == (24.0, 4.0)
    assert overhead.batch_totals(body, "other") == (128.0, 2.0)
    # Before the predictor's first call the histogram has no series for the model.
    assert overhead.batch_totals(body, "absent") == (0.0, 0.0)


def test_mean_batch_counts_only_the_calls_between_readings(overhead: ModuleType) -> None:
    before = overhead.batch_totals(exposition({"clf": [1, 1, 1]}), "clf")
    after = overhead.batch_totals(exposition({"clf": [1, 1, 1, 6, 7, 8]}), "clf")

    assert overhead.mean_batch(before, after) == pytest.approx(7.0)
    with pytest.raises(ValueError, match="no batch"):
        overhead.mean_batch(after, after)


def test_runtime_labels_are_the_series_set_to_one(overhead: ModuleType) -> None:
    labels = {"version": "3", "provider": "CPUExecutionProvider", "precision": "int8"}
    body = exposition({"clf": [1]}, runtime=labels)

    assert overhead.runtime_labels(body, "clf") == labels
    assert overhead.runtime_labels(body, "other") == {}


@pytest.mark.parametrize("mean", [1.0, 6.25, 7.6, 8.0, 31.9])
def test_batch_plan_has_the_mean_and_keeps_to_its_two_sizes(
    overhead: ModuleType, mean: float
) -> None:
    sizes = overhead.batch_plan(mean, 500)

    assert sum(sizes) >= 500 and sum(sizes) - sizes[-1] < 500
    assert set(sizes) <= {int(mean), int(mean) + 1}
    for count in range(1, len(sizes) + 1):  # every prefix stays within a text of the mean
        assert abs(sum(sizes[:count]) - count * mean) < 1


def test_batch_plan_refuses_a_mean_below_one(overhead: ModuleType) -> None:
    with pytest.raises(ValueError, match="at least one text"):
        overhead.batch_plan(0.5, 10)


def test_arrival_order_interleaves_the_clients_through_their_whole_cycle(
    overhead: ModuleType,
) -> None:
    order = overhead.arrival_order(500, 8, 37)

    assert order[:9] == [0, 37, 74, 111, 148, 185, 222, 259, 1]
    assert Counter(order) == dict.fromkeys(range(500), 8)


def test_cpu_seconds_grow_with_this_process_s_work(overhead: ModuleType) -> None:
    before = overhead.cpu_seconds(os.getpid())
    spent = time.process_time()
    while time.process_time() - spent < 0.2:
        pass
    assert overhead.cpu_seconds(os.getpid()) - before >= 0.1


def test_cpu_times_count_all_but_idle_and_iowait_as_busy(overhead: ModuleType) -> None:
    stat = "cpu  100 5 20 800 50 0 10 15 7 0\ncpu0 50 2 10 400 25 0 5 7 3 0\n"

    # user, nice, system, irq, softirq, steal are busy; guest is inside user already.
    assert overhead.cpu_times(stat) == (150, 1000)


def test_machine_cores_busy_scales_the_busy_share_to_the_cpus(overhead: ModuleType) -> None:
    assert overhead.machine_cores_busy((100, 1000), (250, 1200), 2) == pytest.approx(1.5)
    assert overhead.machine_cores_busy((100, 1000), (100, 1000), 2) == 0.0
    busy, total = overhead.read_cpu_times()
    assert 0 <= busy <= total


def test_engine_args_name_the_served_variant(overhead: ModuleType) -> None:
    server = ["--bundle", "b", "--model_name", "clf"]

    assert overhead.engine_args(server, {"variant": "openvino-int8", "precision": "int8"}) == [
        *server,
        "--variant",
        "openvino-int8",
    ]
    # A predictor that names no variant: its own command line.
    assert overhead.engine_args(server, {"precision": "int8"}) == server


def test_same_engine_compares_what_names_the_engine_not_how_it_was_chosen(
    overhead: ModuleType,
) -> None:
    served = {"version": "3", "variant": "int8", "engine": "onnxruntime", "precision": "int8"}
    named = {**served, "version": "bundle", "variant_choice": "setting"}

    assert overhead.same_engine(served, {**named, "variant_choice": "probe"})
    assert overhead.same_engine(served, named)
    assert not overhead.same_engine(served, {**named, "variant": "openvino-int8"})
    assert not overhead.same_engine({}, {})
