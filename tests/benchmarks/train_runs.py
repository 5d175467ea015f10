"""One training run of the train benchmark, in a process of its own; `bench_train.py` starts it.

    python tests/benchmarks/train_runs.py {textops,hf_trainer} --data-dir DIR --epochs N \\
        --device {cpu,cuda} --result FILE [--without TECHNIQUE ...]

The run measures itself from inside (training time, peak memory, validation scores) and writes
them as JSON to FILE, so that its peak memory is its own and not the benchmark's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: Settings both runs share; the issue fixes batch size and sequence length, the rest are
#: common fine-tuning values.
SHARED: dict[str, Any] = {
    "batch_size": 32,
    "max_seq_length": 128,
    "learning_rate": 5e-5,
    "seed": 42,
}
#: Dense (no sparsity) bf16 tensor-core peaks in FLOP/s, from NVIDIA's data sheets; the first
#: name found in `torch.cuda.get_device_name()` wins, so more specific names come first.
GPU_PEAK_BF16_FLOPS = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM
    ("H200", 989e12),
    ("GH200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("A10", 125e12),
)


def peak_rss_mib() -> float:
    """Peak resident memory of this process; Linux reports ru_maxrss in KiB, macOS in bytes."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def read_split(path: Path) -> tuple[list[str], list[str]]:
    import pandas as pd

    frame = pd.read_parquet(path, columns=["text", "label"])
    return frame["text"].astype(str).tolist(), frame["label"].astype(str).tolist()


def real_tokens(tokenizer: Any, texts: list[str]) -> int:
    """Tokens the model sees per epoch without padding: the work MFU counts."""
    encoded = tokenizer(texts, truncation=True, max_length=SHARED["max_seq_length"])
    return sum(len(ids) for ids in encoded["input_ids"])


def non_embedding_parameters(model: Any) -> int:
    """Parameters that take part in matrix products; an embedding lookup costs no FLOPs."""
    embeddings = {id(p) for p in model.get_input_embeddings().parameters()}
    base = getattr(model, model.base_model_prefix, model)
    if hasattr(base, "embeddings"):  # BERT-like: position and token-type tables too
        embeddings |= {id(p) for p in base.embeddings.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in embeddings)


def gpu_measures(model: Any, tokens: int, epochs: int, train_seconds: float) -> dict[str, Any]:
    """Peak GPU memory and model FLOPs utilisation (6 * N * D / t over the bf16 dense peak)."""
    import torch

    name = torch.cuda.get_device_name()
    peak = next((flops for key, flops in GPU_PEAK_BF16_FLOPS if key in name), None)
    params = non_embedding_parameters(model)
    achieved = 6 * params * tokens * epochs / train_seconds
    return {
        "peak_gpu_memory_mib": torch.cuda.max_memory_allocated() / 2**20,
        "gpu": name,
        "model_flops_per_second": achieved,
        "peak_bf16_dense_flops": peak,
        "mfu": achieved / peak if peak else None,
        "mfu_formula": "6 * non-embedding params * real (unpadded) tokens / train seconds "
        "/ bf16 dense peak",
        "non_embedding_parameters": params,
    }


