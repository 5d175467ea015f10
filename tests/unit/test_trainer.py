"""The training loop on a tiny model: batching, schedules, determinism, outputs and errors."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from textops.components.common.errors import ConfigError, DataError, ModelNotFoundError
from textops.components.common.labels import LabelMap
from textops.components.common.settings import TrainSettings
from textops.components.common.torch_inference import pick_device
from textops.components.train.batching import length_grouped_batches, shard_batches
from textops.components.train.setup import balanced_class_weights, learning_rate_multiplier
from textops.components.train.trainer import TrainResult, train_classifier

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


def test_ddp_shards_are_disjoint_and_equal_in_count() -> None:
    batches = [np.array([i]) for i in range(11)]
    shards = [shard_batches(batches, rank, 3) for rank in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3]
    taken = sorted(int(b[0]) for s in shards for b in s)
    assert taken == list(range(9))


def test_schedules_warm_up_then_decay_to_zero() -> None:
    linear = learning_rate_multiplier("linear", warmup_steps=10, total_steps=110)
    assert linear(0) == pytest.approx(0.1)
    assert linear(9) == pytest.approx(1.0)
    assert linear(60) == pytest.approx(0.5)
    assert linear(110) == 0.0
    cosine = learning_rate_multiplier("cosine", warmup_steps=10, total_steps=110)
    assert cosine(10) == pytest.approx(1.0)
    assert cosine(60) == pytest.approx(0.5)
    assert cosine(35) > linear(35)  # cosine stays high longer
    assert cosine(110) == pytest.approx(0.0)


def test_balanced_class_weights() -> None:
    weights = balanced_class_weights(np.array([0, 0, 0, 1]), 2)
    assert weights.tolist() == pytest.approx([4 / 6, 2.0])


def _train(model_dir: Path, splits: dict[str, Path], out: Path, **overrides: object) -> TrainResult:
    settings = TrainSettings.model_validate(
        {"base_model": str(model_dir), "max_seq_length": 32, "epochs": 2, "batch_size": 16,
         "seed": 3, **overrides}
    )  # fmt: skip
    return train_classifier(
        train_path=splits["train"],
        validation_path=splits["validation"],
        labels=LABELS,
        settings=settings,
        output_dir=out,
        data_fingerprint="sha256:test",
    )


def untimed(history: list[dict[str, float]]) -> list[dict[str, float]]:
    """Epoch records without the throughputs, which vary from run to run."""
    return [{k: v for k, v in h.items() if not k.endswith("_per_second")} for h in history]


def weights(directory: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(directory)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_training_writes_a_loadable_model_and_is_repeatable(
    tiny_model_dir: Path, tiny_splits: dict[str, Path], tmp_path: Path
) -> None:
    first = _train(tiny_model_dir, tiny_splits, tmp_path / "a")
    second = _train(tiny_model_dir, tiny_splits, tmp_path / "b")
    assert len(first.history) == 2
    assert untimed(first.history) == untimed(second.history)
    epoch = first.history[0]
    # 120 rows; padding adds tokens, never removes them.
    assert epoch["padded_tokens_per_second"] >= epoch["tokens_per_second"] > 0
    assert LabelMap.load(tmp_path / "a" / "labels.json") == LABELS
    trained, again = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert all(torch.equal(trained[k], again[k]) for k in trained)
    original = weights(tiny_model_dir)
    assert not torch.equal(original["classifier.weight"], trained["classifier.weight"])
    metadata = first.model_metadata()
    assert metadata["labels"] == ["negative", "positive"]
    assert metadata["data_fingerprint"] == "sha256:test"
    assert metadata["best_epoch"] in (1, 2)
    assert metadata["optimizer_steps"] == 2 * 8  # 120 rows in batches of 16
    assert 0.0 <= metadata["validation_accuracy"] <= 1.0


def test_gradient_accumulation_takes_fewer_optimizer_steps(
    tiny_model_dir: Path, tiny_splits: dict[str, Path], tmp_path: Path
) -> None:
    result = _train(
        tiny_model_dir, tiny_splits, tmp_path / "acc", batch_size=8, gradient_accumulation_steps=4
    )
    assert result.optimizer_steps == 2 * 4  # 15 batches of 8 -> steps of 4, 4, 4, 3 batches


def test_early_stopping_stops_when_validation_stops_improving(
    tiny_model_dir: Path, tiny_splits: dict[str, Path], tmp_path: Path
) -> None:
    # A learning rate this small leaves the validation score where it is after epoch 1.
    result = _train(
        tiny_model_dir, tiny_splits, tmp_path / "es", epochs=6, learning_rate=1e-12,
        early_stopping_patience=2,
    )  # fmt: skip
    assert result.stopped_early
    assert len(result.history) == 3
    assert result.best_epoch == 1


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
    result = _train(tiny_model_dir, tiny_splits, tmp_path / "gpu", device="cuda", epochs=1)
    assert result.device.startswith("cuda")
    assert (tmp_path / "gpu" / "labels.json").is_file()
