"""The evidence a bundle ships with: tokenization, logit parity and quality on the validation split.

Every graph export writes is run on the whole validation split and compared either with
PyTorch (fp32 must reproduce its logits) or with the true labels (INT8 and fp16 may lose at
most a point of accuracy and macro-F1 against fp32). PyTorch runs once; each ONNX graph runs
once, on the same tokenized batches.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from textops.components.common.errors import ExportError
from textops.components.common.long_text import encode_with_hf
from textops.components.common.onnx_classifier import OnnxClassifier
from textops.components.common.precision_quality import (
    FP16_MAX_LOSS_POINTS,
    INT8_MAX_LOSS_POINTS,
    Agreement,
    QualityReport,
    agreement,
    quality_report,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# The rule INT8 and fp16 are judged by lives in common, since the predictor judges fp16 by it
# again on the GPU it serves on; export reads it, and its allowances, through these names
# (which tests patch here).
__all__ = [
    "BATCH_SIZE",
    "FP16_MAX_LOSS_POINTS",
    "INT8_MAX_LOSS_POINTS",
    "PARITY_MAX_ABS_DIFF",
    "Agreement",
    "ParityReport",
    "QualityReport",
    "agreement",
    "check_tokenization",
    "onnx_logits",
    "parity_report",
    "pytorch_logits",
    "quality_report",
    "require_parity",
]

logger = logging.getLogger(__name__)

#: Largest absolute difference allowed between ONNX Runtime fp32 and PyTorch logits.
PARITY_MAX_ABS_DIFF = 1e-3
#: Texts per batch in every validation pass (and the reference predictions).
BATCH_SIZE = 64

#: Tokenizes one batch into the graph's named integer inputs (`OnnxClassifier.encode`).
Encoder = Callable[[Sequence[str]], dict[str, np.ndarray]]


@dataclass(frozen=True)
class ParityReport:
    """How closely ONNX Runtime reproduced PyTorch on the validation split."""

    rows: int
    max_abs_diff: float
    argmax_agreement: float
    tolerance: float

    @property
    def passed(self) -> bool:
        """True when every prediction agrees and every logit is within tolerance."""
        return self.argmax_agreement == 1.0 and self.max_abs_diff <= self.tolerance

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "max_abs_diff": self.max_abs_diff,
            "argmax_agreement": self.argmax_agreement,
            "tolerance": self.tolerance,
            "passed": self.passed,
        }

    def describe(self) -> str:
        """One line for errors and metadata reasons."""
        return (
            f"argmax agreement {self.argmax_agreement:.4%} (needs 100%), max abs logit "
            f"difference {self.max_abs_diff:.3g} (allowed {self.tolerance:.3g}) on "
            f"{self.rows} rows"
        )


def check_tokenization(
    tokenizer: PreTrainedTokenizerBase,
    classifier: OnnxClassifier,
    texts: Sequence[str],
    max_seq_length: int,
) -> None:
    """Check the bundle's tokenizer gives the token ids training gave, text by text.

    Parity compares the models on shared inputs; this covers the step before it, where a
    serving tokenizer that lowercases, cuts long texts or adds special tokens differently
    would shift every prediction without changing a single weight. Training's ids are cut by
    the classifier's long-text strategy, the one the bundle records.

    Raises:
        ExportError: Some text is tokenized differently.
    """
    strategy = classifier.long_text_strategy
    expected = encode_with_hf(tokenizer, texts, max_seq_length, strategy)["input_ids"]
    served = classifier.tokenizer.encode_batch(list(texts))
    differing = [
        i
        for i, (ids, encoding) in enumerate(zip(expected, served, strict=True))
        if list(ids) != encoding.ids[: sum(encoding.attention_mask)]
    ]
    if differing:
        raise ExportError(
            f"the bundle's tokenizer.json tokenizes {len(differing)} of {len(texts)} validation "
            f"texts differently from the training tokenizer (first: {texts[differing[0]]!r}); "
            "check the tokenizer files saved with the model"
        )
    logger.info("tokenization ok: rows=%d", len(texts))


def pytorch_logits(model: PreTrainedModel, encode: Encoder, texts: Sequence[str]) -> np.ndarray:
    """PyTorch fp32 logits of every text, from the batches ONNX Runtime is given too.

    Args:
        model: The classifier, in eval mode.
        encode: Tokenizes a batch into the graph's inputs (`OnnxClassifier.encode`).
        texts: The validation texts.
    """
    import torch

    batches = []
    with torch.inference_mode():
        for start in _batch_starts(texts, "pytorch"):
            features = encode(texts[start : start + BATCH_SIZE])
            inputs = {name: torch.from_numpy(a).long() for name, a in features.items()}
            batches.append(model(**inputs).logits.float().numpy())
    return _stack(batches, int(model.config.num_labels or 0))


def onnx_logits(classifier: OnnxClassifier, texts: Sequence[str], desc: str) -> np.ndarray:
    """ONNX Runtime logits of every text, batched exactly as `pytorch_logits` batches them."""
    batches = [
        classifier.run(classifier.encode(texts[start : start + BATCH_SIZE]))
        for start in _batch_starts(texts, desc)
    ]
    return _stack(batches, len(classifier.labels))


def parity_report(onnx: np.ndarray, torch: np.ndarray) -> ParityReport:
    """Judge ONNX fp32 logits against PyTorch's with the tolerance in force now."""
    measured = agreement(onnx, torch)
    # Read at call time, not bound as a default, so a test can tighten it for one run.
    return ParityReport(
        rows=measured.rows,
        max_abs_diff=measured.max_abs_diff,
        argmax_agreement=measured.argmax_agreement,
        tolerance=PARITY_MAX_ABS_DIFF,
    )


def require_parity(report: ParityReport, graph: str) -> None:
    """Stop the export when the graph that would ship does not reproduce PyTorch.

    Raises:
        ExportError: A prediction differs, or a logit differs by more than the tolerance.
    """
    if not report.passed:
        raise ExportError(
            f"ONNX Runtime ({graph} graph) does not reproduce PyTorch on the validation split: "
            f"{report.describe()}; check the opset and the model's ops, or export with a "
            "newer torch"
        )
    logger.info(
        "parity ok: graph=%s rows=%d max_abs_diff=%.3g argmax_agreement=%.4f",
        graph,
        report.rows,
        report.max_abs_diff,
        report.argmax_agreement,
    )


def _batch_starts(texts: Sequence[str], desc: str) -> Iterable[int]:
    return tqdm(range(0, len(texts), BATCH_SIZE), desc=desc, unit="batch", disable=None)


def _stack(batches: list[np.ndarray], num_labels: int) -> np.ndarray:
    if not batches:
        return np.empty((0, num_labels), dtype=np.float32)
    return np.concatenate(batches).astype(np.float32, copy=False)
