"""Benchmark of the exported graphs against PyTorch eager on all-MiniLM-L6-v2.

    .venv/bin/python tests/benchmarks/bench_export.py --output bench-results/export.json

The model is the default base model, all-MiniLM-L6-v2, with a fresh 2-class head drawn with a
fixed seed: nothing is fine-tuned, which changes no timing (the head's weights do not change
the work) and keeps the run to a few minutes. It is exported by the export step's own code
(`export_bundle`) into a temporary bundle, which gives the fused fp32 `model.onnx`, the INT8
`model.int8.onnx` and the fp16 `model.fp16.onnx`; the unfused graph is traced with the same
`trace.export_onnx`. Then, on the same inputs (real sample sentences, joined and cut to exactly
`sequence` tokens), it times PyTorch eager fp32 (`torch.inference_mode`, the default SDPA
attention), ONNX Runtime fp32 unfused, fp32 fused and INT8, at batch 1, 8 and 32 and sequence
32 and 128, every engine with as many intra-op threads as the machine has cores. Engines take
turns in rounds, so a disturbance on the machine hits all of them alike; each figure is the
median latency of all calls after warm-up, and throughput is batch / median latency.
With CUDA present (torch and onnxruntime-gpu), a GPU section times ONNX Runtime CUDA fp16
against PyTorch eager fp32 on the GPU, transfers to and from the device included for both.

The targets (fp32 fused >= 1.5x PyTorch at batch 1 and >= 1.0x at batch 32 x 128; INT8 >= 3x
at batch 1; CUDA fp16 >= 2x PyTorch CUDA fp32) are checked, and the exit status is 1 when one
is missed. `--compare-int8` also times the four INT8 recipes (quantized from the fused or the
unfused graph, per-channel or per-tensor), the measurement behind `variants.INT8_SOURCE`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from machine import describe_machine

BATCHES = (1, 8, 32)
SEQUENCES = (32, 128)
MAX_SEQ_LENGTH = 128
SEED = 0
#: Rows of the validation split the export checks parity on, and of its reference sample.
VALIDATION_ROWS = 300
REFERENCE_ROWS = 300
#: Speed-up over PyTorch eager (its median latency / the engine's) each target asks for.
TARGET_FP32_BATCH1 = 1.5
TARGET_FP32_B32_S128 = 1.0
TARGET_INT8_BATCH1 = 3.0
TARGET_FP16_CUDA = 2.0
#: Timing: per shape, rounds of each engine in turn; each turn runs at least `CALLS_PER_TURN`
#: calls and at least `TURN_SECONDS` seconds.
ROUNDS = 5
CALLS_PER_TURN = 3
TURN_SECONDS = 0.5
WARMUP_CALLS = 2
PAUSE_SECONDS = 0.1

Runner = Callable[[], Any]


def cores() -> int:
    """CPUs this process may run on (what ONNX Runtime and torch should use)."""
    return len(os.sched_getaffinity(0))


def build_model(directory: Path) -> Path:
    """all-MiniLM-L6-v2 with a fresh, seeded 2-class head, saved as the train step saves it."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from textops.components.common.config import DEFAULT_BASE_MODEL, resolve_base_model
    from textops.components.common.labels import LabelMap

    base = resolve_base_model(DEFAULT_BASE_MODEL)
    labels = LabelMap(("negative", "positive"))
    torch.manual_seed(SEED)
    model = AutoModelForSequenceClassification.from_pretrained(
        base,
        num_labels=2,
        id2label=dict(enumerate(labels.names)),
        label2id={name: i for i, name in enumerate(labels.names)},
    )
    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.model_max_length = MAX_SEQ_LENGTH
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    labels.save(directory / "labels.json")
    return directory


def write_splits(directory: Path) -> dict[str, Path]:
    """Validation and reference (train) splits drawn from the bundled sample data."""
    import pandas as pd

    from textops.components.common.config import sample_data_path

    frame = pd.read_csv(sample_data_path(), dtype=str).sample(
        n=VALIDATION_ROWS + REFERENCE_ROWS, random_state=SEED
    )
    paths = {"validation": directory / "validation.parquet", "train": directory / "train.parquet"}
    frame.iloc[:VALIDATION_ROWS].to_parquet(paths["validation"], index=False)
    frame.iloc[VALIDATION_ROWS:].to_parquet(paths["train"], index=False)
    return paths


