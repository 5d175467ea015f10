"""What a training run starts from: seeds, the splits, the base model, optimizer, schedule and
class weights."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from textops.components.common.config import resolve_base_model
from textops.components.common.errors import DataError, ModelNotFoundError
from textops.components.common.labels import LabelMap


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


def learning_rate_multiplier(schedule: str, warmup_steps: int, total_steps: int) -> Any:
    """Linear warm-up to 1, then linear or cosine decay to 0 at `total_steps`."""

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0 - progress

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


def build_optimizer(
    model: torch.nn.Module, *, weight_decay: float, learning_rate: float, device: torch.device
) -> torch.optim.AdamW:
    """AdamW that decays every weight but biases and norms, whose decay only hurts."""
    no_decay = ("bias", "LayerNorm.weight", "layernorm.weight", "norm.weight")
    named = list(model.named_parameters())
    return torch.optim.AdamW(
        [
            {
                "params": [p for n, p in named if not n.endswith(no_decay)],
                "weight_decay": weight_decay,
            },
            {"params": [p for n, p in named if n.endswith(no_decay)], "weight_decay": 0.0},
        ],
        lr=learning_rate,
        # Fused AdamW (one kernel for all parameters) exists for CPU and CUDA tensors.
        fused=device.type in ("cpu", "cuda"),
    )


def balanced_class_weights(ids: np.ndarray, num_labels: int) -> torch.Tensor:
    """Weights n / (k * n_c): each class contributes equally to the loss."""
    counts = np.bincount(ids, minlength=num_labels).astype(np.float64)
    weights = len(ids) / (num_labels * np.maximum(counts, 1.0))
    return torch.tensor(weights, dtype=torch.float32)
