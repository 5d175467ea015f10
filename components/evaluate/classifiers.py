"""The two kinds of model the gate scores, behind one interface: texts in, probabilities out.

The challenger is the train step's Hugging Face model directory, run with PyTorch; the
champion is a published ONNX bundle, run with ONNX Runtime (`OnnxClassifier` already fits
`ProbabilisticClassifier`). A champion behind a KServe InferenceService would be a third
implementation that posts the texts to its V2 infer route.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from textops.components.common.errors import ModelNotFoundError
from textops.components.common.labels import LabelMap
from textops.components.common.onnx_classifier import softmax

if TYPE_CHECKING:
    import torch


class ProbabilisticClassifier(Protocol):
    """Anything that gives class probabilities for texts, columns in `labels` order."""

    labels: LabelMap

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Array (len(texts), len(labels)) of probabilities."""
        ...


class TorchClassifier:
    """A Hugging Face sequence classifier as the train step saved it, run with PyTorch."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        labels: LabelMap,
        device: torch.device,
        batch_size: int = 64,
    ) -> None:
        """Wrap a loaded model; use `from_model_dir` to load one from disk."""
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.labels = labels
        self.device = device
        self.batch_size = batch_size

    @classmethod
    def from_model_dir(
        cls, model_dir: str | Path, *, device: str = "auto", batch_size: int = 64
    ) -> TorchClassifier:
        """Load the train step's output directory (weights, tokenizer, labels.json).

        Raises:
            ModelNotFoundError: The directory lacks labels.json or a loadable model, or the
                model's number of outputs differs from the label map's size.
        """
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from textops.components.common.torch_inference import pick_device

        model_dir = Path(model_dir)
        labels_path = model_dir / "labels.json"
        if not labels_path.is_file():
            raise ModelNotFoundError(
                f"no trained model in {model_dir}: labels.json is missing; pass the train "
                "step's model directory"
            )
        labels = LabelMap.load(labels_path)
        try:
            tokenizer = AutoTokenizer.from_pretrained(model_dir)
            model = AutoModelForSequenceClassification.from_pretrained(model_dir)
        except OSError as e:
            raise ModelNotFoundError(f"cannot load the trained model from {model_dir}: {e}") from e
        if model.config.num_labels != len(labels):
            raise ModelNotFoundError(
                f"the model in {model_dir} has {model.config.num_labels} outputs but labels.json "
                f"lists {len(labels)} labels: the directory's files do not belong together"
            )
        return cls(model, tokenizer, labels, pick_device(device), batch_size)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities, shape (len(texts), len(labels)).

        Texts are truncated at the tokenizer's `model_max_length`, which the train step set to
        its training window, so the model sees what it was trained on.
        """
        from textops.components.common.torch_inference import batched_logits

        if isinstance(texts, str):
            raise TypeError("pass a list of texts, not a single string")
        if len(texts) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        encodings = dict(self.tokenizer(list(texts), truncation=True))
        logits = batched_logits(
            self.model,
            encodings,
            pad_token_id=self.tokenizer.pad_token_id,
            device=self.device,
            batch_size=self.batch_size,
        )
        return softmax(logits)