def textops_run(args: argparse.Namespace) -> dict[str, Any]:
    """Fine-tune with `train_classifier`; no checkpoints, as HF saves none either."""
    import torch

    from textops.components.common.labels import LabelMap
    from textops.components.common.settings import DEFAULT_BASE_MODEL, TrainSettings
    from textops.components.train.setup import load_base_model
    from textops.components.train.techniques import Techniques
    from textops.components.train.trainer import train_classifier

    data_dir = Path(args.data_dir)
    train_texts, train_labels = read_split(data_dir / "train.parquet")
    labels = LabelMap.from_values(train_labels)
    settings = TrainSettings(
        base_model=DEFAULT_BASE_MODEL,
        max_seq_length=SHARED["max_seq_length"],
        epochs=args.epochs,
        batch_size=SHARED["batch_size"],
        learning_rate=SHARED["learning_rate"],
        seed=SHARED["seed"],
        checkpoint_every_steps=0,
        device=args.device,
    )
    techniques = Techniques()
    for name in args.without:
        techniques = techniques.without(name)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory(prefix="textops-bench-model-") as output_dir:
        started = time.perf_counter()
        result = train_classifier(
            train_path=data_dir / "train.parquet",
            validation_path=data_dir / "validation.parquet",
            labels=labels,
            settings=settings,
            output_dir=output_dir,
            techniques=techniques,
        )
        total_seconds = time.perf_counter() - started
    rss = peak_rss_mib()
    # The loop's own clock: every epoch reports the rows it trained on per second of its loop
    # (validation excluded), so rows / rate is that epoch's loop time.
    train_seconds = sum(result.train_rows / h["samples_per_second"] for h in result.history)
    kept = result.best_metrics
    measures: dict[str, Any] = {
        "tool": "textops.components.train.trainer.train_classifier",
        "settings": {k: v for k, v in settings.model_dump().items() if k != "base_model"},
        "techniques": techniques.enabled(),
        "train_rows": result.train_rows,
        "epochs": args.epochs,
        "train_seconds": train_seconds,
        "train_samples_per_second": result.train_rows * args.epochs / train_seconds,
        "total_seconds": total_seconds,
        "peak_rss_mib": rss,
        "validation_accuracy": kept["validation_accuracy"],
        "validation_macro_f1": kept["validation_macro_f1"],
        "validation_of": f"best epoch ({result.best_epoch} of {len(result.history)}): the "
        "model train_classifier returns",
        "history": result.history,
        "torch_threads": torch.get_num_threads(),
    }
    if args.device == "cuda":
        tokenizer, model = load_base_model(DEFAULT_BASE_MODEL, labels)
        tokens = real_tokens(tokenizer, train_texts)
        measures.update(gpu_measures(model, tokens, args.epochs, train_seconds))
    return measures


def hf_non_default_arguments(args: argparse.Namespace, output_dir: str) -> dict[str, Any]:
    """The `TrainingArguments` the HF run sets: shared settings, and nothing written or sent."""
    import torch
    from transformers import TrainingArguments

    arguments: dict[str, Any] = {
        "output_dir": output_dir,
        "num_train_epochs": args.epochs,
        "per_device_train_batch_size": SHARED["batch_size"],
        "per_device_eval_batch_size": SHARED["batch_size"],
        "learning_rate": SHARED["learning_rate"],
        "seed": SHARED["seed"],
        "save_strategy": "no",  # the default writes a checkpoint every 500 steps
        "report_to": [],  # no experiment tracker, whatever happens to be installed
    }
    if args.device == "cpu" and (torch.cuda.is_available() or args.hf_bf16):
        # So that --device cpu stays on CPU on a GPU machine; bf16 on CPU also needs it.
        arguments["use_cpu"] = True
    if args.hf_bf16:
        arguments["bf16"] = True  # opt-in: HF with mixed precision
    if args.hf_group_by_length:
        # Opt-in: HF's own answer to padding waste; transformers 5 renamed the setting.
        if "train_sampling_strategy" in {f.name for f in dataclasses.fields(TrainingArguments)}:
            arguments["train_sampling_strategy"] = "group_by_length"
        else:
            arguments["group_by_length"] = True
    return arguments


