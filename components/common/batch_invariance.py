"""Batch invariance: a text's answer must not depend on the texts it shares a batch with.

The predictor coalesces concurrent requests into one ONNX Runtime call, padded to the longest
text, so a request is computed beside strangers. A graph whose arithmetic couples the rows of a
batch then answers the same text differently from one call to the next: dynamic INT8
quantization, which takes one activation scale over the whole padded batch, moved
probabilities by up to 0.3 and flipped labels that way. This check classifies probe texts
alone, then inside batches of several mixes (with each other, with short neighbours, with
long ones, with neighbours chosen for extreme activations, padded to several lengths), and
compares each probe's probabilities. Export runs it on every graph before it ships one, and
the predictor's default precision trusts an INT8 graph only when export recorded it as
passed. It imports onnxruntime only to run a graph, so reading a bundle's record stays light.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

logger = logging.getLogger(__name__)

#: Largest change of any class probability a text may show between being classified alone
#: and inside any batch, per precision. fp32 and statically quantized INT8 compute each row
#: with fixed arithmetic, so only the order of float sums may differ with the batch shape
#: (ONNX Runtime 1.32 on CPU: no difference at all); INT8 gets ten times fp32's room because
#: one float ulp before a fixed-scale QuantizeLinear can round to the next step. fp16 on a GPU
#: may run another GEMM algorithm for another batch shape, each rounding at 2**-11; bf16 rounds
#: at 2**-8, eight times as coarsely, so it gets eight times fp16's room.
MAX_PROB_DIFF: dict[str, float] = {"fp32": 1e-4, "int8": 1e-3, "fp16": 5e-3, "bf16": 4e-2}
#: Texts of the validation split checked, spread over its range of lengths.
PROBE_COUNT = 16
#: Probes per batch in the mixes that batch probes with neighbours.
PROBES_PER_BATCH = 8
#: Neighbours far shorter than any probe: the probes set the padding, the neighbours are padded.
SHORT_NEIGHBOURS = ("ok", "no", "meh.", "5/5")
#: Neighbours built to push activations to extremes: runs of punctuation, digits and
#: symbols, characters the vocabulary lacks, special-token strings and one unbroken token;
#: each fills the window. On all-MiniLM-L6-v2 these moved dynamic INT8 answers most.
ADVERSARIAL_NEIGHBOURS = (
    ". " * 300,
    "@#$%^&*()_+=~ " * 40,
    "http://example.com/" + "x" * 500,
    "a " * 300,
    "[CLS] [SEP] [MASK] " * 60,
    "\U0001f621\U0001f525\U0001f4af " * 80,
    "1234567890 " * 60,
)
#: Shares of the window the padded mixes pad the shorter probes to (long neighbours pad them
#: to all of it).
PADDED_FRACTIONS = (0.5, 0.75)


class BatchClassifier(Protocol):
    """What the check needs of a classifier (`OnnxClassifier` is one)."""

    max_seq_length: int

    def encode(self, texts: Sequence[str]) -> dict[str, np.ndarray]: ...

    def run(self, features: dict[str, np.ndarray]) -> np.ndarray: ...


@dataclass(frozen=True)
class MixOutcome:
    """How far the probes' answers moved in one mix of batches."""

    name: str
    max_prob_diff: float
    label_changes: int
    sequence_lengths: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_prob_diff": self.max_prob_diff,
            "label_changes": self.label_changes,
            "sequence_lengths": list(self.sequence_lengths),
        }


@dataclass(frozen=True)
class InvarianceReport:
    """The probes' answers in every mix against their answers alone."""

    precision: str
    probes: int
    tolerance: float
    mixes: tuple[MixOutcome, ...]

    @property
    def max_prob_diff(self) -> float:
        return max((mix.max_prob_diff for mix in self.mixes), default=0.0)

    @property
    def label_changes(self) -> int:
        return sum(mix.label_changes for mix in self.mixes)

    @property
    def passed(self) -> bool:
        """True when no probability moved by more than the tolerance in any mix.

        Labels need no rule of their own: a label can change within the tolerance only where
        its two top probabilities were within twice the tolerance alone, a tie.
        """
        return self.max_prob_diff <= self.tolerance

    def worst_mix(self) -> MixOutcome | None:
        return max(self.mixes, key=lambda mix: mix.max_prob_diff, default=None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "probes": self.probes,
            "tolerance": self.tolerance,
            "max_prob_diff": self.max_prob_diff,
            "label_changes": self.label_changes,
            "passed": self.passed,
            "mixes": {mix.name: mix.to_dict() for mix in self.mixes},
        }

    def describe(self) -> str:
        """One line for logs and metadata reasons."""
        worst = self.worst_mix()
        where = f" (worst: {worst.name})" if worst is not None and worst.max_prob_diff else ""
        return (
            f"{self.precision} probabilities moved by up to {self.max_prob_diff:.3g}{where} "
            f"between a text alone and in a batch (allowed {self.tolerance:.3g}), "
            f"{self.label_changes} label changes, over {self.probes} probes in "
            f"{len(self.mixes)} batch mixes"
        )


def probe_texts(texts: Sequence[str], count: int = PROBE_COUNT) -> list[str]:
    """`count` distinct texts spread evenly over the range of lengths, shortest to longest."""
    distinct = sorted({str(t) for t in texts if str(t).strip()}, key=lambda t: (len(t), t))
    if len(distinct) <= count:
        return distinct
    picks = np.linspace(0, len(distinct) - 1, count).round().astype(int)
    return [distinct[i] for i in picks]


