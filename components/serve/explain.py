"""Per-word importance by occlusion, for V1 `:explain`.

Each word is removed in turn and the text classified again; a word's importance is how much
the probability of the predicted label falls without it (negative: the word argued against
it). All variants of all texts run as one batch.

    {"explanations": [{"label": "positive", "probability": 0.93,
                       "words": [{"word": "great", "importance": 0.41}, ...]}, ...],
     "model_version": "3"}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from textops.components.serve.runtime import ClassifierRuntime

#: Words scored per text (the first ones); later words get no importance.
MAX_WORDS = 64
#: Texts per explain request: each costs up to MAX_WORDS + 1 classifications.
MAX_TEXTS = 16


@dataclass(frozen=True)
class TextSpan:
    """Where one text's variants sit in the batch: the text itself first, then one per word."""

    start: int
    words: list[str]


def occlusion_batch(texts: list[str]) -> tuple[list[str], list[TextSpan]]:
    """Every text followed by its variants with one word left out."""
    variants: list[str] = []
    spans: list[TextSpan] = []
    for text in texts:
        words = text.split()[:MAX_WORDS]
        spans.append(TextSpan(len(variants), words))
        variants.append(text)
        all_words = text.split()
        for i in range(len(words)):
            variants.append(" ".join(all_words[:i] + all_words[i + 1 :]))
    return variants, spans


def explanations(
    spans: list[TextSpan], probabilities: np.ndarray, runtime: ClassifierRuntime
) -> dict[str, Any]:
    """The explain body, from the probabilities of `occlusion_batch`'s variants."""
    out = []
    for span in spans:
        base = probabilities[span.start]
        best = int(base.argmax())
        occluded = probabilities[span.start + 1 : span.start + 1 + len(span.words), best]
        out.append(
            {
                "label": runtime.labels[best],
                "probability": float(base[best]),
                "words": [
                    {"word": word, "importance": float(base[best] - p)}
                    for word, p in zip(span.words, occluded, strict=True)
                ],
            }
        )
    return {"explanations": out, "model_version": runtime.version}
