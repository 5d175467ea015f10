"""Fine-tune a transformer sequence classifier. Read it top to bottom: `train_classifier`.

One process on CPU or one GPU, or one process per GPU under torchrun (DDP). bf16 autocast on
GPUs that support it, fp16 with a gradient scaler on the others, fp32 on CPU. Batches group
texts of similar length, so little compute goes to padding. The epoch with the best validation
macro-F1 is kept; with a checkpoint directory, a killed run resumes where it stopped (its
resumable state is `checkpoint.TrainState`).

The loop keeps the device busy (`techniques.Techniques`): batch lengths are bucketed on CUDA, so few
shapes recur; the next step's batches are padded (and pinned, on CUDA) in a background thread;
the loss is read on the host only every few steps; AdamW is fused; attention is SDPA.

The pieces, in the order the loop uses them: `setup.set_up` (model, data, optimizer),
`epoch_batches`, `step_batches`, `train_step`, `evaluate_epoch`, `save_model`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from textops.components.common.errors import DataError, TrainingError
from textops.components.common.labels import LabelMap
from textops.components.common.metrics import classification_scores
from textops.components.common.settings import TrainSettings
from textops.components.common.torch_inference import batched_logits
from textops.components.train.batching import length_grouped_batches, shard_batches
from textops.components.train.checkpoint import Checkpoints, TrainState, run_identity
from textops.components.train.setup import TrainingSetup, set_up
from textops.components.train.techniques import (
    DEFAULT_TECHNIQUES,
    SYNC_EVERY_STEPS,
    LossTally,
    Techniques,
    attention_backends,
    bucketed_width,
    prefetched,
)

logger = logging.getLogger(__name__)


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
            **self.settings.model_dump(),
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


def train_classifier(
    *,
    train_path: str | Path,
    validation_path: str | Path,
    labels: LabelMap,
    settings: TrainSettings,
    output_dir: str | Path,
    data_fingerprint: str = "",
    checkpoint_dir: str | Path | None = None,
    techniques: Techniques = DEFAULT_TECHNIQUES,
) -> TrainResult:
    """Fine-tune `settings.base_model` and save the best epoch to `output_dir`.

    `output_dir` becomes a Hugging Face model directory (weights, config with the label names,
    tokenizer whose `model_max_length` is the training window) plus `labels.json`. Under DDP
    every process trains and only rank 0 writes. `techniques` switches the loop's speed
    techniques (all on but compile by default); none of them changes what is learnt.

    Raises:
        ModelNotFoundError: The base model cannot be found or loaded.
        DataError: A split is empty or holds a label outside `labels`.
        TrainingError: Out of GPU memory, a diverging loss, or a checkpoint of another run.
    """
    if len(labels) < 2:
        raise DataError(f"training needs two classes or more; the labels are {list(labels.names)}")
    started = time.perf_counter()
    run = set_up(settings, labels, train_path, validation_path, techniques)
    state = TrainState(
        model=run.model, optimizer=run.optimizer, schedule=run.schedule, scaler=run.scaler,
        batch_order=dict(np.random.default_rng(settings.seed).bit_generator.state),
    )  # fmt: skip
    identity = {**settings.model_dump(), "labels": labels.names, "data": data_fingerprint}
    checkpoints = Checkpoints(
        Path(checkpoint_dir) if checkpoint_dir else None,
        identity=run_identity({**identity, "world": run.world_size}),
        writer=run.rank == 0,
    )
    resumed_from_step = checkpoints.resume(state)
    best_weights: dict[str, torch.Tensor] | None = None  # None: the kept epoch ran before a resume
    stopped_early = False
    progress = tqdm(
        total=run.total_steps, initial=state.step, desc="train", unit="step", mininterval=2.0,
        disable=run.rank != 0,
    )  # fmt: skip
    while state.epoch <= settings.epochs:
        batches, next_batch_order = epoch_batches(run, state.batch_order)
        record = train_epoch(run, state, batches, checkpoints, progress)
        state.history.append(record)
        _log_epoch(run, record)
        if record["macro_f1"] > state.best_f1:
            state.best_f1, state.best_epoch = record["macro_f1"], state.epoch
            state.epochs_without_gain = 0
            best_weights = checkpoints.keep_best(run.model)
        else:
            state.epochs_without_gain += 1
        state.next_epoch(next_batch_order)
        checkpoints.save(state)
        if 0 < settings.early_stopping_patience <= state.epochs_without_gain:
            stopped_early = state.epoch <= settings.epochs  # epochs were left to run
            if run.rank == 0:
                logger.info("early stop epoch=%d best_epoch=%d", state.epoch - 1, state.best_epoch)
            break
    progress.close()

    run.model.load_state_dict(best_weights or checkpoints.best_weights())
    result = TrainResult(
        settings=settings, labels=labels, device=str(run.device),
        data_fingerprint=data_fingerprint, train_rows=len(run.train_ids),
        world_size=run.world_size, seconds=time.perf_counter() - started,
        history=state.history, best_epoch=state.best_epoch, stopped_early=stopped_early,
        resumed_from_step=resumed_from_step, optimizer_steps=state.step,
    )  # fmt: skip
    if run.rank == 0:
        save_model(run, output_dir)
        checkpoints.remove()
        logger.info(
            "trained best_epoch=%d val_macro_f1=%.4f seconds=%.1f device=%s world_size=%d",
            result.best_epoch, state.best_f1, result.seconds, run.device, run.world_size,
        )  # fmt: skip
    return result


def train_epoch(
    run: TrainingSetup,
    state: TrainState,
    batches: list[np.ndarray],
    checkpoints: Checkpoints,
    progress: tqdm,
) -> dict[str, float]:
    """Train on `batches` from `state.batch_index` to the epoch's end, then score validation.

    Saves a checkpoint every `checkpoint_every_steps` optimizer steps. Returns the epoch's
    record: train loss, the validation scores, and training rows and tokens per second.
    """
    accumulate = run.settings.gradient_accumulation_steps
    every = run.settings.checkpoint_every_steps
    sync_every = SYNC_EVERY_STEPS if run.techniques.deferred_sync else 1
    starts = range(state.batch_index, len(batches), accumulate)
    steps = (step_batches(run, batches[start : start + accumulate]) for start in starts)
    tally = LossTally(run.device)
    run.trained.train()
    started, seen_at_start = time.perf_counter(), state.seen
    tokens = padded_tokens = 0
    ahead: Generator[list[Batch], None, None] = (
        prefetched(steps) if run.techniques.prefetch else steps
    )
    with contextlib.closing(ahead):
        for start, group in zip(starts, ahead, strict=True):
            step = state.step + 1
            checkpoint_due = every > 0 and step % every == 0
            # The loss is read (and checked) only here: before a checkpoint, so none holds a
            # diverged model, and at the epoch's end, before validation and keeping the best.
            read = step % sync_every == 0 or checkpoint_due or start + accumulate >= len(batches)
            loss = train_step(run, group, state.epoch, tally, read=read)
            state.seen += sum(batch.rows for batch in group)
            state.batch_index, state.step = start + len(group), step
            tokens += sum(batch.tokens for batch in group)
            padded_tokens += sum(batch.padded_tokens for batch in group)
            progress.update(1)
            if loss is not None:
                state.epoch_loss += loss
                progress.set_postfix(
                    loss=f"{state.epoch_loss / max(1, state.seen):.4f}", epoch=state.epoch,
                    refresh=False,
                )  # fmt: skip
            if checkpoint_due:
                checkpoints.save(state)
    seconds = max(time.perf_counter() - started, 1e-9)
    rows = (state.seen - seen_at_start) * run.world_size
    return {
        "epoch": float(state.epoch),
        "train_loss": state.epoch_loss / max(1, state.seen),
        **evaluate_epoch(run),
        "samples_per_second": rows / seconds,
        "tokens_per_second": tokens * run.world_size / seconds,
        "padded_tokens_per_second": padded_tokens * run.world_size / seconds,
    }


def epoch_batches(
    run: TrainingSetup, batch_order: dict[str, Any]
) -> tuple[list[np.ndarray], dict[str, Any]]:
    """This process's batches for the epoch that `batch_order` draws, and the next epoch's order.

    `batch_order` is a generator state, so a resumed run draws the very same batches again.
    """
    generator = np.random.default_rng(0)  # its state is replaced at once
    generator.bit_generator.state = batch_order
    batches = length_grouped_batches(run.lengths, run.settings.batch_size, generator)
    return shard_batches(batches, run.rank, run.world_size), generator.bit_generator.state


@dataclass(frozen=True)
class Batch:
    """One micro-batch on the host, padded and ready to copy to the device."""

    inputs: dict[str, torch.Tensor]
    targets: torch.Tensor
    rows: int
    #: Real (unpadded) tokens, and tokens after padding.
    tokens: int
    padded_tokens: int


def step_batches(run: TrainingSetup, group: list[np.ndarray]) -> list[Batch]:
    """The micro-batches of one optimizer step, padded (to a bucket width when bucketing).

    With prefetch on CUDA this runs in the prefetch thread and pins the tensors, so that the
    loop's copies to the GPU do not wait.
    """
    pin = run.techniques.prefetch and run.device.type == "cuda"
    batches = []
    for indices in group:
        lengths = run.lengths[indices]
        width = bucketed_width(
            int(lengths.max()), run.settings.max_seq_length, run.techniques.buckets_on(run.device)
        )
        inputs = {k: torch.from_numpy(v) for k, v in run.train_rows.batch(indices, width).items()}
        targets = torch.from_numpy(run.train_ids[indices])
        if pin:
            inputs = {k: v.pin_memory() for k, v in inputs.items()}
            targets = targets.pin_memory()
        batches.append(
            Batch(inputs, targets, len(indices), int(lengths.sum()), len(indices) * width)
        )
    return batches


def train_step(
    run: TrainingSetup, group: list[Batch], epoch: int, tally: LossTally, *, read: bool
) -> float | None:
    """One optimizer step over `group`'s batches (gradient accumulation).

    The step's loss (the sum over the batches of mean loss x rows) is added to `tally` on the
    device. With `read`, or without deferred sync, the tally is read and checked before the
    optimizer steps; otherwise nothing waits for the device.

    Returns:
        The tally read, the summed loss since the last read; None when it was not read.

    Raises:
        TrainingError: CUDA ran out of memory, or the loss is no longer finite.
    """
    settings = run.settings
    non_blocking = run.techniques.prefetch  # the tensors are pinned then (on CUDA)
    for batch in group:
        inputs = {k: v.to(run.device, non_blocking=non_blocking) for k, v in batch.inputs.items()}
        targets = batch.targets.to(run.device, non_blocking=non_blocking)
        try:
            with (
                attention_backends(run.device, run.techniques.flash_attention),
                torch.autocast(
                    run.device.type,
                    dtype=run.autocast_dtype,
                    enabled=run.autocast_dtype is not None,
                ),
            ):
                logits = run.trained(**inputs).logits
            loss = torch.nn.functional.cross_entropy(
                logits.float(), targets, weight=run.class_weights
            )
            run.scaler.scale(loss / settings.gradient_accumulation_steps).backward()
        except torch.cuda.OutOfMemoryError as e:
            raise TrainingError(
                f"CUDA ran out of memory at batch_size={settings.batch_size}, "
                f"max_seq_length={settings.max_seq_length}: lower batch_size and raise "
                "gradient_accumulation_steps to keep the effective batch, lower "
                "max_seq_length, or train on a GPU with more memory"
            ) from e
        tally.add(loss.detach() * batch.rows)
    summed = None
    if read or not run.techniques.deferred_sync:
        summed = tally.read()
        if not math.isfinite(summed):
            raise TrainingError(
                f"training loss became {summed} at epoch {epoch}: lower "
                f"learning_rate (now {settings.learning_rate})"
            )
    run.scaler.unscale_(run.optimizer)
    torch.nn.utils.clip_grad_norm_(run.model.parameters(), settings.max_grad_norm)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.schedule.step()
    run.optimizer.zero_grad(set_to_none=True)
    return summed


def evaluate_epoch(run: TrainingSetup) -> dict[str, float]:
    """Validation loss and scores (accuracy, macro and weighted F1) of the model as it is."""
    with attention_backends(run.device, run.techniques.flash_attention):
        logits = batched_logits(
            run.model,
            run.validation_encoding,
            pad_token_id=run.tokenizer.pad_token_id,
            device=run.device,
        )
    loss = torch.nn.functional.cross_entropy(
        torch.from_numpy(logits), torch.from_numpy(run.validation_ids)
    )
    scores = classification_scores(run.validation_ids, logits.argmax(axis=1), len(run.labels))
    return {"loss": float(loss), **scores}


def _log_epoch(run: TrainingSetup, record: dict[str, float]) -> None:
    if run.rank == 0:
        logger.info(
            "epoch=%d train_loss=%.4f val_loss=%.4f val_accuracy=%.4f val_macro_f1=%.4f "
            "samples_per_second=%.1f",
            record["epoch"], record["train_loss"], record["loss"], record["accuracy"],
            record["macro_f1"], record["samples_per_second"],
        )  # fmt: skip


def save_model(run: TrainingSetup, output_dir: str | Path) -> None:
    """Write the model, the tokenizer and `labels.json` as a Hugging Face model directory."""
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    run.model.save_pretrained(output)
    # Saved with the tokenizer, the training window is what evaluation and export use.
    run.tokenizer.model_max_length = run.settings.max_seq_length
    run.tokenizer.save_pretrained(output)
    run.labels.save(output / "labels.json")
