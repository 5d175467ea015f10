"""Training checkpoints, written atomically so a killed run resumes from the last whole one.

A checkpoint holds everything the loop needs to continue as if it had never stopped: weights,
optimizer, schedule and scaler state, the position in the epoch, every random state, the
history so far. The best epoch's weights live in a file of their own, written when they change.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from textops.components.common.errors import TrainingError

CHECKPOINT_FILE = "checkpoint.pt"
BEST_WEIGHTS_FILE = "best.pt"


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


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def remove_checkpoints(directory: Path) -> None:
    """Remove this module's files from `directory` (and the directory, when left empty)."""
    for name in (CHECKPOINT_FILE, BEST_WEIGHTS_FILE):
        (directory / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        directory.rmdir()