def hf_run(args: argparse.Namespace) -> dict[str, Any]:
    """Fine-tune with HF `Trainer`, as its documentation shows, with the shared settings."""
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        Trainer,
        TrainingArguments,
    )
    from transformers.utils import logging as hf_logging

    from textops.components.common.config import resolve_base_model
    from textops.components.common.labels import LabelMap
    from textops.components.common.metrics import classification_scores
    from textops.components.common.settings import DEFAULT_BASE_MODEL

    hf_logging.set_verbosity_error()  # same quiet as textops's load_base_model
    data_dir = Path(args.data_dir)
    train_texts, train_labels = read_split(data_dir / "train.parquet")
    val_texts, val_labels = read_split(data_dir / "validation.parquet")
    labels = LabelMap.from_values(train_labels)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    with tempfile.TemporaryDirectory(prefix="textops-bench-hf-") as scratch:
        started = time.perf_counter()
        location = resolve_base_model(DEFAULT_BASE_MODEL)
        tokenizer = AutoTokenizer.from_pretrained(location)
        model = AutoModelForSequenceClassification.from_pretrained(
            location,
            num_labels=len(labels),
            id2label=dict(enumerate(labels.names)),
            label2id={name: i for i, name in enumerate(labels.names)},
        )

        def encode(texts: list[str], names: list[str]) -> list[dict[str, Any]]:
            # A list of feature dicts is a map-style dataset to Trainer, like `datasets.map`'s.
            encoded = tokenizer(texts, truncation=True, max_length=SHARED["max_seq_length"])
            ids = [labels.index(n) for n in names]
            return [
                {**{k: v[i] for k, v in encoded.items()}, "labels": ids[i]}
                for i in range(len(texts))
            ]

        train_set = encode(train_texts, train_labels)
        val_set = encode(val_texts, val_labels)
        arguments = hf_non_default_arguments(args, str(Path(scratch) / "out"))
        trainer = Trainer(
            model=model,
            args=TrainingArguments(**arguments),
            train_dataset=train_set,
            eval_dataset=val_set,
            processing_class=tokenizer,  # its default collator: DataCollatorWithPadding
        )
        loop_started = time.perf_counter()
        train_output = trainer.train()
        train_call_seconds = time.perf_counter() - loop_started
        prediction = trainer.predict(val_set)  # type: ignore[arg-type]
        trainer.save_model(str(Path(scratch) / "model"))  # textops saves its model too
        total_seconds = time.perf_counter() - started

    rss = peak_rss_mib()
    predictions = prediction.predictions
    if isinstance(predictions, tuple):
        predictions = predictions[0]
    # The labels as predict returns them: with group_by_length, HF reorders evaluation too.
    scores = classification_scores(prediction.label_ids, predictions.argmax(axis=1), len(labels))
    train_seconds = float(train_output.metrics["train_runtime"])
    arguments["output_dir"] = "<temporary directory>"
    measures: dict[str, Any] = {
        "tool": "transformers.Trainer",
        "hf_non_default_arguments": arguments,
        "train_rows": len(train_texts),
        "epochs": args.epochs,
        "train_seconds": train_seconds,
        "train_call_seconds": train_call_seconds,
        "train_samples_per_second": len(train_texts) * args.epochs / train_seconds,
        "total_seconds": total_seconds,
        "peak_rss_mib": rss,
        "validation_accuracy": scores["accuracy"],
        "validation_macro_f1": scores["macro_f1"],
        "validation_of": "the final model",
        "train_loss": float(train_output.training_loss),
        "torch_threads": torch.get_num_threads(),
    }
    if args.device == "cuda":
        measures.update(
            gpu_measures(model, real_tokens(tokenizer, train_texts), args.epochs, train_seconds)
        )
    return measures


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from textops.components.train.techniques import Techniques

    parser = argparse.ArgumentParser(description="One run of the train benchmark.")
    parser.add_argument("runner", choices=("textops", "hf_trainer"))
    parser.add_argument("--data-dir", required=True, help="holds train.parquet, validation.parquet")
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--device", choices=("cpu", "cuda"), required=True)
    parser.add_argument("--result", required=True, help="JSON file the measures go to")
    parser.add_argument("--hf-bf16", action="store_true", help="give HF Trainer bf16=True")
    parser.add_argument(
        "--hf-group-by-length", action="store_true", help="give HF Trainer length grouping"
    )
    parser.add_argument(
        "--without",
        action="append",
        default=[],
        choices=Techniques.NAMES,
        metavar="TECHNIQUE",
        help="switch this textops speed technique off (repeatable): " + ", ".join(Techniques.NAMES),
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run one benchmark and write its measures."""
    from textops.components.common.logs import configure_logging

    args = parse_args(argv)
    configure_logging()
    runners = {"textops": textops_run, "hf_trainer": hf_run}
    measures = runners[args.runner](args)
    Path(args.result).write_text(json.dumps(measures, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
