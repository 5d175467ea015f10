"""Fine-tune a transformer sequence classifier. Read it top to bottom: `train_classifier`.

One process on CPU or one GPU, or one process per GPU under torchrun (DDP). bf16 autocast on
GPUs that support it, fp16 with a gradient scaler on the others, fp32 on CPU. Batches group
texts of similar length, so little compute goes to padding. The epoch with the best validation
macro-F1 is kept; with a checkpoint directory, a killed run resumes where it stopped.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from textops.components.common.errors import DataError, TrainingError
from textops.components.common.labels import LabelMap
from textops.components.common.metrics import classification_scores
from textops.components.common.torch_inference import batched_logits, pad_batch, pick_device
from textops.components.train import checkpoint
from textops.components.train.batching import length_grouped_batches, shard_batches
from textops.components.train.setup import (
    balanced_class_weights,
    learning_rate_multiplier,
    load_base_model,
    load_split,
    seed_everything,
)

logger = logging.getLogger(__name__)


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
    lr_schedule: Literal["linear", "cosine"] = "linear"
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    class_weights: Literal["none", "balanced"] = "none"
    early_stopping_patience: int = 0
    checkpoint_every_steps: int = 0
    seed: int = 42
    device: str = "auto"


@dataclass
class TrainResult:
    """What a run produced: per-epoch history and the metrics of the epoch kept."""

    settings: TrainSettings
    labels: LabelMap
    device: str
    data_fingerprint: str
    train_rows: int
    world_size: int = 1
    seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False
    resumed_from_step: int = 0
    optimizer_steps: int = 0

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
            "world_size": self.world_size,
            "train_rows": self.train_rows,
            "train_seconds": round(self.seconds, 2),
            "best_epoch": self.best_epoch,
            "epochs_run": len(self.history),
            "stopped_early": self.stopped_early,
            "resumed_from_step": self.resumed_from_step,
            "optimizer_steps": self.optimizer_steps,
            **self.best_metrics,
        }


def _distributed() -> tuple[int, int]:
    """(rank, world size) under torchrun; (0, 1) for a single process."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def train_classifier(
    *,
    train_path: str | Path,
    validation_path: str | Path,
    labels: LabelMap,
    settings: TrainSettings,
    output_dir: str | Path,
    data_fingerprint: str = "",
    checkpoint_dir: str | Path | None = None,
) -> TrainResult:
    """Fine-tune `settings.base_model` and save the best epoch to `output_dir`.

    `output_dir` becomes a Hugging Face model directory (weights, config with the label names,
    tokenizer whose `model_max_length` is the training window) plus `labels.json`. Under DDP
    every process trains and only rank 0 writes.

    Raises:
        ModelNotFoundError: The base model cannot be found or loaded.
        DataError: A split is empty or holds a label outside `labels`.
        TrainingError: Out of GPU memory, a diverging loss, or a checkpoint of another run.
    """
    if len(labels) < 2:
        raise DataError(f"training needs two classes or more; the labels are {list(labels.names)}")
    started = time.perf_counter()
    rank, world_size = _distributed()
    seed_everything(settings.seed)
    device = pick_device(settings.device)
    if world_size > 1 and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    tokenizer, model = load_base_model(settings.base_model, labels)
    model.to(device)
    # DDP averages gradients across processes during backward; `model` stays the bare module.
    trained = torch.nn.parallel.DistributedDataParallel(model) if world_size > 1 else model

    train_texts, train_ids = load_split(train_path, labels)
    val_texts, val_ids = load_split(validation_path, labels)
    train_enc = dict(tokenizer(train_texts, truncation=True, max_length=settings.max_seq_length))
    val_enc = dict(tokenizer(val_texts, truncation=True, max_length=settings.max_seq_length))
    lengths = [len(ids) for ids in train_enc["input_ids"]]
    micro_batches = len(
        shard_batches(
            length_grouped_batches(lengths, settings.batch_size, np.random.default_rng(0)),
            rank,
            world_size,
        )
    )
    steps_per_epoch = math.ceil(micro_batches / settings.gradient_accumulation_steps)
    total_steps = steps_per_epoch * settings.epochs

    no_decay = ("bias", "LayerNorm.weight", "layernorm.weight", "norm.weight")
    optimizer = torch.optim.AdamW(
        [
            {
                "params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)],
                "weight_decay": settings.weight_decay,
            },
            {
                "params": [p for n, p in model.named_parameters() if n.endswith(no_decay)],
                "weight_decay": 0.0,
            },
        ],
        lr=settings.learning_rate,
        # Fused AdamW (one kernel for all parameters) exists for CPU and CUDA tensors.
        fused=device.type in ("cpu", "cuda"),
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        learning_rate_multiplier(
            settings.lr_schedule, int(settings.warmup_ratio * total_steps), total_steps
        ),
    )
    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    use_fp16 = device.type == "cuda" and not use_bf16
    autocast_dtype = torch.bfloat16 if use_bf16 else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_fp16)
    class_weights = (
        balanced_class_weights(train_ids, len(labels)).to(device)
        if settings.class_weights == "balanced"
        else None
    )

    result = TrainResult(
        settings=settings,
        labels=labels,
        device=str(device),
        data_fingerprint=data_fingerprint,
        train_rows=len(train_texts),
        world_size=world_size,
    )
    generator = np.random.default_rng(settings.seed)
    best_state: dict[str, torch.Tensor] | None = None
    best_f1, epochs_without_gain, first_epoch, skip_batches = -1.0, 0, 1, 0
    epoch_loss, seen, step = 0.0, 0, 0
    checkpoints = Path(checkpoint_dir) if checkpoint_dir else None
    identity = checkpoint.run_identity(
        {**asdict(settings), "labels": labels.names, "data": data_fingerprint, "world": world_size}
    )
    if checkpoints is not None:
        state = checkpoint.load_checkpoint(checkpoints, identity)
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            schedule.load_state_dict(state["schedule"])
            scaler.load_state_dict(state["scaler"])
            generator.bit_generator.state = state["epoch_generator"]
            checkpoint.restore_rng_state(state["rng"])
            result.history = state["history"]
            best_f1, result.best_epoch = state["best_f1"], state["best_epoch"]
            epochs_without_gain = state["epochs_without_gain"]
            first_epoch, skip_batches, step = state["epoch"], state["batch_index"], state["step"]
            epoch_loss, seen = state["epoch_loss"], state["seen"]
            result.resumed_from_step = step
            logger.info("resumed step=%d epoch=%d from=%s", step, first_epoch, checkpoints)

    def save_checkpoint(epoch: int, batch_index: int, epoch_generator: Mapping[str, Any]) -> None:
        if checkpoints is None or rank != 0:
            return
        checkpoint.save_atomically(
            {
                "identity": identity,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "scaler": scaler.state_dict(),
                "epoch_generator": epoch_generator,
                "rng": checkpoint.rng_state(),
                "history": result.history,
                "best_f1": best_f1,
                "best_epoch": result.best_epoch,
                "epochs_without_gain": epochs_without_gain,
                "epoch": epoch,
                "batch_index": batch_index,
                "step": step,
                "epoch_loss": epoch_loss,
                "seen": seen,
            },
            checkpoints / checkpoint.CHECKPOINT_FILE,
        )

    progress = tqdm(
        total=total_steps, initial=step, desc="train", unit="step", mininterval=2.0,
        disable=rank != 0,
    )  # fmt: skip
    for epoch in range(first_epoch, settings.epochs + 1):
        # The generator's state at the start of an epoch fixes its batch order, so a resumed
        # run rebuilds the same batches and skips those already done.
        epoch_generator = generator.bit_generator.state
        batches = shard_batches(
            length_grouped_batches(lengths, settings.batch_size, generator), rank, world_size
        )
        trained.train()
        if skip_batches == 0:
            epoch_loss, seen = 0.0, 0
        epoch_started = time.perf_counter()
        seen_at_start = seen
        step_loss = torch.zeros((), device=device)
        for index in range(skip_batches, len(batches)):
            indices = batches[index]
            batch = {
                k: v.to(device)
                for k, v in pad_batch(train_enc, indices, tokenizer.pad_token_id).items()
            }
            targets = torch.as_tensor(train_ids[indices], device=device)
            try:
                with torch.autocast(
                    device.type, dtype=autocast_dtype, enabled=use_bf16 or use_fp16
                ):
                    logits = trained(**batch).logits
                loss = torch.nn.functional.cross_entropy(
                    logits.float(), targets, weight=class_weights
                )
                scaler.scale(loss / settings.gradient_accumulation_steps).backward()
            except torch.cuda.OutOfMemoryError as e:
                raise TrainingError(
                    f"CUDA ran out of memory at batch_size={settings.batch_size}, "
                    f"max_seq_length={settings.max_seq_length}: lower batch_size and raise "
                    "gradient_accumulation_steps to keep the effective batch, lower "
                    "max_seq_length, or train on a GPU with more memory"
                ) from e
            # Summed on the device: reading the loss every batch would stall a GPU.
            step_loss = step_loss + loss.detach() * len(indices)
            seen += len(indices)
            last = index == len(batches) - 1
            if (index + 1) % settings.gradient_accumulation_steps and not last:
                continue
            step_loss_value = step_loss.item()
            if not math.isfinite(step_loss_value):
                raise TrainingError(
                    f"training loss became {step_loss_value} at epoch {epoch}: lower "
                    f"learning_rate (now {settings.learning_rate})"
                )
            epoch_loss += step_loss_value
            step_loss = torch.zeros((), device=device)
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            progress.update(1)
            progress.set_postfix(loss=f"{epoch_loss / seen:.4f}", epoch=epoch, refresh=False)
            if settings.checkpoint_every_steps and step % settings.checkpoint_every_steps == 0:
                save_checkpoint(epoch, index + 1, epoch_generator)
        skip_batches = 0
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
            "train_loss": epoch_loss / max(1, seen),
            "loss": val_loss,
            **scores,
            "samples_per_second": (seen - seen_at_start) * world_size / max(epoch_seconds, 1e-9),
        }
        result.history.append(record)
        if rank == 0:
            logger.info(
                "epoch=%d train_loss=%.4f val_loss=%.4f val_accuracy=%.4f val_macro_f1=%.4f "
                "samples_per_second=%.1f",
                epoch, record["train_loss"], val_loss, scores["accuracy"],
                scores["macro_f1"], record["samples_per_second"],
            )  # fmt: skip
        if scores["macro_f1"] > best_f1:
            best_f1, result.best_epoch, epochs_without_gain = scores["macro_f1"], epoch, 0
            if checkpoints is not None and rank == 0:
                checkpoint.save_atomically(
                    model.state_dict(), checkpoints / checkpoint.BEST_WEIGHTS_FILE
                )
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            epochs_without_gain += 1
        epoch_loss, seen = 0.0, 0
        save_checkpoint(epoch + 1, 0, generator.bit_generator.state)
        if (
            settings.early_stopping_patience
            and epochs_without_gain >= settings.early_stopping_patience
        ):
            result.stopped_early = epoch < settings.epochs
            if rank == 0:
                logger.info("early stop epoch=%d best_epoch=%d", epoch, result.best_epoch)
            break
    progress.close()

    if best_state is None:
        # Resumed after the best epoch: its weights are in the checkpoint directory.
        assert checkpoints is not None
        best_state = torch.load(
            checkpoints / checkpoint.BEST_WEIGHTS_FILE, map_location="cpu", weights_only=True
        )
    model.load_state_dict(best_state)
    result.optimizer_steps = step
    result.seconds = time.perf_counter() - started
    if rank == 0:
        output = Path(output_dir)
        output.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(output)
        # Saved with the tokenizer, the training window is what evaluation and export use.
        tokenizer.model_max_length = settings.max_seq_length
        tokenizer.save_pretrained(output)
        labels.save(output / "labels.json")
        if checkpoints is not None:
            # The run is complete: the next run with the same settings must train afresh.
            checkpoint.remove_checkpoints(checkpoints)
        logger.info(
            "trained best_epoch=%d val_macro_f1=%.4f seconds=%.1f device=%s world_size=%d",
            result.best_epoch, best_f1, result.seconds, device, world_size,
        )  # fmt: skip
    return result
