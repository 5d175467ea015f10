"""Benchmark: training at a scale that fills a GPU, textops's trainer against a tuned HF `Trainer`.

Run it as a script, not as a test:

    .venv/bin/python tests/benchmarks/bench_train_scale.py --device cuda --repeats 3

A BERT-base-size encoder with a classification head, built from its config (random weights:
nothing to download), trains on 50,000 texts of 20-120 tokens made by joining the bundled
sample sentences, once with textops's `train_classifier` and once with Hugging Face `Trainer`
configured as its performance guide advises (bf16, length grouping, fused AdamW, data-loading
workers, pinned memory; `torch_compile` with `--hf-compile`). Each run happens in a fresh
process (`scale_runs.py`) from the same saved model directory, with the same epochs, batch
size, sequence length, learning-rate schedule and seed.

On CPU the same benchmark runs at a small size (a 2-layer encoder, 512 texts) so that it is
tested without a GPU; its targets are for a GPU and are reported as not measured there.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# The helpers lie beside this script, which Python puts first on the import path.
from bench_train import cpu_probe_ms, machine_info, median_run, source_info
from scale_runs import MAX_SEQ_LENGTH, SEED, chosen_techniques, optimisation_settings
from train_runs import non_embedding_parameters

#: Where each run happens, in a process of its own.
RUNS_SCRIPT = Path(__file__).resolve().parent / "scale_runs.py"
#: Encoder sizes: `BertConfig` overrides. base is BertConfig()'s defaults (12 layers, hidden
#: 768, 12 heads, intermediate 3072); tiny keeps the vocabulary and makes a CPU run take seconds.
SIZES: dict[str, dict[str, Any]] = {
    "base": {},
    "tiny": {
        "num_hidden_layers": 2,
        "hidden_size": 128,
        "num_attention_heads": 2,
        "intermediate_size": 512,
    },
}
#: Tokens per joined text, [CLS] and [SEP] included: drawn log-normally (many short texts, a
#: long tail, as reviews and support messages come) and clipped to this range.
TEXT_TOKENS = (20, 120)
TEXT_TOKENS_MEDIAN = 40
TEXT_TOKENS_SIGMA = 0.5
#: Share of the sample sentences kept apart to build validation texts from, so that
#: validation measures texts whose sentences were never trained on.
VALIDATION_SENTENCES = 0.2
#: The issue's targets, for a GPU at full size: textops against the best tuned HF run, and
#: textops's model FLOPs utilisation.
TARGET_THROUGHPUT_RATIO = 1.2
TARGET_MFU = 0.30
FULL_SIZE = {"size": "base", "rows": 50_000}
#: Defaults that differ by device: the full size on a GPU, a few minutes of 2 CPU cores on CPU.
DEFAULTS = {
    "cuda": {"size": "base", "rows": 50_000, "batch_size": 64},
    "cpu": {"size": "tiny", "rows": 512, "batch_size": 16},
}
#: Figures kept for every repeat when there are several.
REPEAT_FIELDS = (
    "train_samples_per_second",
    "train_tokens_per_second",
    "train_seconds",
    "peak_rss_mib",
    "validation_accuracy",
    "cpu_probe_ms",
)


def sentence_pools(seed: int) -> tuple[Any, Any]:
    """The sample sentences split (stratified, seeded) into the train and validation pools."""
    import pandas as pd
    from sklearn.model_selection import train_test_split

    from textops.components.common.config import sample_data_path

    frame = pd.read_csv(sample_data_path(), dtype=str)[["text", "label"]]
    # A few sentences occur twice; once each, so that no validation sentence is trained on.
    frame = frame.drop_duplicates("text")
    train, validation = train_test_split(
        frame, test_size=VALIDATION_SENTENCES, stratify=frame["label"], random_state=seed
    )
    return train.reset_index(drop=True), validation.reset_index(drop=True)


def joined_texts(pool: Any, count: int, tokenizer: Any, rng: Any) -> tuple[list[str], list[str]]:
    """`count` texts of sentences from `pool` joined to a drawn length; each takes the label of
    its first sentence.

    Sentences are appended until the text reaches its drawn length, and the last one is cut at
    the token where that length is reached.
    """
    import numpy as np

    sentences = pool["text"].astype(str).tolist()
    names = pool["label"].astype(str).tolist()
    # WordPiece splits at spaces first, so a joined text has the sum of its sentences' tokens.
    sizes = [len(ids) for ids in tokenizer(sentences, add_special_tokens=False)["input_ids"]]
    low, high = TEXT_TOKENS
    drawn = rng.lognormal(np.log(TEXT_TOKENS_MEDIAN), TEXT_TOKENS_SIGMA, size=count)
    targets = np.clip(np.rint(drawn), low, high).astype(int) - 2  # room for [CLS] and [SEP]
    texts, labels = [], []
    for target in targets:
        picked, tokens = [], 0
        while tokens < target:
            index = int(rng.integers(len(sentences)))
            picked.append(index)
            tokens += sizes[index]
        texts.append(" ".join(sentences[i] for i in picked))
        labels.append(names[picked[0]])
    offsets = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    for i, target in enumerate(targets):
        spans = offsets["offset_mapping"][i]
        if len(spans) > target:
            texts[i] = texts[i][: spans[target - 1][1]]
    return texts, labels


def length_summary(tokenizer: Any, texts: list[str]) -> dict[str, Any]:
    """Tokens per text as the runs see them ([CLS] and [SEP] in, truncated at the window)."""
    import numpy as np

    encoded = tokenizer(texts, truncation=True, max_length=MAX_SEQ_LENGTH)
    lengths = np.array([len(ids) for ids in encoded["input_ids"]])
    return {
        "real_tokens": int(lengths.sum()),
        "min_tokens": int(lengths.min()),
        "mean_tokens": round(float(lengths.mean()), 1),
        "median_tokens": float(np.median(lengths)),
        "p90_tokens": round(float(np.percentile(lengths, 90)), 1),
        "max_tokens": int(lengths.max()),
    }


def prepare_data(directory: Path, rows: int, validation_rows: int, tokenizer: Any) -> dict:
    """Write train.parquet and validation.parquet of joined texts; what they hold."""
    import numpy as np
    import pandas as pd

    train_pool, validation_pool = sentence_pools(SEED)
    rng = np.random.default_rng(SEED)
    info: dict[str, Any] = {
        "source": "bundled UCI Sentiment Labelled Sentences, joined",
        "text_tokens": {
            "range": list(TEXT_TOKENS),
            "drawn": f"log-normal, median {TEXT_TOKENS_MEDIAN}, sigma {TEXT_TOKENS_SIGMA}, "
            "clipped to the range",
        },
        "label": "the first sentence's",
        "validation": f"texts built only from the {VALIDATION_SENTENCES:.0%} of sentences held "
        "out of the training texts",
    }
    for split, pool, count in (
        ("train", train_pool, rows),
        ("validation", validation_pool, validation_rows),
    ):
        texts, labels = joined_texts(pool, count, tokenizer, rng)
        frame = pd.DataFrame({"text": texts, "label": labels})
        frame.to_parquet(directory / f"{split}.parquet", index=False)
        info[split] = {
            "rows": count,
            "sentences_in_pool": len(pool),
            "label_shares": frame["label"].value_counts(normalize=True).round(4).to_dict(),
            **length_summary(tokenizer, texts),
        }
    return info


def build_model(directory: Path, size: str, label_names: list[str], tokenizer: Any) -> dict:
    """Save a randomly initialised BERT classifier of `size` and the tokenizer to `directory`."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
        **SIZES[size],
    )
    torch.manual_seed(SEED)
    model = BertForSequenceClassification(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return {
        "architecture": "BertForSequenceClassification, random initialisation (seed "
        f"{SEED}), tokenizer of all-MiniLM-L6-v2 (BERT uncased WordPiece)",
        "size": size,
        "layers": config.num_hidden_layers,
        "hidden_size": config.hidden_size,
        "attention_heads": config.num_attention_heads,
        "intermediate_size": config.intermediate_size,
        "vocab_size": config.vocab_size,
        "parameters": sum(p.numel() for p in model.parameters()),
        "non_embedding_parameters": non_embedding_parameters(model),
    }


def run_in_process(runner: str, options: list[str], result_path: Path) -> dict[str, Any]:
    """Run one benchmark in a fresh interpreter and read back the JSON it writes."""
    command = [sys.executable, str(RUNS_SCRIPT), runner, *options, "--result", str(result_path)]
    print(f"--- {result_path.stem}: {' '.join(command)}", flush=True)
    probe_before = cpu_probe_ms()
    completed = subprocess.run(command, check=False)
    if completed.returncode != 0:
        raise SystemExit(
            f"the {result_path.stem} run failed with exit status {completed.returncode}"
        )
    result: dict[str, Any] = json.loads(result_path.read_text(encoding="utf-8"))
    result["cpu_probe_ms"] = [probe_before, cpu_probe_ms()]
    return result


def compare(
    runs: dict[str, dict[str, Any]], device: str, full_size: bool, probes: list[float]
) -> dict[str, Any]:
    """Ratios of textops to each HF run, and whether the targets are met (full size, CUDA).

    `probes` are the CPU probe timings of every run of every repeat, not only of `runs`.
    """
    textops = runs["textops"]
    hf_names = [name for name in runs if name != "textops"]
    best_hf = max(hf_names, key=lambda name: runs[name]["train_tokens_per_second"])
    comparison: dict[str, Any] = {
        name: {
            # > 1: textops trains more of the same tokens per second.
            "throughput_ratio": round(
                textops["train_tokens_per_second"] / runs[name]["train_tokens_per_second"], 3
            ),
            "peak_rss_ratio": round(textops["peak_rss_mib"] / runs[name]["peak_rss_mib"], 3),
            # > 0: textops is more accurate.
            "accuracy_difference_points": round(
                100 * (textops["validation_accuracy"] - runs[name]["validation_accuracy"]), 2
            ),
            **(
                {
                    "peak_gpu_memory_ratio": round(
                        textops["peak_gpu_memory_mib"] / runs[name]["peak_gpu_memory_mib"], 3
                    )
                }
                if device == "cuda"
                else {}
            ),
        }
        for name in hf_names
    }
    comparison["best_hf_run"] = best_hf
    # Above ~1.5 the machine's speed changed between or during the runs: do not trust ratios.
    comparison["cpu_probe_spread"] = round(max(probes) / min(probes), 2)
    targets: dict[str, Any] = {
        "throughput_ratio_to_best_hf": TARGET_THROUGHPUT_RATIO,
        "mfu": TARGET_MFU,
        "at": f"{FULL_SIZE['size']} size, {FULL_SIZE['rows']:,} rows or more, on CUDA",
    }
    if device != "cuda":
        targets["status"] = "GPU only, not measured"
    elif not full_size:
        targets["status"] = "not measured: below the full size"
    else:
        ratio = comparison[best_hf]["throughput_ratio"]
        mfu = textops.get("mfu")
        met = ratio >= TARGET_THROUGHPUT_RATIO and mfu is not None and mfu >= TARGET_MFU
        targets["status"] = "met" if met else "missed"
    comparison["targets"] = targets
    return comparison


def print_table(report: dict[str, Any]) -> None:
    """The figures a person reads first, one row per run."""
    columns = [
        ("tokens/s", "train_tokens_per_second", "{:.0f}"),
        ("samples/s", "train_samples_per_second", "{:.1f}"),
        ("train s", "train_seconds", "{:.1f}"),
        ("peak RSS MiB", "peak_rss_mib", "{:.0f}"),
        ("val acc", "validation_accuracy", "{:.4f}"),
    ]
    if report["machine"]["device"] == "cuda":
        columns += [("peak GPU MiB", "peak_gpu_memory_mib", "{:.0f}"), ("MFU", "mfu", "{:.3f}")]
    print(f"{'run':<20}" + "".join(f"{title:>14}" for title, _, _ in columns))
    for name, run in report["runs"].items():
        cells = "".join(
            f"{'-' if run.get(key) is None else fmt.format(run[key]):>14}"
            for _, key, fmt in columns
        )
        print(f"{name:<20}{cells}")
    c = report["comparison"]
    for name in report["runs"]:
        if name != "textops":
            print(
                f"textops / {name}: throughput {c[name]['throughput_ratio']:.2f}x, accuracy "
                f"{c[name]['accuracy_difference_points']:+.2f} points"
            )
    t = c["targets"]
    print(
        f"targets (textops >= {t['throughput_ratio_to_best_hf']}x the best HF run, MFU >= "
        f"{t['mfu']:.0%}, {t['at']}): {t['status']}"
    )
    if c["cpu_probe_spread"] > 1.5:
        print(
            f"WARNING: the CPU probe varied {c['cpu_probe_spread']}x across these runs: the "
            "machine was contended, so the ratios are unreliable; run again when it is "
            "quieter, or with more --repeats"
        )
    if "throughput_ratio_per_repeat" in c:
        print(f"throughput ratio per repeat: {c['throughput_ratio_per_repeat']}")


def settle_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the device-dependent defaults (0 or "auto") and check what was given."""
    import torch

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda, but no CUDA device is available")
    defaults = DEFAULTS[args.device]
    args.size = defaults["size"] if args.size == "auto" else args.size
    args.rows = args.rows or defaults["rows"]
    args.batch_size = args.batch_size or defaults["batch_size"]
    args.validation_rows = args.validation_rows or max(128, args.rows // 10)
    for name in ("rows", "validation_rows", "batch_size", "epochs", "repeats"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be at least 1")
    if args.rows < args.batch_size:
        raise SystemExit(f"--rows ({args.rows}) must be at least --batch-size ({args.batch_size})")
    # Unknown technique names fail here, before any data is built.
    chosen_techniques(args.without, args.with_)
    return args


def scale_source_info() -> dict[str, Any]:
    """bench_train's source facts, plus the digest of the techniques module once there is one."""
    info = source_info()
    techniques = Path(__file__).resolve().parents[2] / "components" / "train" / "techniques.py"
    if techniques.is_file():
        digest = hashlib.sha256(techniques.read_bytes()).hexdigest()[:16]
        info["techniques_py_sha256"] = digest
    return info


def run_benchmark(args: argparse.Namespace) -> int:
    """Build the data and the model, run every tool, write and print the report.

    Returns:
        The exit status: 1 when a target was judged and missed, else 0.
    """
    from transformers import AutoTokenizer

    from textops.components.common.config import resolve_base_model
    from textops.components.common.labels import LabelMap
    from textops.components.common.settings import DEFAULT_BASE_MODEL

    args = settle_defaults(args)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(DEFAULT_BASE_MODEL))
    # Each run's name and its scale_runs.py arguments; HF first, see below.
    runners = {"hf_trainer": ["hf_trainer"]}
    if args.hf_compile:
        runners["hf_trainer_compiled"] = ["hf_trainer", "--hf-compile"]
    runners["textops"] = ["textops"]
    technique_flags = [f"--without={n}" for n in args.without] + [f"--with={n}" for n in args.with_]
    with tempfile.TemporaryDirectory(prefix="textops-bench-scale-") as scratch:
        data_dir, model_dir = Path(scratch) / "data", Path(scratch) / "model"
        data_dir.mkdir()
        data = prepare_data(data_dir, args.rows, args.validation_rows, tokenizer)
        label_names = list(LabelMap.from_values(data["train"]["label_shares"]).names)
        model = build_model(model_dir, args.size, label_names, tokenizer)
        shared = [
            "--data-dir", str(data_dir), "--model-dir", str(model_dir),
            "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
            "--device", args.device,
        ]  # fmt: skip
        repeats = []
        for repeat in range(args.repeats):
            # Interleaved, HF first: a noisy neighbour or a warm page cache then touches all.
            repeats.append(
                {
                    name: run_in_process(
                        runner[0],
                        shared + runner[1:] + (technique_flags if name == "textops" else []),
                        Path(scratch) / f"{name}-{repeat}.json",
                    )
                    for name, runner in runners.items()
                }
            )
    runs = {name: median_run([r[name] for r in repeats]) for name in runners}
    full_size = args.size == FULL_SIZE["size"] and args.rows >= FULL_SIZE["rows"]
    report: dict[str, Any] = {
        "benchmark": "train_scale",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_info(args.device),
        "textops_source": scale_source_info(),
        "model": model,
        "data": data,
        "settings": {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "max_seq_length": MAX_SEQ_LENGTH,
            "seed": SEED,
            **optimisation_settings(),
            "textops_without": args.without,
            "textops_with": args.with_,
            "repeats": args.repeats,
        },
        "full_size": full_size,
        "runs": runs,
        "comparison": compare(
            runs,
            args.device,
            full_size,
            probes=[p for r in repeats for run in r.values() for p in run["cpu_probe_ms"]],
        ),
    }
    if args.repeats > 1:
        report["comparison"]["throughput_ratio_per_repeat"] = {
            name: [
                round(
                    r["textops"]["train_tokens_per_second"] / r[name]["train_tokens_per_second"], 3
                )
                for r in repeats
            ]
            for name in runners
            if name != "textops"
        }
        report["repeats"] = [
            {name: {k: r[name][k] for k in REPEAT_FIELDS} for name in r} for r in repeats
        ]
    output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print_table(report)
    print(f"written to {output}")
    return 1 if report["comparison"]["targets"]["status"] == "missed" else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="textops trainer vs a tuned Hugging Face Trainer on a BERT-base-size "
        "encoder: tokens/s, samples/s, memory, MFU, accuracy."
    )
    parser.add_argument(
        "--output", default="bench-results/train_scale.json", help="JSON report path"
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument(
        "--size",
        choices=("auto", *SIZES),
        default="auto",
        help="encoder size; auto: base on CUDA, tiny on CPU",
    )
    parser.add_argument(
        "--rows", type=int, default=0, help="training texts; 0: 50,000 on CUDA, 512 on CPU"
    )
    parser.add_argument(
        "--validation-rows", type=int, default=0, help="validation texts; 0: rows / 10, >= 128"
    )
    parser.add_argument(
        "--batch-size", type=int, default=0, help="texts per step; 0: 64 on CUDA, 16 on CPU"
    )
    parser.add_argument("--epochs", type=int, default=1, help="passes over the training texts")
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="interleaved rounds of runs; the report keeps each run's median (use 3 on a GPU)",
    )
    parser.add_argument(
        "--without",
        action="append",
        default=[],
        metavar="NAME",
        help="turn one textops training technique off (repeatable; Techniques.NAMES)",
    )
    parser.add_argument(
        "--with",
        dest="with_",
        action="append",
        default=[],
        metavar="NAME",
        help="turn one textops training technique on that is off by default, such as compile",
    )
    parser.add_argument(
        "--hf-compile",
        action="store_true",
        help="also run HF Trainer with torch_compile=True; the targets compare textops with "
        "the faster HF run",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark; exit 1 when a target was judged and missed."""
    sys.exit(run_benchmark(parse_args(argv)))


if __name__ == "__main__":
    main()
