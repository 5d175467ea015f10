"""The KServe transformer of the Triton overlay: texts in, token ids to Triton, labels out.

`python -m textops.components.serve.transformer --bundle DIR --predictor_host HOST:PORT
--predictor_protocol v2 --model_name NAME` sits in front of KServe's Triton runtime, which
serves the bundle's `model.onnx` under the same model name. It takes the predictor's V1 and
V2 requests (same parsing, limits and error answers: `payloads`), tokenizes each request in
one batch with the bundle's tokenizer.json, sends Triton V2 requests of at most
--inference-batch-size texts (INT64 tensors named as metadata.json's `onnx_inputs`, binary
tensor data), and turns the `logits` Triton answers into the predictor's response bodies and
`textops_*` metrics. It needs only tokenizer.json, labels.json and metadata.json of the bundle.

Triton down or too slow is answered 503 or 504, anything else wrong with Triton's answer 502,
each with a JSON `{"error": ...}` that names the predictor host.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from kserve.errors import InvalidInput
from kserve.model import append_forwardable_headers
from kserve.predictor_config import PredictorConfig
from kserve.protocol.infer_type import InferInput, InferRequest, InferResponse, RequestedOutput

from textops.components.common.bundle import (
    LABELS_FILE,
    METADATA_FILE,
    TOKENIZER_FILE,
    ModelBundle,
    recorded_temperature,
)
from textops.components.common.errors import ModelNotFoundError, RemoteModelError
from textops.components.common.long_text import WindowTokenizer, recorded_strategy
from textops.components.common.onnx_classifier import (
    SUPPORTED_INPUTS,
    encode_texts,
    load_tokenizer,
    softmax,
)
from textops.components.serve import metrics
from textops.components.serve.payloads import ParsedRequest
from textops.components.serve.settings import ServeSettings, bundle_version
from textops.components.serve.text_model import Answer, TextModel

logger = logging.getLogger(__name__)

#: The graph output Triton is asked for: the classifier's logits, shape [n, labels].
LOGITS_OUTPUT = "logits"
#: Seconds allowed to open a connection to Triton; the request itself may take
#: --predictor_request_timeout_seconds.
CONNECT_TIMEOUT_SECONDS = 5.0
#: Bundle files the transformer reads (model.onnx is Triton's).
BUNDLE_FILES = (TOKENIZER_FILE, LABELS_FILE, METADATA_FILE)


class PredictorError(RemoteModelError):
    """Triton could not be reached (503), timed out (504) or gave no usable logits (502)."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True)
class TransformerBundle:
    """The bundle files the transformer runs with; a reload builds a new one.

    Attributes:
        path: The bundle directory.
        version: The version reported in responses and metrics.
        labels: Class names in the column order of Triton's logits.
        max_seq_length: Tokens kept per text.
        tokenizer: The bundle's tokenizer, cutting long texts by the strategy metadata.json
            records ("head" where it records none) and padding per batch.
        input_names: The ONNX graph's inputs, as metadata.json's `onnx_inputs` lists them.
        temperature: The calibration temperature Triton's logits are divided by before the
            softmax, as the predictor does (1 for a bundle exported before calibration).
    """

    path: Path
    version: str
    labels: tuple[str, ...]
    max_seq_length: int
    tokenizer: WindowTokenizer
    input_names: tuple[str, ...]
    temperature: float = 1.0


def load_bundle(path: Path, version: str | None = None) -> TransformerBundle:
    """Read the tokenizer, labels, graph inputs and temperature of a bundle (not model.onnx).

    Args:
        path: The bundle directory.
        version: The version to report; None takes metadata.json's, else the folder's name.

    Raises:
        ModelNotFoundError: A file is missing, or metadata.json lacks `max_seq_length` or
            lists graph inputs a tokenizer cannot fill.
    """
    missing = [name for name in BUNDLE_FILES if not (path / name).is_file()]
    if missing:
        raise ModelNotFoundError(
            f"model bundle {path} lacks {', '.join(missing)}: --bundle must name an exported "
            "bundle directory (the transformer reads its tokenizer, labels and metadata)"
        )
    bundle = ModelBundle(path)
    try:
        metadata = bundle.metadata
        labels = bundle.labels.names
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelNotFoundError(f"model bundle {path}: cannot read its files: {e}") from e
    inputs = metadata.get("onnx_inputs")
    if (
        not isinstance(inputs, list)
        or "input_ids" not in inputs
        or any(name not in SUPPORTED_INPUTS for name in inputs)
    ):
        raise ModelNotFoundError(
            f"model bundle {path}: metadata.json's onnx_inputs is {inputs!r}; it must list the "
            f"graph's inputs, input_ids and any of {', '.join(SUPPORTED_INPUTS[1:])} "
            "(export the bundle again)"
        )
    max_seq_length = metadata.get("max_seq_length")
    if not isinstance(max_seq_length, int | float) or isinstance(max_seq_length, bool):
        raise ModelNotFoundError(f"model bundle {path}: metadata.json lacks max_seq_length")
    return TransformerBundle(
        path=path,
        version=version or bundle_version(path),
        labels=labels,
        max_seq_length=int(max_seq_length),
        tokenizer=load_tokenizer(
            bundle.tokenizer_path, int(max_seq_length), recorded_strategy(metadata)
        ),
        input_names=tuple(inputs),
        temperature=recorded_temperature(metadata),
    )