def batch_mixes(
    probes: Sequence[str], max_seq_length: int
) -> dict[str, list[tuple[list[str], list[int]]]]:
    """Every mix of batches: name to batches, each its texts and where the probes sit in it.

    Args:
        probes: The probe texts, shortest first; a probe's row index in the returned
            positions is its index here, and -1 marks a neighbour.
        max_seq_length: The model's window in tokens, which the padded mixes divide.
    """
    chunks = [
        list(range(start, min(start + PROBES_PER_BATCH, len(probes))))
        for start in range(0, len(probes), PROBES_PER_BATCH)
    ]
    # Real text, long enough to fill the window: the probes themselves, joined in turn.
    long_text = " ".join(probes) * max(1, 4000 // max(1, sum(map(len, probes))))
    words = long_text.split()

    def with_neighbours(
        neighbours: Sequence[str], *, first: bool = False
    ) -> list[tuple[list[str], list[int]]]:
        batches = []
        for chunk in chunks:
            texts = [probes[i] for i in chunk]
            rows = list(chunk)
            if first:  # neighbours before the probes: a probe's row index must not matter
                batches.append(([*neighbours, *texts], [-1] * len(neighbours) + rows))
            else:
                batches.append(([*texts, *neighbours], rows + [-1] * len(neighbours)))
        return batches

    mixes = {
        "together": [([str(p) for p in probes], list(range(len(probes))))],
        "short_neighbours": with_neighbours(SHORT_NEIGHBOURS),
        "long_neighbours": with_neighbours(
            [" ".join(words[i * 7 :]) for i in range(4)], first=True
        ),
        "adversarial_neighbours": with_neighbours(ADVERSARIAL_NEIGHBOURS, first=True),
    }
    for fraction in PADDED_FRACTIONS:
        # Words stand in for tokens (a word is a token or more): the lengths differ.
        neighbour = " ".join(words[: max(1, int(fraction * max_seq_length))])
        mixes[f"padded_{int(fraction * 100)}pct"] = with_neighbours([neighbour])
    return mixes


def check_batch_invariance(
    classifier: BatchClassifier,
    texts: Sequence[str],
    precision: str,
    *,
    tolerance: float | None = None,
    probes: int = PROBE_COUNT,
) -> InvarianceReport:
    """Classify probe texts alone and in every batch mix, and compare their probabilities.

    Args:
        classifier: The graph under test, with its tokenizer.
        texts: Texts to draw the probes from (export uses the validation split).
        precision: fp32, int8, fp16 or bf16: picks the tolerance from `MAX_PROB_DIFF`.
        tolerance: Overrides the precision's tolerance.
        probes: How many probes to draw.

    Returns:
        The largest probability change and label changes of each mix; `passed` says whether
        every change is within the tolerance.

    Raises:
        ValueError: No text to probe with, or a precision without a tolerance.
    """
    if tolerance is None:
        if precision not in MAX_PROB_DIFF:
            raise ValueError(
                f"no batch-invariance tolerance for precision {precision!r}; "
                f"known: {', '.join(MAX_PROB_DIFF)}"
            )
        tolerance = MAX_PROB_DIFF[precision]
    chosen = probe_texts(texts, probes)
    if not chosen:
        raise ValueError("batch invariance needs at least one non-empty text to probe with")
    alone = np.vstack([_probabilities(classifier, [text]) for text in chosen])
    outcomes = tuple(
        _mix_outcome(classifier, name, batches, alone)
        for name, batches in batch_mixes(chosen, classifier.max_seq_length).items()
    )
    report = InvarianceReport(precision, len(chosen), float(tolerance), outcomes)
    logger.info(
        "batch invariance: precision=%s passed=%s max_prob_diff=%.3g label_changes=%d probes=%d",
        precision,
        report.passed,
        report.max_prob_diff,
        report.label_changes,
        report.probes,
    )
    return report


def recorded_as_invariant(metadata: Mapping[str, Any], precision: str) -> bool:
    """Whether a bundle's metadata.json records the graph of `precision` as batch invariant.

    Bundles exported before export checked batch invariance record nothing, which counts as
    not invariant: their INT8 graph is the dynamically quantized one.
    """
    records = metadata.get("batch_invariance")
    record = records.get(precision) if isinstance(records, Mapping) else None
    return isinstance(record, Mapping) and record.get("passed") is True


def _mix_outcome(
    classifier: BatchClassifier,
    name: str,
    batches: list[tuple[list[str], list[int]]],
    alone: np.ndarray,
) -> MixOutcome:
    together = np.full_like(alone, np.nan)
    lengths = []
    for texts, rows in batches:
        features = classifier.encode(texts)
        lengths.append(int(next(iter(features.values())).shape[1]))
        probabilities = _softmax(classifier.run(features))
        for position, row in enumerate(rows):
            if row >= 0:
                together[row] = probabilities[position]
    placed = ~np.isnan(together).any(axis=1)
    moved = np.abs(together[placed] - alone[placed])
    changes = together[placed].argmax(-1) != alone[placed].argmax(-1)
    return MixOutcome(
        name=name,
        max_prob_diff=float(moved.max()) if moved.size else 0.0,
        label_changes=int(changes.sum()),
        sequence_lengths=tuple(lengths),
    )


def _probabilities(classifier: BatchClassifier, texts: Sequence[str]) -> np.ndarray:
    return _softmax(classifier.run(classifier.encode(texts)))


def _softmax(logits: np.ndarray) -> np.ndarray:
    # The predictor's own softmax, imported here so that `recorded_as_invariant` stays
    # importable without onnxruntime (the serve settings read it).
    from textops.components.common.onnx_classifier import softmax

    return softmax(logits)