def export_graphs(work: Path) -> dict[str, Any]:
    """Run the export step on the model; return the graphs' paths and the bundle's metadata."""
    from textops.components.common.bundle import ModelBundle
    from textops.components.common.config import DEFAULT_BASE_MODEL
    from textops.components.common.labels import LabelMap
    from textops.components.common.onnx_classifier import encode_texts, load_tokenizer
    from textops.components.export.onnx_export import export_bundle
    from textops.components.export.trace import (
        export_onnx,
        graph_inputs,
        load_fast_tokenizer,
        load_model,
    )

    model_dir = build_model(work / "model")
    splits = write_splits(work)
    started = time.perf_counter()
    export_bundle(
        model_dir=model_dir,
        validation_path=splits["validation"],
        reference_source_path=splits["train"],
        training={
            "base_model": DEFAULT_BASE_MODEL,
            "data_fingerprint": "bench",
            "max_seq_length": MAX_SEQ_LENGTH,
            "seed": SEED,
        },
        evaluation={},
        bundle_dir=work / "bundle",
    )
    export_seconds = time.perf_counter() - started
    bundle = ModelBundle.open(work / "bundle")

    # The graph before fusion, traced exactly as export_bundle traces it.
    tokenizer = load_fast_tokenizer(model_dir)
    model = load_model(model_dir, LabelMap.load(model_dir / "labels.json"), MAX_SEQ_LENGTH)
    names = graph_inputs(tokenizer, model)
    example = encode_texts(
        load_tokenizer(bundle.tokenizer_path, MAX_SEQ_LENGTH),
        ("a short text", "a somewhat longer text, so that the batch holds padding"),
        dict.fromkeys(names, np.int64),
    )
    export_onnx(model, example, work / "model.unfused.onnx")

    graphs = {
        "unfused": work / "model.unfused.onnx",
        "fused": bundle.model_path,
        "int8": bundle.int8_model_path,
        "fp16": bundle.fp16_model_path,
    }
    if graphs["int8"] is None:
        # The random head may lose points in INT8 on true labels; time the same recipe anyway.
        graphs["int8"] = _quantize_as_export_does(graphs, work)
    return {
        "model_dir": model_dir,
        "graphs": graphs,
        "int8_from_bundle": bundle.int8_model_path is not None,
        "metadata": bundle.metadata,
        "export_seconds": export_seconds,
    }


def _quantize_as_export_does(graphs: dict[str, Any], work: Path) -> Path:
    from textops.components.export import variants
    from textops.components.export.optimize import quantize_int8

    target = work / "model.int8.onnx"
    source = graphs["fused"] if variants.INT8_SOURCE == "fused" else graphs["unfused"]
    quantize_int8(source, target, per_channel=variants.INT8_PER_CHANNEL)
    return target


def int8_recipes(graphs: dict[str, Any], work: Path) -> dict[str, Path]:
    """The four INT8 recipes `--compare-int8` times."""
    from textops.components.export.optimize import quantize_int8

    recipes = {}
    for source in ("unfused", "fused"):
        for per_channel in (False, True):
            name = f"int8_{source}_{'per_channel' if per_channel else 'per_tensor'}"
            recipes[name] = work / f"{name}.onnx"
            quantize_int8(graphs[source], recipes[name], per_channel=per_channel)
    return recipes


def make_inputs(model_dir: Path, batch: int, sequence: int) -> dict[str, np.ndarray]:
    """`batch` rows of real text, each exactly `sequence` tokens (special tokens included)."""
    import pandas as pd
    from transformers import AutoTokenizer

    from textops.components.common.config import sample_data_path

    sentences = pd.read_csv(sample_data_path(), dtype=str)["text"].tolist()
    # Consecutive sentences joined: long enough to fill 128 tokens, different in every row.
    texts = [" ".join(sentences[i * 12 : i * 12 + 12]) for i in range(batch)]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    encoded = tokenizer(
        texts, padding="max_length", truncation=True, max_length=sequence, return_tensors="np"
    )
    return {name: np.asarray(encoded[name], dtype=np.int64) for name in encoded}