@dataclass(frozen=True)
class TritonChunk:
    """One Triton request: the rows of the client's request it holds, in its order."""

    rows: np.ndarray
    request: InferRequest


def triton_requests(
    bundle: TransformerBundle,
    texts: Sequence[str],
    *,
    model_name: str,
    chunk_size: int,
    request_id: str | None = None,
) -> list[TritonChunk]:
    """Tokenize texts into V2 requests of at most `chunk_size` texts for Triton.

    Texts of similar length go together, as in `OnnxClassifier.logits`, so that a chunk
    carries little padding and Triton computes exactly what the predictor would.

    Args:
        bundle: The tokenizer and the graph's input names.
        texts: The texts of one client request.
        model_name: The Triton model's name.
        chunk_size: Texts per Triton request (at most Triton's max batch size).
        request_id: The id the Triton requests carry; None lets each have its own.

    Returns:
        One chunk per Triton request; together their rows are every text once.
    """
    dtypes = {name: np.int64 for name in bundle.input_names}
    order = np.argsort([len(text) for text in texts], kind="stable")
    chunks = []
    for start in range(0, len(texts), chunk_size):
        rows = order[start : start + chunk_size]
        features = encode_texts(bundle.tokenizer, [texts[i] for i in rows], dtypes)
        inputs = []
        for name, array in features.items():
            tensor = InferInput(name, list(array.shape), "INT64")
            tensor.set_data_from_numpy(array, binary_data=True)
            inputs.append(tensor)
        request = InferRequest(
            model_name,
            inputs,
            request_id=request_id,
            request_outputs=[RequestedOutput(LOGITS_OUTPUT, {"binary_data": True})],
        )
        chunks.append(TritonChunk(rows, request))
    return chunks


@dataclass(frozen=True)
class TritonBatch:
    """What `preprocess` hands to `predict`: the parsed request and its Triton requests."""

    request: ParsedRequest
    bundle: TransformerBundle
    chunks: list[TritonChunk]


