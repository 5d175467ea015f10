"""One run of the scale training benchmark, in a process of its own; `bench_train_scale.py`
starts it.

    python tests/benchmarks/scale_runs.py {textops,hf_trainer} --data-dir DIR --model-dir DIR \\
        --epochs N --batch-size B --device {cpu,cuda} --result FILE \\
        [--without NAME ...] [--with NAME ...] [--hf-compile]

The run measures itself from inside (training time, real tokens, peak memory, validation
scores) and writes them as JSON to FILE. Both tools start from the same randomly initialised
model directory and train with the same settings; the shared measuring helpers are
`train_runs.py`'s.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any

# train_runs lies beside this script, which Python puts first on the import path.
from train_runs import (
    SHARED,
    gpu_measures,
    non_embedding_parameters,
    peak_rss_mib,
    read_split,
    real_tokens,
)

#: Tokens kept per text, for both tools; `real_tokens` counts with the same window.
MAX_SEQ_LENGTH: int = SHARED["max_seq_length"]
SEED: int = SHARED["seed"]
#: HF Trainer's data-loading processes on a GPU; on CPU they would take the cores the
#: training needs, so none there.
HF_GPU_DATALOADER_WORKERS = 4


def optimisation_settings() -> dict[str, Any]:
    """Learning rate, warm-up and weight decay: textops's defaults, given to both tools.

    A randomly initialised encoder needs textops's default rate (1e-4) more than the 5e-5 of
    the fine-tuning benchmark; HF gets the same warm-up and decay so that accuracy compares.
    """
    from textops.components.common.settings import TrainSettings

    defaults = TrainSettings()
    return {
        "learning_rate": defaults.learning_rate,
        "warmup_ratio": defaults.warmup_ratio,
        "weight_decay": defaults.weight_decay,
    }


def chosen_techniques(without: list[str], with_: list[str]) -> Any:
    """textops's `Techniques` with the named ones off (`without`) or on (`with_`).

    Raises:
        SystemExit: A technique was named that textops does not have.
    """
    from textops.components.train.techniques import Techniques

    unknown = sorted(set(without + with_) - set(Techniques.NAMES))
    if unknown:
        raise SystemExit(f"unknown technique(s) {unknown}; known: {list(Techniques.NAMES)}")
    techniques = Techniques()
    for name in without:
        techniques = techniques.without(name)
    for name in with_:
        techniques = dataclasses.replace(techniques, **{name: True})
    return techniques


def throughput(tokens: int, rows: int, epochs: int, train_seconds: float) -> dict[str, float]:
    """Samples and real (unpadded) tokens trained per second of the training loop."""
    return {
        "train_seconds": train_seconds,
        "train_samples_per_second": rows * epochs / train_seconds,
        "train_tokens_per_second": tokens * epochs / train_seconds,
        "real_tokens_per_epoch": tokens,
    }


def textops_run(args: argparse.Namespace) -> dict[str, Any]:
    """Train with `train_classifier`, with the chosen techniques; no checkpoints."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from textops.components.common.labels import LabelMap
    from textops.components.common.settings import TrainSettings
    from textops.components.train.trainer import train_classifier

    data_dir = Path(args.data_dir)
    train_texts, train_labels = read_split(data_dir / "train.parquet")
    labels = LabelMap.from_values(train_labels)
    settings = TrainSettings(
        base_model=args.model_dir,
        max_seq_length=MAX_SEQ_LENGTH,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=SEED,
        checkpoint_every_steps=0,
        device=args.device,
        **optimisation_settings(),
    )
    techniques = chosen_techniques(args.without, args.with_)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory(prefix="textops-bench-scale-model-") as output_dir:
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
    # Each epoch reports its rows per second of its own loop (validation excluded).
    train_seconds = sum(result.train_rows / h["samples_per_second"] for h in result.history)
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    tokens = real_tokens(tokenizer, train_texts)
    kept = result.best_metrics
    measures: dict[str, Any] = {
        "tool": "textops.components.train.trainer.train_classifier",
        "settings": settings.model_dump(exclude={"base_model"}),  # a temporary directory
        "techniques": dataclasses.asdict(techniques),
        "train_rows": result.train_rows,
        "epochs": args.epochs,
        **throughput(tokens, result.train_rows, args.epochs, train_seconds),
        "samples_per_second_per_epoch": [h["samples_per_second"] for h in result.history],
        # Share of the tokens fed to the model that were padding, as the loop counted them.
        "padding_share_per_epoch": [
            round(1 - h["tokens_per_second"] / h["padded_tokens_per_second"], 4)
            for h in result.history
        ],
        "total_seconds": total_seconds,
        "peak_rss_mib": rss,
        "validation_accuracy": kept["validation_accuracy"],
        "validation_macro_f1": kept["validation_macro_f1"],
        "validation_of": f"best epoch ({result.best_epoch} of {len(result.history)})",
        "torch_threads": torch.get_num_threads(),
    }
    if args.device == "cuda":
        # The trained weights are gone with the output directory; the count is the same.
        model = AutoModelForSequenceClassification.from_pretrained(args.model_dir)
        measures.update(gpu_measures(model, tokens, args.epochs, train_seconds))
    return measures