def torch_runner(model: Any, inputs: dict[str, np.ndarray], device: str) -> Runner:
    """One PyTorch eager call; on CUDA it includes the copies to and from the device."""
    import torch

    host = {name: torch.from_numpy(array) for name, array in inputs.items()}

    def run() -> Any:
        with torch.inference_mode():
            feed = {name: tensor.to(device) for name, tensor in host.items()}
            return model(**feed).logits.cpu()

    return run


def ort_runner(session: Any, inputs: dict[str, np.ndarray]) -> Runner:
    """One ONNX Runtime call on the graph's inputs (numpy in, numpy out)."""
    feed = {node.name: inputs[node.name] for node in session.get_inputs()}
    return lambda: session.run(None, feed)


def ort_session(path: Path, providers: list[str]) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = cores()
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


def time_engines(runners: dict[str, Runner], sync: Callable[[], None]) -> dict[str, list[float]]:
    """Per-call latencies (seconds) of each engine, measured in interleaved rounds.

    Each turn starts after a pause and with one untimed call: ONNX Runtime's and OpenMP's
    worker threads spin for a while after a call, and on a small machine the previous
    engine's spinning threads would otherwise slow the next engine's first calls.
    """
    for run in runners.values():
        for _ in range(WARMUP_CALLS):
            run()
    sync()
    latencies: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(ROUNDS):
        for name, run in runners.items():
            time.sleep(PAUSE_SECONDS)
            run()
            sync()
            turn_started = time.perf_counter()
            calls = 0
            while calls < CALLS_PER_TURN or time.perf_counter() - turn_started < TURN_SECONDS:
                started = time.perf_counter()
                run()
                sync()
                latencies[name].append(time.perf_counter() - started)
                calls += 1
    return latencies


def summarise_shape(batch: int, latencies: dict[str, list[float]]) -> dict[str, Any]:
    """Median latency, throughput and speed-up over PyTorch of each engine at one shape."""
    baseline = statistics.median(latencies["pytorch"])
    figures = {}
    for name, values in latencies.items():
        median = statistics.median(values)
        figures[name] = {
            "p50_ms": 1000 * median,
            "p90_ms": 1000 * float(np.percentile(values, 90)),
            "calls": len(values),
            "sequences_per_s": batch / median,
            "speedup_vs_pytorch": baseline / median,
        }
    return figures


def measure_cpu(
    model_dir: Path, graphs: dict[str, Path], extra: dict[str, Path]
) -> dict[str, dict[str, Any]]:
    """Every CPU engine at every shape."""
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForSequenceClassification

    torch.set_num_threads(cores())
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    cpu = ["CPUExecutionProvider"]
    sessions = {name: ort_session(graphs[name], cpu) for name in ("unfused", "fused", "int8")}
    sessions.update({name: ort_session(path, cpu) for name, path in extra.items()})
    results = {}
    shapes = [(b, s) for b in BATCHES for s in SEQUENCES]
    for batch, sequence in tqdm(shapes, desc="cpu shapes", unit="shape"):
        inputs = make_inputs(model_dir, batch, sequence)
        runners = {"pytorch": torch_runner(model, inputs, "cpu")}
        runners.update({name: ort_runner(s, inputs) for name, s in sessions.items()})
        latencies = time_engines(runners, sync=lambda: None)
        results[f"{batch}x{sequence}"] = summarise_shape(batch, latencies)
    return results


def measure_gpu(model_dir: Path, fp16: Path | None) -> dict[str, dict[str, Any]] | None:
    """ONNX Runtime CUDA fp16 against PyTorch eager fp32 on CUDA; None without CUDA."""
    import onnxruntime as ort
    import torch
    from transformers import AutoModelForSequenceClassification

    if not torch.cuda.is_available() or fp16 is None:
        return None
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return None
    session = ort_session(fp16, ["CUDAExecutionProvider", "CPUExecutionProvider"])
    if session.get_providers()[0] != "CUDAExecutionProvider":
        return None
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval().to("cuda")
    results = {}
    for batch in BATCHES:
        for sequence in SEQUENCES:
            inputs = make_inputs(model_dir, batch, sequence)
            runners = {
                "pytorch": torch_runner(model, inputs, "cuda"),
                "fp16_cuda": ort_runner(session, inputs),
            }
            latencies = time_engines(runners, sync=torch.cuda.synchronize)
            results[f"{batch}x{sequence}"] = summarise_shape(batch, latencies)
    return results