class TritonTransformer(TextModel[TransformerBundle]):
    """Tokenization and labels around a Triton-served `model.onnx`, over V1 and V2."""

    not_loaded_message = "the bundle's files are not loaded"

    def __init__(self, settings: ServeSettings, predictor: PredictorConfig) -> None:
        """Set up the transformer; `load()` reads the bundle.

        Args:
            settings: The bundle, the model name (Triton's too), limits and chunk size.
            predictor: Where Triton is and how long a call may take.
        """
        super().__init__(settings)
        self._predictor = predictor

    @property
    def predictor_config(self) -> PredictorConfig:
        """Triton's address, protocol and timeout (also in every `--workers` process)."""
        return self._predictor

    def load(self) -> bool:
        """Read the bundle's files (blocking) and become ready.

        Raises:
            ModelNotFoundError: The bundle lacks a file the transformer needs.
        """
        self._install(self._read_bundle())
        self.ready = True
        return self.ready

    async def reload(self) -> TransformerBundle:
        """Read the bundle's files again off the event loop and swap them in.

        Raises:
            ModelNotFoundError: They cannot be read; the files read before keep serving.
        """
        bundle = await asyncio.get_running_loop().run_in_executor(None, self._read_bundle)
        self._install(bundle)
        self.ready = True
        return bundle

    def _read_bundle(self) -> TransformerBundle:
        assert self.settings.bundle is not None
        return load_bundle(self.settings.bundle, self.settings.model_version)

    def _install(self, bundle: TransformerBundle) -> None:
        self._swap_in(bundle)
        logger.info(
            "bundle ready: path=%s version=%s inputs=%s labels=%d",
            bundle.path,
            bundle.version,
            ",".join(bundle.input_names),
            len(bundle.labels),
        )

    @property
    def bundle(self) -> TransformerBundle:
        """The bundle files in use."""
        return self.served

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        # Per-process things: the HTTP client belongs to one event loop; the tokenizer is
        # read again by each `--workers` process.
        state.update(_served=None, _http_client_instance=None)
        return state

    # -- KServe handlers ------------------------------------------------------------------

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> TritonBatch:
        """Check the V1 or V2 request (400 or 413 when wrong) and tokenize it for Triton."""
        parsed = self.parse(payload, headers)
        bundle = self.bundle
        chunks = await asyncio.get_running_loop().run_in_executor(
            None,
            lambda: triton_requests(
                bundle,
                parsed.texts,
                model_name=self.name,
                chunk_size=self.settings.inference_batch_size,
                request_id=parsed.request_id,
            ),
        )
        return TritonBatch(parsed, bundle, chunks)

    async def predict(
        self,
        payload: TritonBatch,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> Answer:
        """Send the chunks to Triton concurrently; softmax their logits divided by the bundle's
        calibration temperature, in request order.

        Raises:
            PredictorError: Triton is down (503), too slow (504) or answered no logits (502).
        """
        forwarded = append_forwardable_headers(headers)
        answers = await asyncio.gather(
            *(self._infer(chunk, forwarded, len(payload.bundle.labels)) for chunk in payload.chunks)
        )
        logits = np.empty((len(payload.request.texts), len(payload.bundle.labels)), np.float32)
        for chunk, chunk_logits in zip(payload.chunks, answers, strict=True):
            logits[chunk.rows] = chunk_logits
        return Answer(payload.request, softmax(logits, payload.bundle.temperature), payload.bundle)

    # -- the call to Triton ---------------------------------------------------------------

    async def _infer(
        self, chunk: TritonChunk, headers: Mapping[str, str], labels: int
    ) -> np.ndarray:
        """One Triton call: the chunk's logits, shape (rows, labels)."""
        host = self._predictor.predictor_base_url
        timeout = self._predictor.timeout
        metrics.INFERENCE_BATCH_TEXTS.labels(model_name=self.name).observe(len(chunk.rows))
        try:
            response = await self._http_client.infer(
                host,
                data=chunk.request,
                model_name=self.name,
                # `infer` adds the binary-data headers to the mapping it is given.
                headers=dict(headers),
                timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT_SECONDS)),
            )
        except httpx.HTTPStatusError as e:
            status = e.response.status_code
            raise PredictorError(
                f"the predictor at {host} answered {status} for model {self.name!r}: {e}",
                503 if status == 503 else 502,
            ) from e
        except (httpx.ConnectError, httpx.ConnectTimeout) as e:
            raise PredictorError(
                f"the predictor at {host} cannot be reached ({type(e).__name__}: {e}); "
                "is Triton running and --predictor_host right?",
                503,
            ) from e
        except httpx.TimeoutException as e:
            raise PredictorError(
                f"the predictor at {host} did not answer within {timeout} s "
                "(--predictor_request_timeout_seconds)",
                504,
            ) from e
        except httpx.HTTPError as e:
            raise PredictorError(
                f"the call to the predictor at {host} failed: {type(e).__name__}: {e}", 502
            ) from e
        except (InvalidInput, KeyError, TypeError, ValueError) as e:
            raise PredictorError(
                f"the predictor at {host} answered something that is not a V2 response: {e}",
                502,
            ) from e
        return _logits(response, len(chunk.rows), labels, host)


def _logits(response: InferResponse, rows: int, labels: int, host: str) -> np.ndarray:
    output = response.get_output_by_name(LOGITS_OUTPUT)
    if output is None:
        names = ", ".join(o.name for o in response.outputs) or "none"
        raise PredictorError(
            f"the predictor at {host} answered no {LOGITS_OUTPUT!r} output (outputs: {names})",
            502,
        )
    try:
        logits = np.asarray(output.as_numpy(), dtype=np.float32)
    except (InvalidInput, TypeError, ValueError) as e:
        raise PredictorError(f"the predictor at {host} answered unreadable logits: {e}", 502) from e
    if logits.shape != (rows, labels):
        raise PredictorError(
            f"the predictor at {host} answered logits of shape {list(logits.shape)} for "
            f"{rows} texts and {labels} labels: the model it serves and the bundle at "
            "--bundle do not belong together",
            502,
        )
    return logits


if __name__ == "__main__":
    # The server lives in transformer_main, which imports this module under its real name:
    # the classes KServe pickles into `--workers` processes are found there, not in __main__.
    from textops.components.serve.transformer_main import main

    sys.exit(main())
