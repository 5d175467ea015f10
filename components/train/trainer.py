"""Fine-tune a transformer sequence classifier. Read it top to bottom: `train_classifier`.

One process, CUDA when present (bf16 autocast where the GPU supports it), CPU otherwise.
Batches group texts of similar length, so little compute goes to padding; the epoch with the
best validation macro-F1 is the one kept.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from textops.components.common.config import resolve_base_model
from textops.components.common.errors import DataError, ModelNotFoundError, TrainingError
from textops.components.common.labels import LabelMap
from textops.components.common.metrics import classification_scores
from textops.components.common.torch_inference import batched_logits, pad_batch, pick_device

logger = logging.getLogger(__name__)

#: Batches are formed inside shuffled windows of this many batches, sorted by length: most of
#: the padding saving of a full sort, with the randomness of a shuffle.
LENGTH_GROUP_WINDOW = 50


@dataclass(frozen=True)
class TrainSettings:
    """Hyperparameters of one fine-tuning run (see `TrainingConfig` for their help text)."""

    base_model: str
    max_seq_length: int = 128
    epochs: int = 3
    batch_size: int = 32
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    seed: int = 42
    device: str = "auto"
    max_grad_norm: float = 1.0


@dataclass
class TrainResult:
    """What a run produced: per-epoch history and the metrics of the epoch kept."""

    settings: TrainSettings
    labels: LabelMap
    device: str
    data_fingerprint: str
    train_rows: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0

    @property
    def best_metrics(self) -> dict[str, float]:
        """Metrics of the kept epoch: validation scores prefixed `validation_`, then train ones."""
        best = self.history[self.best_epoch - 1]
        validation = {
            f"validation_{k}": best[k] for k in ("loss", "accuracy", "macro_f1", "weighted_f1")
        }
        return {
            **validation,
            "train_loss": best["train_loss"],
            "train_samples_per_second": best["samples_per_second"],
        }

    def model_metadata(self) -> dict[str, Any]:
        """JSON-friendly facts for the Model artifact; export copies them into the bundle."""
        return {
            **asdict(self.settings),
            "labels": list(self.labels.names),
            "label_kind": self.labels.kind,
            "data_fingerprint": self.data_fingerprint,
            "trained_on": self.device,
            "train_rows": self.train_rows,
            "train_seconds": round(self.seconds, 2),
            "best_epoch": self.best_epoch,
            **self.best_metrics,
        }


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_split(path: str | Path, labels: LabelMap) -> tuple[list[str], np.ndarray]:
    """Texts and class ids of one split; every label must be in the label map."""
    frame = pd.read_parquet(path, columns=["text", "label"])
    if frame.empty:
        raise DataError(f"split {path} has no rows")
    ids = np.array([labels.index(v) for v in frame["label"]], dtype=np.int64)
    return frame["text"].astype(str).tolist(), ids


def length_grouped_batches(
    lengths: list[int], batch_size: int, generator: np.random.Generator
) -> list[np.ndarray]:
    """One epoch of index batches: shuffled, then sorted by length inside windows."""
    order = generator.permutation(len(lengths))
    window = batch_size * LENGTH_GROUP_WINDOW
    batches: list[np.ndarray] = []
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        chunk = chunk[np.argsort([lengths[i] for i in chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    generator.shuffle(batches)
    return batches


def linear_warmup_decay(warmup_steps: int, total_steps: int) -> Any:
    """Learning-rate multiplier: linear warm-up to 1, then linear decay to 0."""

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return multiplier


def load_base_model(base_model: str, labels: LabelMap) -> tuple[Any, Any]:
    """Tokenizer and a classification model with a fresh head sized to `labels`."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    # "Some weights were newly initialized" is the point of fine-tuning, not news.
    hf_logging.set_verbosity_error()
    location = resolve_base_model(base_model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
        model = AutoModelForSequenceClassification.from_pretrained(
            location,
            num_labels=len(labels),
            id2label=dict(enumerate(labels.names)),
            label2id={name: i for i, name in enumerate(labels.names)},
            ignore_mismatched_sizes=True,  # a base model with a head of another size
        )
    except OSError as e:
        raise ModelNotFoundError(
            f"cannot load base model {base_model!r}: {e}. Give a local Hugging Face model "
            "directory, or a hub id when the machine can reach the hub."
        ) from e
    return tokenizer, model


def train_classifier(
    *,
    train_path: str | Path,
    validation_path: str | Path,
    labels: LabelMap,
    settings: TrainSettings,
    output_dir: str | Path,
    data_fingerprint: str = "",
) -> TrainResult:
    """Fine-tune `settings.base_model` and save the best epoch to `output_dir`.

    `output_dir` becomes a Hugging Face model directory (weights, config with the label names,
    tokenizer) plus `labels.json`.

    Raises:
        ModelNotFoundError: The base model cannot be found or loaded.
        DataError: A split is empty or holds a label outside `labels`.
        TrainingError: The GPU ran out of memory (the message says what to change).
    """
    if len(labels) < 2:
        raise DataError(
            f"training needs at least two classes; the label map holds {list(labels.names)}"
        )
    started = time.perf_counter()
    seed_everything(settings.seed)
    device = pick_device(settings.device)
    tokenizer, model = load_base_model(settings.base_model, labels)
    model.to(device)

    train_texts, train_ids = load_split(train_path, labels)
    val_texts, val_ids = load_split(validation_path, labels)
    encode = lambda texts: dict(  # noqa: E731
        tokenizer(texts, truncation=True, max_length=settings.max_seq_length)
    )
    train_enc, val_enc = encode(train_texts), encode(val_texts)
    lengths = [len(ids) for ids in train_enc["input_ids"]]
    steps_per_epoch = math.ceil(len(train_texts) / settings.batch_size)
    total_steps = steps_per_epoch * settings.epochs

    no_decay = ("bias", "LayerNorm.weight", "layernorm", "norm.weight")
    groups = [
        {
            "params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)],
            "weight_decay": settings.weight_decay,
        },
        {
            "params": [p for n, p in model.named_parameters() if n.endswith(no_decay)],
            "weight_decay": 0.0,
        },
    ]
    optimizer = torch.optim.AdamW(
        groups, lr=settings.learning_rate, fused=device.type == "cuda" or None
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        linear_warmup_decay(int(settings.warmup_ratio * total_steps), total_steps),
    )
    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    generator = np.random.default_rng(settings.seed)
    result = TrainResult(
        settings=settings,
        labels=labels,
        device=str(device),
        data_fingerprint=data_fingerprint,
        train_rows=len(train_texts),
        seconds=0.0,
    )
    best_f1, best_state = -1.0, None

    progress = tqdm(total=total_steps, desc="train", unit="step", mininterval=2.0)
    for epoch in range(1, settings.epochs + 1):
        model.train()
        epoch_loss, seen, epoch_started = 0.0, 0, time.perf_counter()
        for indices in length_grouped_batches(lengths, settings.batch_size, generator):
            batch = {
                k: v.to(device)
                for k, v in pad_batch(train_enc, indices, tokenizer.pad_token_id).items()
            }
            targets = torch.as_tensor(train_ids[indices], device=device)
            try:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                    logits = model(**batch).logits
                loss = torch.nn.functional.cross_entropy(logits.float(), targets)
                loss.backward()
            except torch.cuda.OutOfMemoryError as e:
                raise TrainingError(
                    f"CUDA ran out of memory at batch_size={settings.batch_size}, "
                    f"max_seq_length={settings.max_seq_length}: lower either, "
                    "or train on a GPU with more memory"
                ) from e
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"training loss became {loss.item()} at epoch {epoch}: lower learning_rate "
                    f"(now {settings.learning_rate})"
                )
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            epoch_loss += loss.item() * len(indices)
            seen += len(indices)
            progress.update(1)
            progress.set_postfix(loss=f"{loss.item():.4f}", epoch=epoch, refresh=False)
        epoch_seconds = time.perf_counter() - epoch_started

        val_logits = batched_logits(
            model, val_enc, pad_token_id=tokenizer.pad_token_id, device=device
        )
        val_loss = float(
            torch.nn.functional.cross_entropy(
                torch.from_numpy(val_logits), torch.from_numpy(val_ids)
            )
        )
        scores = classification_scores(val_ids, val_logits.argmax(axis=1), len(labels))
        record = {
            "epoch": float(epoch),
            "train_loss": epoch_loss / seen,
            "loss": val_loss,
            **scores,
            "samples_per_second": seen / epoch_seconds,
        }
        result.history.append(record)
        logger.info(
            "epoch=%d train_loss=%.4f val_loss=%.4f val_accuracy=%.4f val_macro_f1=%.4f "
            "samples_per_second=%.1f",
            epoch,
            record["train_loss"],
            val_loss,
            scores["accuracy"],
            scores["macro_f1"],
            record["samples_per_second"],
        )
        if scores["macro_f1"] > best_f1:
            best_f1, result.best_epoch = scores["macro_f1"], epoch
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    progress.close()

    assert best_state is not None  # at least one epoch ran
    model.load_state_dict(best_state)
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output)
    # Saved with the tokenizer, the training window is what evaluation and export truncate to.
    tokenizer.model_max_length = settings.max_seq_length
    tokenizer.save_pretrained(output)
    labels.save(output / "labels.json")
    result.seconds = time.perf_counter() - started
    logger.info(
        "trained best_epoch=%d val_macro_f1=%.4f seconds=%.1f device=%s",
        result.best_epoch,
        best_f1,
        result.seconds,
        device,
    )
    return result
