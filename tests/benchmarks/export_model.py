"""The model `bench_export.py` exports: all-MiniLM-L6-v2, fine-tuned as the train step does.

The sample data is split as `textops run` splits it (`TrainingConfig`'s fractions and seed),
and the model is fine-tuned by `train_classifier` for the epochs asked; with none, the base
model gets a fresh, seeded 2-class head (the timings are the same: weights do not change the
work, but accuracy against true labels then means nothing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: Tokens kept per text: the training default, and the longest sequence the benchmark times.
MAX_SEQ_LENGTH = 128


def write_splits(directory: Path) -> dict[str, Path]:
    """The sample data split as `textops run` splits it: train, validation and test Parquet."""
    import pandas as pd

    from textops.components.common.config import TrainingConfig, sample_data_path
    from textops.components.preprocess.split import preprocess_file

    config = TrainingConfig()
    validated = directory / "validated.parquet"
    pd.read_csv(sample_data_path(), dtype=str).to_parquet(validated, index=False)
    paths = {split: directory / f"{split}.parquet" for split in ("train", "validation", "test")}
    preprocess_file(
        validated_path=str(validated),
        validation_fraction=config.validation_fraction,
        test_fraction=config.test_fraction,
        seed=config.seed,
        train_path=str(paths["train"]),
        validation_path=str(paths["validation"]),
        test_path=str(paths["test"]),
    )
    return paths


def build_model(directory: Path, splits: dict[str, Path], epochs: int, seed: int) -> dict[str, Any]:
    """all-MiniLM-L6-v2 with a 2-class head, fine-tuned for `epochs` as the train step does.

    Returns:
        The train artifact's metadata, which export reads.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from textops.components.common.config import resolve_base_model
    from textops.components.common.labels import LabelMap
    from textops.components.common.settings import DEFAULT_BASE_MODEL, TrainSettings
    from textops.components.train.trainer import train_classifier

    labels = LabelMap(("negative", "positive"))
    if epochs > 0:
        settings = TrainSettings(
            base_model=DEFAULT_BASE_MODEL, max_seq_length=MAX_SEQ_LENGTH, epochs=epochs, seed=seed
        )
        result = train_classifier(
            train_path=splits["train"],
            validation_path=splits["validation"],
            labels=labels,
            settings=settings,
            output_dir=directory,
            data_fingerprint="bench",
        )
        return result.model_metadata()

    base = resolve_base_model(DEFAULT_BASE_MODEL)
    torch.manual_seed(seed)
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
    return {
        "base_model": DEFAULT_BASE_MODEL,
        "data_fingerprint": "bench",
        "max_seq_length": MAX_SEQ_LENGTH,
        "seed": seed,
    }
