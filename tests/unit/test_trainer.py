"""The training loop on a tiny model: batching, schedule, determinism, outputs and errors."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from textops.components.common.errors import ConfigError, DataError, ModelNotFoundError
from textops.components.common.labels import LabelMap
from textops.components.common.torch_inference import pick_device
from textops.components.train.trainer import (
    TrainSettings,
    length_grouped_batches,
    linear_warmup_decay,
    train_classifier,
)

LABELS = LabelMap(("negative", "positive"))


def test_length_grouped_batches_cover_every_row_once_with_little_padding() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 200, size=1000).tolist()
    batches = length_grouped_batches(lengths, 16, np.random.default_rng(1))
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1000))
    assert all(len(b) <= 16 for b in batches)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    shuffled = np.random.default_rng(2).permutation(1000)
    padded_random = sum(
        16 * max(lengths[i] for i in shuffled[s : s + 16]) for s in range(0, 1000, 16)
    )
    assert padded < 0.7 * padded_random


def test_length_grouped_batches_are_seeded() -> None:
    lengths = list(range(100))
    first = length_grouped_batches(lengths, 8, np.random.default_rng(5))
    again = length_grouped_batches(lengths, 8, np.random.default_rng(5))
    other = length_grouped_batches(lengths, 8, np.random.default_rng(6))
    assert all((a == b).all() for a, b in zip(first, again, strict=True))
    assert any((a != b).any() for a, b in zip(first, other, strict=False) if len(a) == len(b))


def test_schedule_warms_up_then_decays_to_zero() -> None:
    multiplier = linear_warmup_decay(warmup_steps=10, total_steps=110)
    assert multiplier(0) == pytest.approx(0.1)
    assert multiplier(9) == pytest.approx(1.0)
    assert multiplier(60) == pytest.approx(0.5)
    assert multiplier(110) == 0.0


def _train(model_dir: Path, splits: dict[str, Path], out: Path, seed: int = 3):  # type: ignore[no-untyped-def]
    settings = TrainSettings(
        base_model=str(model_dir), max_seq_length=32, epochs=2, batch_size=16, seed=seed
    )
    return train_classifier(
        train_path=splits["train"],
        validation_path=splits["validation"],
        labels=LABELS,
        settings=settings,
        output_dir=out,
        data_fingerprint="sha256:test",
    )


def test_training_writes_a_loadable_model_and_is_repeatable(
    tiny_model_dir: Path, tiny_splits: dict[str, Path], tmp_path: Path
) -> None:
    from transformers import AutoModelForSequenceClassification

    first = _train(tiny_model_dir, tiny_splits, tmp_path / "a")
    second = _train(tiny_model_dir, tiny_splits, tmp_path / "b")
    assert len(first.history) == 2
    assert first.history == [
        {**h, "samples_per_second": r["samples_per_second"]}
        for h, r in zip(second.history, first.history, strict=True)
    ]
    assert LabelMap.load(tmp_path / "a" / "labels.json") == LABELS
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "a")
    assert model.config.id2label == {0: "negative", 1: "positive"}
    weights_a = dict(model.named_parameters())
    weights_b = dict(
        AutoModelForSequenceClassification.from_pretrained(tmp_path / "b").named_parameters()
    )
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    original = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    assert not torch.equal(original.classifier.weight, model.classifier.weight)
    metadata = first.model_metadata()
    assert metadata["labels"] == ["negative", "positive"]
    assert metadata["data_fingerprint"] == "sha256:test"
    assert metadata["best_epoch"] in (1, 2)
    assert 0.0 <= metadata["validation_accuracy"] <= 1.0


def test_label_outside_the_map_is_named(
    tiny_model_dir: Path, tiny_splits: dict[str, Path], tmp_path: Path
) -> None:
    frame = pd.read_parquet(tiny_splits["train"])
    frame.loc[0, "label"] = "neutral"
    frame.to_parquet(tmp_path / "train.parquet")
    splits = {**tiny_splits, "train": tmp_path / "train.parquet"}
    with pytest.raises(DataError, match="'neutral'"):
        _train(tiny_model_dir, splits, tmp_path / "out")


def test_missing_base_model_is_named(tiny_splits: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="not found"):
        _train(tmp_path / "absent", tiny_splits, tmp_path / "out")


def test_cuda_request_without_a_gpu_is_an_error_not_a_cpu_run() -> None:
    if torch.cuda.is_available():
        assert pick_device("cuda").type == "cuda"
    else:
        with pytest.raises(ConfigError, match="no CUDA device"):
            pick_device("cuda")
    assert pick_device("cpu").type == "cpu"


@pytest.mark.gpu
def test_training_on_cuda(
    tiny_model_dir: Path, tiny_splits: dict[str, Path], tmp_path: Path
) -> None:
    settings = TrainSettings(base_model=str(tiny_model_dir), epochs=1, batch_size=16, device="cuda")
    result = train_classifier(
        train_path=tiny_splits["train"],
        validation_path=tiny_splits["validation"],
        labels=LABELS,
        settings=settings,
        output_dir=tmp_path / "gpu",
    )
    assert result.device.startswith("cuda")
    assert (tmp_path / "gpu" / "labels.json").is_file()
