"""Batches for training: shuffled, grouped by length, and shared out between DDP processes."""

from __future__ import annotations

import numpy as np

#: Batches are formed inside shuffled windows of this many batches, sorted by length: most of
#: the padding saving of a full sort, with the randomness of a shuffle.
LENGTH_GROUP_WINDOW = 50


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


def shard_batches(batches: list[np.ndarray], rank: int, world_size: int) -> list[np.ndarray]:
    """This process's share of an epoch's batches under DDP.

    Every process draws the same batch list (same seed) and takes every `world_size`-th batch;
    the list is cut to a multiple of `world_size` so that all processes step together.
    """
    if world_size == 1:
        return batches
    usable = len(batches) - len(batches) % world_size
    return batches[rank:usable:world_size]
