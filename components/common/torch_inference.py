"""Batched PyTorch inference over texts, for validation during training and for evaluation.

Imports torch; only the train, evaluate and export steps import this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def pick_device(requested: str) -> torch.device:
    """`auto` takes CUDA when present; `cuda` without a GPU is an error, not a silent CPU run."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        from textops.components.common.errors import ConfigError

        raise ConfigError("device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(requested)


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Index batches of similar length, so padding (wasted compute) stays small."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def pad_batch(
    encodings: dict[str, list[list[int]]], indices: Sequence[int] | np.ndarray, pad_token_id: int
) -> dict[str, torch.Tensor]:
    """Pad the rows `indices` of tokenized inputs to the longest among them."""
    width = max(len(encodings["input_ids"][i]) for i in indices)
    batch: dict[str, torch.Tensor] = {}
    for key, rows in encodings.items():
        pad = pad_token_id if key == "input_ids" else 0
        batch[key] = torch.tensor(
            [rows[i] + [pad] * (width - len(rows[i])) for i in indices], dtype=torch.long
        )
    return batch


@torch.inference_mode()
def batched_logits(
    model: Any,
    encodings: dict[str, list[list[int]]],
    *,
    pad_token_id: int,
    device: torch.device,
    batch_size: int = 64,
) -> np.ndarray:
    """Logits for every row of `encodings`, in the original row order."""
    model.eval()
    count = len(encodings["input_ids"])
    logits = np.zeros((count, model.config.num_labels), dtype=np.float32)
    lengths = [len(ids) for ids in encodings["input_ids"]]
    for indices in length_sorted_batches(lengths, batch_size):
        batch = {k: v.to(device) for k, v in pad_batch(encodings, indices, pad_token_id).items()}
        logits[indices] = model(**batch).logits.float().cpu().numpy()
    return logits