def hf_arguments(args: argparse.Namespace, output_dir: str) -> dict[str, Any]:
    """`TrainingArguments` for HF Trainer tuned as its performance documentation advises.

    On CUDA: bf16 autocast (fp16 before Ampere), TF32 for what stays in fp32, length-grouped
    batches, fused AdamW, data-loading workers with pinned memory, and `torch_compile` when
    asked. On CPU the same but in fp32 (as textops trains there) and without workers, which
    would compete with the training for the few cores.
    """
    import torch
    from transformers import TrainingArguments

    optimisation = optimisation_settings()
    cuda = args.device == "cuda"
    arguments: dict[str, Any] = {
        "output_dir": output_dir,
        "num_train_epochs": args.epochs,
        "per_device_train_batch_size": args.batch_size,
        "per_device_eval_batch_size": args.batch_size,
        "learning_rate": optimisation["learning_rate"],
        "warmup_steps": optimisation["warmup_ratio"],  # a float below 1 is a share of steps
        "weight_decay": optimisation["weight_decay"],
        "seed": SEED,
        "optim": "adamw_torch_fused",
        "dataloader_num_workers": HF_GPU_DATALOADER_WORKERS if cuda else 0,
        "dataloader_pin_memory": cuda,
        "save_strategy": "no",  # the default writes a checkpoint every 500 steps
        "report_to": [],  # no experiment tracker, whatever happens to be installed
    }
    # transformers 5 renamed length grouping; older versions take group_by_length.
    if "train_sampling_strategy" in {f.name for f in dataclasses.fields(TrainingArguments)}:
        arguments["train_sampling_strategy"] = "group_by_length"
    else:
        arguments["group_by_length"] = True
    if cuda and torch.cuda.is_bf16_supported():  # Ampere and newer
        arguments["bf16"] = True
        arguments["tf32"] = True
    elif cuda:  # as textops does on older GPUs; HF refuses bf16 and tf32 there
        arguments["fp16"] = True
    elif torch.cuda.is_available():
        arguments["use_cpu"] = True  # --device cpu stays on CPU on a GPU machine
    if args.hf_compile:
        arguments["torch_compile"] = True
    return arguments