def check_targets(cpu: dict[str, Any], gpu: dict[str, Any] | None) -> dict[str, bool]:
    """Each target of the issue, pass or fail."""
    targets = {}
    for sequence in SEQUENCES:
        shape = cpu[f"1x{sequence}"]
        targets[f"fp32_fused_1x{sequence}_at_least_{TARGET_FP32_BATCH1}x"] = (
            shape["fused"]["speedup_vs_pytorch"] >= TARGET_FP32_BATCH1
        )
        targets[f"int8_1x{sequence}_at_least_{TARGET_INT8_BATCH1}x"] = (
            shape["int8"]["speedup_vs_pytorch"] >= TARGET_INT8_BATCH1
        )
    targets[f"fp32_fused_32x128_at_least_{TARGET_FP32_B32_S128}x"] = (
        cpu["32x128"]["fused"]["speedup_vs_pytorch"] >= TARGET_FP32_B32_S128
    )
    for shape_name, shape in (gpu or {}).items():
        targets[f"fp16_cuda_{shape_name}_at_least_{TARGET_FP16_CUDA}x"] = (
            shape["fp16_cuda"]["speedup_vs_pytorch"] >= TARGET_FP16_CUDA
        )
    return targets


def machine() -> dict[str, Any]:
    """Where the figures were measured."""
    return describe_machine(
        ("torch", "transformers", "onnx", "onnxruntime", "onnxruntime-gpu", "numpy")
    )


def print_table(title: str, results: dict[str, dict[str, Any]]) -> None:
    print(f"\n{title}: median latency ms, sequences/s, speed-up vs PyTorch eager")
    engines = list(next(iter(results.values())))
    print(f"{'batch x seq':>11} " + " ".join(f"{name:>26}" for name in engines))
    for shape, figures in results.items():
        cells = [
            f"{f['p50_ms']:8.2f} {f['sequences_per_s']:8.0f}/s {f['speedup_vs_pytorch']:5.2f}x"
            for f in figures.values()
        ]
        print(f"{shape:>11} " + " ".join(f"{cell:>26}" for cell in cells))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, help="where the JSON figures go")
    parser.add_argument(
        "--compare-int8", action="store_true", help="also time the four INT8 recipes"
    )
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a temporary one)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(dir=args.workdir) as scratch:
        work = Path(scratch)
        exported = export_graphs(work)
        graphs = exported["graphs"]
        extra = int8_recipes(graphs, work) if args.compare_int8 else {}
        cpu = measure_cpu(exported["model_dir"], graphs, extra)
        gpu = measure_gpu(exported["model_dir"], graphs["fp16"])
        sizes = {name: path.stat().st_size for name, path in graphs.items() if path is not None}

    bundle = exported["metadata"]
    report = {
        "benchmark": "ONNX export: ONNX Runtime against PyTorch eager",
        "model": "all-MiniLM-L6-v2 with a fresh 2-class head (seed 0), not fine-tuned",
        "machine": machine(),
        "threads": cores(),
        "export_seconds": exported["export_seconds"],
        "int8_from_bundle": exported["int8_from_bundle"],
        "bundle": {key: bundle.get(key) for key in ("parity", "fusion", "int8", "fp16")},
        "graph_bytes": sizes,
        "cpu": cpu,
        "gpu": gpu,
        "targets": check_targets(cpu, gpu),
    }
    print_table("CPU", cpu)
    if gpu is not None:
        print_table("GPU", gpu)
    else:
        print("\nGPU: no CUDA device with onnxruntime-gpu here; GPU section skipped")
    print(
        "\ntargets: "
        + ", ".join(f"{k}={'pass' if v else 'FAIL'}" for k, v in report["targets"].items())
    )
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
        print(f"figures written to {args.output}")
    return 0 if all(report["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
