"""The kinds of model the gate scores, behind one interface: texts in, probabilities out.

The challenger is the train step's Hugging Face model directory, run with PyTorch. The
champion is either a published ONNX bundle, run with ONNX Runtime (`OnnxClassifier` already
fits `ProbabilisticClassifier`), or the model a server answers for: `RemoteClassifier` posts
the texts to its Open Inference Protocol (V2) infer route, as a KServe InferenceService or a
local `textops serve` exposes it.
"""

from __future__ import annotations

import json
import urllib.parse
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from textops.components.common.errors import ModelNotFoundError, RemoteModelError
from textops.components.common.http_json import request_json
from textops.components.common.labels import LabelMap
from textops.components.common.long_text import encode_with_hf, recorded_strategy
from textops.components.common.onnx_classifier import softmax
from textops.components.common.traffic import EVALUATION_REQUEST_PREFIX

if TYPE_CHECKING:
    import torch

# A row's probabilities may sum to 1 give or take FP32 rounding over a few classes.
_SUM_TOLERANCE = 1e-3
# Top two probabilities closer than this make the served label a legitimate tie-break.
_TIE = 1e-6


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
        # The calibration temperature `predict_proba` applies (see evaluate/calibration.py).
        self.temperature = 1.0
        # How training cut texts longer than its window, as it recorded in the tokenizer.
        self.long_text_strategy = recorded_strategy(tokenizer.init_kwargs)

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

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """The model's logits, shape (len(texts), len(labels)), float32.

        Texts are cut to the tokenizer's `model_max_length`, which the train step set to its
        training window, by the long-text strategy training recorded in the tokenizer's config
        ("head" for a model trained before there was a choice), so the model sees what it was
        trained on.
        """
        from textops.components.common.torch_inference import batched_logits

        if isinstance(texts, str):
            raise TypeError("pass a list of texts, not a single string")
        if len(texts) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        encodings = encode_with_hf(
            self.tokenizer, texts, self.tokenizer.model_max_length, self.long_text_strategy
        )
        return np.asarray(
            batched_logits(
                self.model,
                encodings,
                pad_token_id=self.tokenizer.pad_token_id,
                device=self.device,
                batch_size=self.batch_size,
            ),
            dtype=np.float32,
        )

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities, softmax(logits / `temperature`), shape (len(texts), len(labels)).

        `temperature` is 1 until the evaluation fits one; from then on the challenger answers
        with the confidence its bundle will serve.
        """
        return softmax(self.logits(texts), self.temperature)


class RemoteClassifier:
    """A model behind a V2 (Open Inference Protocol) endpoint: texts in, probabilities out.

    Requests `POST <base_url>/v2/models/<name>/infer` with the BYTES input `text`; the answer
    carries `label` (BYTES) and `probabilities` (FP32, one column per label). The column order
    is the list the `probabilities` output names in its `parameters.labels` (as the textops
    predictor answers), else the `labels` of the model metadata. Each answer is checked:
    shapes, finite probabilities that sum to one, each `label` equal to the label of its row's
    highest probability (which shows the columns really are in that order), and one label
    order and one model version across all answers (a canary in progress would mix two).

    The requests go through `common.http_json`, not KServe's `InferenceRESTClient` (0.21),
    which cannot keep these checks: its V2 answer (`InferResponse.from_bytes`) drops
    `model_version`, which the rollout check needs, and needs `model_name`; it has no route for
    the model metadata; it puts the model name into the path unquoted; its `retries` setting
    is never applied (RESTConfig builds the retrying transport and drops it); and it is
    asynchronous only, while the gate scores synchronously.
    """

    def __init__(
        self,
        base_url: str,
        model_name: str,
        labels: LabelMap | None = None,
        version: str | None = None,
        *,
        batch_size: int = 64,
        timeout_seconds: float = 60.0,
    ) -> None:
        """Wrap an endpoint; `labels` None: learn them from the metadata or the answers."""
        self.base_url = base_url.rstrip("/")
        self.model_name = model_name
        self.labels = labels if labels is not None else LabelMap(())
        self.version = version
        self.batch_size = batch_size
        self.timeout_seconds = timeout_seconds
        self._answered_versions: set[str] = set()

    @property
    def model_url(self) -> str:
        """The model's V2 route: its metadata; `/infer` below it scores."""
        return v2_model_url(self.base_url, self.model_name)

    @classmethod
    def connect(
        cls,
        base_url: str,
        model_name: str,
        *,
        batch_size: int = 64,
        timeout_seconds: float = 60.0,
    ) -> RemoteClassifier:
        """Read the model's metadata (`GET /v2/models/<name>`): its version, labels if listed.

        Raises:
            RemoteModelError: No answer, an error status, or an answer that is not JSON.
        """
        remote = cls(base_url, model_name, batch_size=batch_size, timeout_seconds=timeout_seconds)
        metadata = request_json(remote.model_url, None, timeout_seconds)
        if not isinstance(metadata, dict):
            raise RemoteModelError(f"{remote.model_url} answered metadata that is not an object")
        parameters = metadata.get("parameters")
        names = _label_list(metadata.get("labels")) or _label_list(
            parameters.get("labels") if isinstance(parameters, dict) else None
        )
        if names:
            remote.labels = LabelMap(tuple(names))
        versions = metadata.get("versions")
        if isinstance(versions, list) and versions:
            remote.version = str(versions[-1])
        return remote

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities, shape (len(texts), len(labels)), batch by batch.

        Raises:
            RemoteModelError: A request got no answer or an error status, or an answer that
                is not a valid prediction for its texts, or answers disagree on labels or
                model version.
        """
        if isinstance(texts, str):
            raise TypeError("pass a list of texts, not a single string")
        rows = [
            self._infer(list(texts[start : start + self.batch_size]))
            for start in range(0, len(texts), self.batch_size)
        ]
        if not rows:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return np.concatenate(rows).astype(np.float32)

    def _infer(self, texts: list[str]) -> np.ndarray:
        request_id = f"{EVALUATION_REQUEST_PREFIX}{uuid.uuid4().hex}"
        body = {
            "id": request_id,
            "inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}],
        }
        answer = request_json(
            f"{self.model_url}/infer",
            body,
            self.timeout_seconds,
            # KServe's logger agent takes the event id from Ce-Id only (else a random one);
            # textops' own payload logger from Ce-Id, else X-Request-Id: send both.
            headers={"Ce-Id": request_id, "X-Request-Id": request_id},
        )
        try:
            outputs = {output["name"]: output for output in answer["outputs"]}
            self._adopt_labels(outputs["probabilities"])
            probabilities = self._read_answer(outputs, len(texts))
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise RemoteModelError(
                f"{self.model_url}/infer answered something that is not a V2 inference "
                f"response with label and probabilities outputs ({type(e).__name__}: {e})"
            ) from e
        version = answer.get("model_version")
        if version is not None:
            self._answered_versions.add(str(version))
            if len(self._answered_versions) > 1:
                raise RemoteModelError(
                    f"{self.model_url} answered from model versions "
                    f"{', '.join(sorted(self._answered_versions))}: a rollout is in progress; "
                    "evaluate again once it is done"
                )
            self.version = str(version)
        return probabilities

    def _adopt_labels(self, probabilities_output: dict[str, Any]) -> None:
        """Take the answer's label order; it must match every earlier one and the metadata's."""
        parameters = probabilities_output.get("parameters")
        named = _label_list(parameters.get("labels") if isinstance(parameters, dict) else None)
        if named is None:
            if not self.labels.names:
                raise RemoteModelError(
                    f"{self.model_url}/infer names no labels for its probabilities (parameters."
                    "labels) and the model metadata lists none: cannot tell which probability "
                    "belongs to which class"
                )
            return
        if self.labels.names and tuple(named) != self.labels.names:
            raise RemoteModelError(
                f"{self.model_url}/infer orders its probabilities as {named}, but earlier "
                f"(or in its metadata) as {list(self.labels.names)}"
            )
        self.labels = LabelMap(tuple(named))

    def _read_answer(self, outputs: dict[str, Any], rows: int) -> np.ndarray:
        width = len(self.labels)
        probabilities = np.asarray(outputs["probabilities"]["data"], dtype=np.float64)
        if probabilities.size != rows * width:
            raise RemoteModelError(
                f"{self.model_url}/infer answered {probabilities.size} probabilities for "
                f"{rows} texts and {width} labels; expected {rows * width}"
            )
        probabilities = probabilities.reshape(rows, width)
        labels = [str(v) for v in np.asarray(outputs["label"]["data"], dtype=object).reshape(-1)]
        if len(labels) != rows:
            raise RemoteModelError(
                f"{self.model_url}/infer answered {len(labels)} labels for {rows} texts"
            )
        sums = probabilities.sum(axis=1)
        if not np.isfinite(probabilities).all() or (np.abs(sums - 1.0) > _SUM_TOLERANCE).any():
            raise RemoteModelError(
                f"{self.model_url}/infer answered probabilities that are not finite or do not "
                "sum to 1 per text"
            )
        ordered = np.sort(probabilities, axis=1)
        decided = ordered[:, -1] - (ordered[:, -2] if width > 1 else 0.0) > _TIE
        best = [self.labels.names[i] for i in probabilities.argmax(axis=1)]
        wrong = [i for i in range(rows) if decided[i] and labels[i] != best[i]]
        if wrong:
            i = wrong[0]
            raise RemoteModelError(
                f"{self.model_url}/infer labelled a text {labels[i]!r} while its highest "
                f"probability is {best[i]!r} ({len(wrong)} of {rows} texts): the probability "
                f"columns are not in the label order {list(self.labels.names)}"
            )
        return probabilities


def v2_model_url(base_url: str, model_name: str) -> str:
    """The V2 route of a model on a server: `<base_url>/v2/models/<name>`."""
    return f"{base_url.rstrip('/')}/v2/models/{urllib.parse.quote(model_name, safe='')}"


def _label_list(value: Any) -> list[str] | None:
    """Class names given as a list, or as a JSON-encoded list (V2 parameters are scalars)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if isinstance(value, list) and value:
        return [str(name) for name in value]
    return None