def hf_run(args: argparse.Namespace) -> dict[str, Any]:
    """Train with HF `Trainer` from the same model directory, data and settings."""
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )
    from transformers.utils import logging as hf_logging

    from textops.components.common.labels import LabelMap
    from textops.components.common.metrics import classification_scores

    hf_logging.set_verbosity_error()
    data_dir = Path(args.data_dir)
    train_texts, train_labels = read_split(data_dir / "train.parquet")
    val_texts, val_labels = read_split(data_dir / "validation.parquet")
    labels = LabelMap.from_values(train_labels)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    with tempfile.TemporaryDirectory(prefix="textops-bench-scale-hf-") as scratch:
        started = time.perf_counter()
        tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
        model = AutoModelForSequenceClassification.from_pretrained(args.model_dir)

        def encode(texts: list[str], names: list[str]) -> list[dict[str, Any]]:
            # A list of feature dicts is a map-style dataset to Trainer, like `datasets.map`'s.
            encoded = tokenizer(texts, truncation=True, max_length=MAX_SEQ_LENGTH)
            ids = [labels.index(n) for n in names]
            return [
                {**{k: v[i] for k, v in encoded.items()}, "labels": ids[i]}
                for i in range(len(texts))
            ]

        train_set = encode(train_texts, train_labels)
        val_set = encode(val_texts, val_labels)
        arguments = hf_arguments(args, str(Path(scratch) / "out"))
        # Lengths in multiples of 8 keep bf16 tensor-core tiles full (HF's GPU guide).
        pad_multiple = 8 if args.device == "cuda" else None
        trainer = Trainer(
            model=model,
            args=TrainingArguments(**arguments),
            train_dataset=train_set,
            eval_dataset=val_set,
            processing_class=tokenizer,
            data_collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_multiple),
        )
        loop_started = time.perf_counter()
        train_output = trainer.train()
        train_call_seconds = time.perf_counter() - loop_started
        prediction = trainer.predict(val_set)  # type: ignore[arg-type]
        total_seconds = time.perf_counter() - started

    rss = peak_rss_mib()
    predictions = prediction.predictions
    if isinstance(predictions, tuple):
        predictions = predictions[0]
    # The labels as predict returns them, in case HF reorders evaluation too.
    scores = classification_scores(prediction.label_ids, predictions.argmax(axis=1), len(labels))
    train_seconds = float(train_output.metrics["train_runtime"])
    tokens = real_tokens(tokenizer, train_texts)
    arguments["output_dir"] = "<temporary directory>"
    measures: dict[str, Any] = {
        "tool": "transformers.Trainer",
        "hf_non_default_arguments": arguments,
        "collator": f"DataCollatorWithPadding(pad_to_multiple_of={pad_multiple})",
        "train_rows": len(train_texts),
        "epochs": args.epochs,
        **throughput(tokens, len(train_texts), args.epochs, train_seconds),
        "train_call_seconds": train_call_seconds,
        "total_seconds": total_seconds,
        "peak_rss_mib": rss,
        "validation_accuracy": scores["accuracy"],
        "validation_macro_f1": scores["macro_f1"],
        "validation_of": "the final model",
        "train_loss": float(train_output.training_loss),
        "torch_threads": torch.get_num_threads(),
    }
    if args.device == "cuda":
        measures.update(gpu_measures(model, tokens, args.epochs, train_seconds))
    else:
        measures["non_embedding_parameters"] = non_embedding_parameters(model)
    return measures


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="One run of the scale training benchmark.")
    parser.add_argument("runner", choices=("textops", "hf_trainer"))
    parser.add_argument("--data-dir", required=True, help="holds train.parquet, validation.parquet")
    parser.add_argument("--model-dir", required=True, help="the randomly initialised model")
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--device", choices=("cpu", "cuda"), required=True)
    parser.add_argument("--result", required=True, help="JSON file the measures go to")
    parser.add_argument("--without", action="append", default=[], help="textops technique off")
    parser.add_argument(
        "--with", dest="with_", action="append", default=[], help="textops technique on"
    )
    parser.add_argument("--hf-compile", action="store_true", help="HF Trainer torch_compile")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run one tool and write its measures."""
    from textops.components.common.logs import configure_logging

    args = parse_args(argv)
    configure_logging()
    runners = {"textops": textops_run, "hf_trainer": hf_run}
    measures = runners[args.runner](args)
    Path(args.result).write_text(json.dumps(measures, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
