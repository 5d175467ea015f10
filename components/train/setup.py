"""What a training run starts from: seeds, the splits, the base model, optimizer, schedule and
class weights, put together by `set_up`."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from textops.components.common.config import resolve_base_model
from textops.components.common.errors import DataError, ModelNotFoundError
from textops.components.common.labels import LabelMap
from textops.components.common.long_text import encode_with_hf
from textops.components.common.settings import TrainSettings
from textops.components.common.torch_inference import pick_device
from textops.components.train.batching import TokenRows, length_grouped_batches, shard_batches
from textops.components.train.checkpoint import distributed
from textops.components.train.techniques import BUCKET_TOKENS, DEFAULT_TECHNIQUES, Techniques


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


def load_base_model(base_model: str, labels: LabelMap, attention: str = "sdpa") -> tuple[Any, Any]:
    """Tokenizer and a classification model with a fresh head sized to `labels`.

    `attention` is the model's attention implementation: "sdpa" (torch's fused
    scaled-dot-product attention) or "eager" (the model's own matrix products).
    """
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
            attn_implementation=attention,
        )
    except OSError as e:
        raise ModelNotFoundError(
            f"cannot load base model {base_model!r}: {e}. Give a local Hugging Face model "
            "directory, or a hub id when the machine can reach the hub."
        ) from e
    return tokenizer, model


def build_optimizer(
    model: torch.nn.Module,
    *,
    weight_decay: float,
    learning_rate: float,
    device: torch.device,
    fused: bool = True,
) -> torch.optim.AdamW:
    """AdamW that decays every weight but biases and norms, whose decay only hurts.

    `fused`: one kernel for all parameters where torch has one (CPU and CUDA); otherwise
    torch's default implementation.
    """
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
        # Fused AdamW exists for CPU and CUDA tensors; None lets torch choose (foreach).
        fused=True if fused and device.type in ("cpu", "cuda") else None,
    )


def compiled(module: torch.nn.Module, max_seq_length: int) -> Any:
    """`module` under `torch.compile`, one static graph per batch shape.

    Bucketed batches bring few shapes: a bucket width each, times two row counts (full
    batches and the epoch's last one), so torch may keep that many graphs instead of its
    default 8, past which it would silently fall back to eager.
    """
    import torch._dynamo

    shapes = 2 * math.ceil(max_seq_length / BUCKET_TOKENS)
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, shapes)
    return torch.compile(module, dynamic=False)


def balanced_class_weights(ids: np.ndarray, num_labels: int) -> torch.Tensor:
    """Weights n / (k * n_c): each class contributes equally to the loss."""
    counts = np.bincount(ids, minlength=num_labels).astype(np.float64)
    weights = len(ids) / (num_labels * np.maximum(counts, 1.0))
    return torch.tensor(weights, dtype=torch.float32)


@dataclass
class TrainingSetup:
    """What the loop works with, built once per run: model, encoded splits, optimizer."""

    settings: TrainSettings
    labels: LabelMap
    rank: int
    world_size: int
    device: torch.device
    tokenizer: Any
    #: The bare model: its weights are what is saved, evaluated and checkpointed.
    model: Any
    #: What the training forward pass calls: `model`, wrapped in DDP under torchrun.
    trained: torch.nn.Module
    #: The training split, tokenized once into int arrays that batches are sliced from.
    train_rows: TokenRows
    train_ids: np.ndarray
    validation_encoding: dict[str, Any]
    validation_ids: np.ndarray
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    #: bf16 or fp16 for autocast; None trains in fp32.
    autocast_dtype: torch.dtype | None
    class_weights: torch.Tensor | None
    total_steps: int
    techniques: Techniques

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per training text, which the batches group by."""
        return self.train_rows.lengths


def set_up(
    settings: TrainSettings,
    labels: LabelMap,
    train_path: str | Path,
    validation_path: str | Path,
    techniques: Techniques = DEFAULT_TECHNIQUES,
) -> TrainingSetup:
    """Seed, load the base model and the splits, and build the optimizer for `settings`."""
    rank, world_size = distributed()
    seed_everything(settings.seed)
    device = pick_device(settings.device)
    if world_size > 1 and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    attention = "sdpa" if techniques.flash_attention else "eager"
    tokenizer, model = load_base_model(settings.base_model, labels, attention)
    model.to(device)
    # DDP averages gradients across processes during backward; `model` stays the bare module.
    trained = torch.nn.parallel.DistributedDataParallel(model) if world_size > 1 else model
    if techniques.compile:
        trained = compiled(trained, settings.max_seq_length)

    train_texts, train_ids = load_split(train_path, labels)
    val_texts, val_ids = load_split(validation_path, labels)
    train_enc = encode_with_hf(
        tokenizer, train_texts, settings.max_seq_length, settings.long_text_strategy
    )
    val_enc = encode_with_hf(
        tokenizer, val_texts, settings.max_seq_length, settings.long_text_strategy
    )
    train_rows = TokenRows(train_enc, tokenizer.pad_token_id)
    # Every epoch has this many batches; only their order changes.
    micro_batches = len(
        shard_batches(
            length_grouped_batches(
                train_rows.lengths, settings.batch_size, np.random.default_rng(0)
            ),
            rank,
            world_size,
        )
    )
    total_steps = math.ceil(micro_batches / settings.gradient_accumulation_steps) * settings.epochs

    optimizer = build_optimizer(
        model,
        weight_decay=settings.weight_decay,
        learning_rate=settings.learning_rate,
        device=device,
        fused=techniques.fused_optimizer,
    )
    warmup_steps = int(settings.warmup_ratio * total_steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, learning_rate_multiplier(settings.lr_schedule, warmup_steps, total_steps)
    )
    autocast_dtype = None
    if device.type == "cuda":
        autocast_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return TrainingSetup(
        settings=settings,
        labels=labels,
        rank=rank,
        world_size=world_size,
        device=device,
        tokenizer=tokenizer,
        model=model,
        trained=trained,
        train_rows=train_rows,
        train_ids=train_ids,
        validation_encoding=val_enc,
        validation_ids=val_ids,
        optimizer=optimizer,
        schedule=schedule,
        # fp16 gradients underflow without loss scaling; bf16 and fp32 ones do not.
        scaler=torch.amp.GradScaler("cuda", enabled=autocast_dtype == torch.float16),
        autocast_dtype=autocast_dtype,
        class_weights=(
            balanced_class_weights(train_ids, len(labels)).to(device)
            if settings.class_weights == "balanced"
            else None
        ),
        total_steps=total_steps,
        techniques=techniques,
    )
