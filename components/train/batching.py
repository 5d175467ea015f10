"""Batches for training: shuffled, grouped by length, shared out between DDP processes, and
cut from a split tokenized once (`TokenRows`)."""

from __future__ import annotations

import numpy as np

#: Batches are formed inside shuffled windows of this many batches, sorted by length: most of
#: the padding saving of a full sort, with the randomness of a shuffle.
LENGTH_GROUP_WINDOW = 50


def length_grouped_batches(
    lengths: list[int] | np.ndarray, batch_size: int, generator: np.random.Generator
) -> list[np.ndarray]:
    """One epoch of index batches: shuffled, then sorted by length inside windows."""
    lengths = np.asarray(lengths)
    order = generator.permutation(len(lengths))
    window = batch_size * LENGTH_GROUP_WINDOW
    batches: list[np.ndarray] = []
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
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


class TokenRows:
    """A tokenized split as int arrays padded to its longest row: a batch is one slice.

    Built once per run, so that the loop never pads Python lists; each column (`input_ids`,
    `attention_mask`, ...) is an int64 array of shape (rows, longest row).
    """

    def __init__(self, encoding: dict[str, list[list[int]]], pad_token_id: int) -> None:
        rows = encoding["input_ids"]
        self.lengths = np.array([len(ids) for ids in rows], dtype=np.int64)
        longest = int(self.lengths.max()) if len(rows) else 0
        self.pads = {key: pad_token_id if key == "input_ids" else 0 for key in encoding}
        self.columns: dict[str, np.ndarray] = {}
        for key, values in encoding.items():
            column = np.full((len(values), longest), self.pads[key], dtype=np.int64)
            for i, row in enumerate(values):
                column[i, : len(row)] = row
            self.columns[key] = column

    def __len__(self) -> int:
        return len(self.lengths)

    def batch(self, indices: np.ndarray, width: int) -> dict[str, np.ndarray]:
        """Rows `indices`, `width` tokens wide; `width` is at least their longest row."""
        longest = self.columns["input_ids"].shape[1]
        cut = min(width, longest)
        batch = {key: column[indices, :cut] for key, column in self.columns.items()}
        if width > longest:  # a bucket wider than every row of the split
            batch = {
                key: np.pad(rows, ((0, 0), (0, width - longest)), constant_values=self.pads[key])
                for key, rows in batch.items()
            }
        return batch
