"""Training checkpoints: the resumable state of a run, written atomically.

`TrainState` is everything the loop needs to continue as if it had never stopped: weights,
optimizer, schedule and scaler state, the position in the epoch, every random state, the
history so far. Its fields are listed once; saving and restoring walk them. The best epoch's
weights live in a file of their own, written when they change.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
import torch.distributed as dist

from textops.components.common.errors import TrainingError

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
BEST_WEIGHTS_FILE = "best.pt"
#: The checkpoint's key holding `TrainState.state_dict()`; a file without it is of another format.
STATE_KEY = "train_state"


@runtime_checkable
class Stateful(Protocol):
    """Something that saves and restores itself, as torch modules and optimizers do."""

    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> Any: ...


def distributed() -> tuple[int, int]:
    """(rank, world size) under torchrun; (0, 1) for a single process."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class RandomStates:
    """torch's global random state (CPU and this process's GPU) in every DDP process.

    Dropout draws from it. Under DDP each process draws for batches of its own, and a GPU's
    generator advances by the size of each draw, so the processes' states can differ: every
    process's state is saved, and each gets its own back.
    """

    def state_dict(self) -> list[dict[str, torch.Tensor]]:
        """Every process's state, by rank; a collective call under DDP."""
        own = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            own["cuda"] = torch.cuda.get_rng_state()
        _, world_size = distributed()
        if world_size == 1:
            return [own]
        states: list[Any] = [None] * world_size
        dist.all_gather_object(states, own)
        return states

    def load_state_dict(self, states: list[dict[str, torch.Tensor]]) -> None:
        own = states[distributed()[0]]
        torch.set_rng_state(own["torch"])
        # A run checkpointed on a GPU may resume on the CPU (device "auto").
        if "cuda" in own and torch.cuda.is_available():
            torch.cuda.set_rng_state(own["cuda"])


@dataclass
class TrainState:
    """Everything a killed run needs to continue bit for bit where it stopped.

    A `Stateful` field is saved through its `state_dict` and restored into the live object;
    any other field is saved and restored as it is.
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    #: The batch-order generator's state at the start of `epoch`: it fixes the epoch's batches,
    #: so a resumed run draws them again and skips the first `batch_index`.
    batch_order: dict[str, Any]
    random: RandomStates = field(default_factory=RandomStates)
    epoch: int = 1
    batch_index: int = 0
    #: Optimizer steps taken since the run began.
    step: int = 0
    #: This epoch's summed step losses and the rows they came from, so far.
    epoch_loss: float = 0.0
    seen: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_f1: float = -1.0
    best_epoch: int = 0
    epochs_without_gain: int = 0

    def state_dict(self) -> dict[str, Any]:
        """Every field, as `torch.save` can write it; a collective call under DDP."""
        return {
            f.name: value.state_dict() if isinstance(value, Stateful) else value
            for f in fields(self)
            for value in (getattr(self, f.name),)
        }

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Restore every field from `state_dict()`'s output, into the live objects.

        Raises:
            TrainingError: `saved` does not hold exactly this class's fields.
        """
        names = {f.name for f in fields(self)}
        if set(saved) != names:
            raise TrainingError(
                "the checkpoint's training state has fields "
                f"{sorted(set(saved) ^ names)} that this version of textops does not expect"
            )
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Stateful):
                value.load_state_dict(saved[f.name])
            else:
                setattr(self, f.name, saved[f.name])

    def next_epoch(self, batch_order: dict[str, Any]) -> None:
        """Move to the start of the next epoch, whose batches `batch_order` draws."""
        self.epoch += 1
        self.batch_index, self.epoch_loss, self.seen = 0, 0.0, 0
        self.batch_order = batch_order


def run_identity(fields: dict[str, Any]) -> str:
    """A digest of what makes two runs the same run; a checkpoint resumes only its own run."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


def save_atomically(obj: Any, path: Path) -> None:
    """torch.save to a temporary file beside `path`, then rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.partial")
    with scratch.open("wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(scratch, path)


def load_checkpoint(directory: Path, identity: str) -> dict[str, Any] | None:
    """The last checkpoint of this run in `directory`, or None when there is none.

    Raises:
        TrainingError: The checkpoint belongs to another run (other data, labels or settings).
    """
    path = directory / CHECKPOINT_FILE
    if not path.is_file():
        return None
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("identity") != identity:
        raise TrainingError(
            f"{path} is a checkpoint of another run (other data, labels or settings): "
            "remove it, or give another checkpoint directory"
        )
    return state


def remove_checkpoints(directory: Path) -> None:
    """Remove this module's files from `directory` (and the directory, when left empty)."""
    for name in (CHECKPOINT_FILE, BEST_WEIGHTS_FILE):
        (directory / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        directory.rmdir()


@dataclass(frozen=True)
class Checkpoints:
    """The checkpoint directory of one run; without a directory, nothing is kept.

    Under DDP every process calls `save` (the random states are gathered from all of them)
    and only the writer, rank 0, writes.
    """

    directory: Path | None
    identity: str
    writer: bool

    def resume(self, state: TrainState) -> int:
        """Restore `state` from this run's checkpoint; the step it resumes from (0: none).

        Raises:
            TrainingError: The checkpoint is of another run, or of another format.
        """
        saved = load_checkpoint(self.directory, self.identity) if self.directory else None
        if saved is None:
            return 0
        if STATE_KEY not in saved:
            raise TrainingError(
                f"{self.directory} holds a checkpoint of an older textops version, which "
                "cannot be resumed: remove it to train afresh"
            )
        state.load_state_dict(saved[STATE_KEY])
        logger.info("resumed step=%d epoch=%d from=%s", state.step, state.epoch, self.directory)
        return state.step

    def save(self, state: TrainState) -> None:
        """Write `state` so that a killed run resumes from here."""
        if self.directory is None:
            return
        saved = {"identity": self.identity, STATE_KEY: state.state_dict()}
        if self.writer:
            save_atomically(saved, self.directory / CHECKPOINT_FILE)

    def keep_best(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """A CPU copy of `model`'s weights, also written where a resumed run finds them."""
        if self.directory is not None and self.writer:
            save_atomically(model.state_dict(), self.directory / BEST_WEIGHTS_FILE)
        return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

    def best_weights(self) -> dict[str, torch.Tensor]:
        """The best epoch's weights as `keep_best` wrote them, before the run was resumed."""
        assert self.directory is not None, "only a resumed run lacks its best weights in memory"
        weights: dict[str, torch.Tensor] = torch.load(
            self.directory / BEST_WEIGHTS_FILE, map_location="cpu", weights_only=True
        )
        return weights

    def remove(self) -> None:
        """The run is complete: the next run with the same settings must train afresh."""
        if self.directory is not None and self.writer:
            remove_checkpoints(self.directory)
