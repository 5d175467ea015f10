"""What the predictor's model and the Triton transformer share: one `kserve.Model` base.

Both take the same V1 and V2 requests (`payloads.parse_request`, with the same limits), cut
every text to what the model reads before anything checks or tokenizes it, write the same
response bodies from an `Answer`, count the same `textops_predictions_total`, describe the
same V2 tensors, and load again in every KServe `--workers` process they are pickled into.
How the probabilities are computed (ONNX Runtime here, Triton there) is each subclass's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
from kserve import Model
from kserve.errors import ModelNotReady

from textops.components.common.logs import configure_logging
from textops.components.serve import metrics
from textops.components.serve.payloads import (
    ParsedRequest,
    ServedVersion,
    input_metadata,
    output_metadata,
    parse_request,
    predicted_labels,
    v1_response,
    v2_response,
)
from textops.components.serve.settings import ServeSettings

#: What a subclass serves: the predictor's runtime, or the transformer's bundle files.
ServedT = TypeVar("ServedT", bound=ServedVersion)


@dataclass(frozen=True)
class Answer:
    """What `predict` hands to `postprocess`: a request's probabilities and who computed them.

    Attributes:
        request: The parsed request.
        probabilities: One row per text, one column per label of `served`.
        served: The version that computed them, whose labels and version the answer names.
    """

    request: ParsedRequest
    probabilities: np.ndarray
    served: ServedVersion


class TextModel(Model, Generic[ServedT]):
    """A text classifier over KServe's V1 and V2 protocols; subclasses compute probabilities."""

    #: The 503 answer's message while nothing is loaded.
    not_loaded_message = "the model is not loaded"

    def __init__(self, settings: ServeSettings) -> None:
        """Set up the model; `load()` reads what it serves.

        Args:
            settings: What to serve and the request limits.
        """
        super().__init__(settings.model_name)
        self.settings = settings
        self._served: ServedT | None = None

    @property
    def served(self) -> ServedT:
        """What is being served: its labels, its version and what computes probabilities.

        Raises:
            ModelNotReady: Nothing is loaded yet.
        """
        if self._served is None:
            raise ModelNotReady(self.name, self.not_loaded_message)
        return self._served

    @property
    def served_version(self) -> str | None:
        """The version being served; None before the first load."""
        return self._served.version if self._served is not None else None

    def _swap_in(self, served: ServedT) -> None:
        """Serve `served` from now on and point `textops_model_version_info` at its version."""
        previous = self.served_version
        self._served = served
        metrics.set_served_version(self.name, served.version, previous)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.ready:  # a KServe worker process: load this process's own copy
            configure_logging()
            self.load()

    def validate(self, payload: Any) -> Any:
        """`preprocess` has already checked the request; KServe's generic check is skipped."""
        return payload

    def parse(self, payload: Any, headers: dict[str, str] | None) -> ParsedRequest:
        """Check the decoded V1 or V2 request and take its texts, cut to what the model reads.

        Raises:
            BadRequestError: The request is malformed (400).
            BatchTooLargeError: It holds more than --max-batch-size texts (413).
        """
        # Texts are cut before they are checked, let alone tokenized: a tokenizer reads a
        # whole text before it truncates it, so a 4 MB text would cost seconds and hundreds
        # of MB; cut, it costs what a text of max_text_chars characters does.
        limit = self.settings.max_text_chars(self.served.max_seq_length)
        return parse_request(payload, headers, self.settings.max_batch_size, limit)

    async def postprocess(
        self,
        result: Any,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> Any:
        """Write an `Answer`'s V1 body or V2 response and count its predicted labels.

        Anything else (an explanation, written by `explain`) is handed on as it is.
        """
        if not isinstance(result, Answer):
            return result
        for label in predicted_labels(result.probabilities, result.served.labels):
            metrics.PREDICTIONS.labels(model_name=self.name, label=label).inc()
        if result.request.protocol == "v1":
            return v1_response(result.probabilities, result.served)
        return v2_response(result.request, result.probabilities, result.served, self.name)

    def get_input_types(self) -> list[dict[str, Any]]:
        """V2 metadata: one BYTES tensor `text` of shape [-1]."""
        return input_metadata()

    def get_output_types(self) -> list[dict[str, Any]]:
        """V2 metadata: `label` BYTES [-1] and `probabilities` FP32 [-1, labels]."""
        return output_metadata(self.served.labels)
