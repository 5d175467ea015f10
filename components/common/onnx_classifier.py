"""ONNX Runtime inference for a model bundle: texts in, logits, probabilities or labels out.

Export uses it for the parity check and the reference predictions, and the KServe predictor
uses it to serve, so both run the very same tokenization and session code. It imports only
numpy, onnxruntime and tokenizers: the serving image has no torch and no transformers. The
same graph can also be run by OpenVINO (`engine="openvino"`, see `openvino_session`), behind
the same methods.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from textops.components.common.bundle import ModelBundle, Precision, recorded_temperature
from textops.components.common.engines import Compute, Engine, Variant
from textops.components.common.errors import ModelNotFoundError
from textops.components.common.labels import LabelMap
from textops.components.common.long_text import (
    LEGACY_STRATEGY,
    LongTextStrategy,
    WindowTokenizer,
    recorded_strategy,
)

logger = logging.getLogger(__name__)

#: The graph inputs a classifier may declare, all filled from the tokenizer's encodings.
SUPPORTED_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
#: Texts per ONNX Runtime call unless the caller says otherwise.
DEFAULT_BATCH_SIZE = 64

_ONNX_INT_TYPES: dict[str, type[np.integer]] = {
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}
_CUDA = "CUDAExecutionProvider"
# Tried in order when tokenizer.json carries no padding settings of its own.
_PAD_TOKENS = ("[PAD]", "<pad>", "<|pad|>", "<unk>")


class GraphSession(Protocol):
    """What the classifier calls on its session: an `onnxruntime.InferenceSession`, or an
    `openvino_session.OpenVinoSession`."""

    def run(self, output_names: Any, input_feed: Any, run_options: Any = None) -> Any: ...

    def get_inputs(self) -> Any: ...

    def get_outputs(self) -> Any: ...

    def get_providers(self) -> Any: ...


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of `logits / temperature`, finite for large logits (the row maximum is
    subtracted).

    Args:
        logits: Array of shape (rows, classes).
        temperature: The bundle's calibration temperature (see `bundle.recorded_temperature`);
            1 leaves the logits as they are. Dividing by a positive number keeps each row's
            order, so the most probable class never changes.

    Returns:
        float32 probabilities of the same shape; each row sums to 1.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    scaled = logits.astype(np.float32)
    if temperature != 1.0:
        scaled = scaled / np.float32(temperature)
    shifted = scaled - scaled.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    probs: np.ndarray = exp / exp.sum(axis=-1, keepdims=True)
    return probs.astype(np.float32, copy=False)


def default_providers() -> list[str]:
    """CUDA first where this onnxruntime build offers it, CPU always as the fallback."""
    available = ort.get_available_providers()
    if _CUDA in available:
        return [_CUDA, "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


@functools.cache
def prepare_cuda() -> bool:
    """Make ONNX Runtime's CUDA provider usable, once per process; False where it is not built in.

    onnxruntime-gpu from PyPI does not bring CUDA and cuDNN: they come as the nvidia-* packages
    (its `[cuda,cudnn]` extras), in site-packages, where the dynamic loader does not look.
    `onnxruntime.preload_dlls()` loads them from there; without it, on an image where nothing
    else puts them on the loader's path (the slim serve-gpu image; a CUDA base image would), a
    CUDA session finds no libcudart and runs on CPU. onnxruntime builds without the function
    (before 1.21) rely on LD_LIBRARY_PATH; the CPU build has no CUDA provider, so nothing is
    loaded there.

    Returns:
        Whether this onnxruntime build offers CUDAExecutionProvider. True does not promise a
        device: a session asked for CUDA on a machine without driver or GPU runs on CPU, which
        `OnnxClassifier.providers` shows.
    """
    if _CUDA not in ort.get_available_providers():
        return False
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        try:
            # directory="": the nvidia-* site packages, then the default search path (None
            # would also look in a Windows torch's folder, which this image does not have).
            preload(directory="")
        except (OSError, RuntimeError) as e:
            # Sessions then fail over to CPU, and the serving runtime reports that.
            logger.warning("onnxruntime.preload_dlls failed: %s: %s", type(e).__name__, e)
    return True


def load_tokenizer(
    path: str | Path, max_seq_length: int, strategy: LongTextStrategy = LEGACY_STRATEGY
) -> WindowTokenizer:
    """Load a bundle's tokenizer.json, cutting texts to `max_seq_length` tokens by `strategy`
    and padding each batch to its longest text.

    Padding reuses the pad token saved in the file; fixed-length padding (as many
    Hugging Face tokenizers save it) becomes dynamic, so short batches stay short.

    Args:
        path: A tokenizer.json file.
        max_seq_length: Tokens kept per text, special tokens included.
        strategy: How a longer text is cut (see `long_text`): what the model was trained
            with, which `recorded_strategy` reads from the bundle's metadata.json.

    Raises:
        ModelNotFoundError: The file is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"tokenizer file not found: {path}")
    tokenizer = Tokenizer.from_file(str(path))
    saved = tokenizer.padding
    if saved is not None:
        return WindowTokenizer(
            tokenizer,
            max_seq_length,
            strategy,
            pad_id=saved["pad_id"],
            pad_type_id=saved["pad_type_id"],
            pad_left=saved["direction"] == "left",
        )
    pad_id = next(
        (i for t in _PAD_TOKENS if (i := tokenizer.token_to_id(t)) is not None),
        0,  # any id works: the attention mask hides padded positions
    )
    return WindowTokenizer(tokenizer, max_seq_length, strategy, pad_id=pad_id)


def encode_texts(
    tokenizer: WindowTokenizer, texts: Sequence[str], input_types: Mapping[str, type[np.integer]]
) -> dict[str, np.ndarray]:
    """Tokenize a batch into one integer array per model input.

    Args:
        tokenizer: A tokenizer set up by `load_tokenizer`.
        texts: The texts of one batch.
        input_types: Each input to produce (a name in `SUPPORTED_INPUTS`) and its dtype.

    Returns:
        Input name to array of shape (len(texts), longest sequence in the batch).
    """
    _check_texts(texts)
    encodings = tokenizer.encode_batch(list(texts))
    fields = {
        "input_ids": [e.ids for e in encodings],
        "attention_mask": [e.attention_mask for e in encodings],
        "token_type_ids": [e.type_ids for e in encodings],
    }
    return {name: np.asarray(fields[name], dtype=dtype) for name, dtype in input_types.items()}


class OnnxClassifier:
    """A sequence classifier run by ONNX Runtime, with its tokenizer and label map.

    Example:
        >>> classifier = OnnxClassifier.from_bundle("bundle/")
        >>> classifier.predict(["great food", "awful service"])
        ['positive', 'negative']
    """

    def __init__(
        self,
        model_path: str | Path,
        tokenizer_path: str | Path,
        labels: LabelMap,
        max_seq_length: int,
        *,
        intra_op_threads: int | None = None,
        providers: Sequence[str] | None = None,
        session_config: Mapping[str, str] | None = None,
        temperature: float = 1.0,
        long_text_strategy: LongTextStrategy = LEGACY_STRATEGY,
        engine: Engine = "onnxruntime",
        compute: Compute = "fp32",
    ) -> None:
        """Open an ONNX Runtime (or OpenVINO) session for `model_path`.

        Args:
            model_path: The classifier's .onnx file; its output 0 holds the logits.
            tokenizer_path: The tokenizer.json the model was trained with.
            labels: Class names in the order of the model's outputs.
            max_seq_length: Tokens kept per text.
            intra_op_threads: Threads ONNX Runtime uses inside one operator; None lets it
                choose (all cores). Set it when several workers share one machine.
            providers: Execution providers in order of preference; None picks CUDA when
                available, else CPU.
            session_config: ONNX Runtime session configuration entries, e.g.
                {"session.intra_op.allow_spinning": "0"} for a server, whose event loop needs
                the CPU that idle intra-op threads would spin on.
            temperature: Divides the logits before the softmax of `predict_proba` (the
                calibration evaluate fitted); 1 for raw probabilities. `logits` and `run`
                never apply it, so parity checks compare the graph's own outputs.
            long_text_strategy: How a text longer than `max_seq_length` tokens is cut (see
                `long_text`); the one the model was trained with. "head", plain truncation,
                is what a bundle recording none was trained with.
            engine: `onnxruntime`, or `openvino` (its CPU plugin; `providers` and
                `session_config` are ONNX Runtime's and do not apply to it).
            compute: For OpenVINO, the precision it computes in (fp32, int8 for a quantized
                graph, bf16 where the CPU has it natively); ONNX Runtime computes in the
                graph's own precision.

        Raises:
            ModelNotFoundError: A file is missing, the model does not fit the label map or
                declares inputs a tokenizer cannot fill, or OpenVINO cannot compile it.
            ValueError: `max_seq_length` is below 2, `temperature` is not positive or
                `long_text_strategy` names no strategy.
        """
        model_path = Path(model_path)
        if not model_path.is_file():
            raise ModelNotFoundError(f"ONNX model not found: {model_path}")
        if max_seq_length < 2:
            raise ValueError(f"max_seq_length must be at least 2, got {max_seq_length}")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.model_path = model_path
        self.temperature = float(temperature)
        self.labels = labels
        self.max_seq_length = max_seq_length
        self.tokenizer = load_tokenizer(tokenizer_path, max_seq_length, long_text_strategy)

        self.engine: Engine = engine
        self.session: GraphSession
        if engine == "openvino":
            from textops.components.common.openvino_session import OpenVinoSession

            self.session = OpenVinoSession(model_path, compute, threads=intra_op_threads)
        else:
            options = ort.SessionOptions()
            if intra_op_threads is not None:
                options.intra_op_num_threads = intra_op_threads
            for key, value in (session_config or {}).items():
                options.add_session_config_entry(key, value)
            chosen = list(providers) if providers is not None else default_providers()
            if _CUDA in chosen:
                prepare_cuda()
            self.session = ort.InferenceSession(
                str(model_path), sess_options=options, providers=chosen
            )
        self._input_types = self._check_graph(model_path)
        logger.info(
            "loaded %s: inputs=%s providers=%s labels=%d",
            model_path,
            ",".join(self._input_types),
            ",".join(self.session.get_providers()),
            len(labels),
        )

    @classmethod
    def from_bundle(
        cls,
        path: str | Path,
        *,
        precision: Precision = "fp32",
        int8: bool = False,
        intra_op_threads: int | None = None,
        providers: Sequence[str] | None = None,
        session_config: Mapping[str, str] | None = None,
        variant: Variant | None = None,
    ) -> OnnxClassifier:
        """Load the classifier of a complete model bundle, with its calibration temperature
        (1 for a bundle exported before calibration) and its long-text strategy ("head" for a
        bundle exported before there was a choice).

        Args:
            path: The bundle directory (see `bundle.ModelBundle`).
            precision: Which model file to run: `fp32` (model.onnx, any provider), `int8`
                (model.int8.onnx, for CPU) or `fp16` (model.fp16.onnx, for CUDA).
            int8: Same as `precision="int8"`; kept for callers written before `precision`.
            intra_op_threads: See `OnnxClassifier.__init__`.
            providers: See `OnnxClassifier.__init__`.
            session_config: See `OnnxClassifier.__init__`.
            variant: Run this variant (its graph file, engine and compute precision; see
                `engines`) instead of `precision` on ONNX Runtime.

        Raises:
            ModelNotFoundError: The bundle is incomplete, has no model of the precision asked
                for (the message gives the reason metadata.json records), or its metadata
                lacks `max_seq_length`.
            ValueError: `int8=True` together with a precision other than `int8`.
        """
        if int8:
            if precision not in ("fp32", "int8"):
                raise ValueError(f"int8=True contradicts precision={precision!r}; pass one")
            precision = "int8"
        if variant is not None:
            precision = variant.graph
        bundle = ModelBundle.open(path)
        model_path = bundle.precision_model_path(precision)
        metadata = bundle.metadata
        if model_path is None:
            record = metadata.get(precision)
            why = (
                f" ({record['reason']})" if isinstance(record, dict) and "reason" in record else ""
            )
            raise ModelNotFoundError(
                f"model bundle {path} has no {precision.upper()} model{why}; load it with "
                "precision='fp32'"
            )
        if variant is None or variant.engine == "onnxruntime":
            engine: Engine = "onnxruntime"
            compute: Compute = "fp32" if precision == "fp32" else precision
        else:
            engine, compute = variant.engine, variant.compute
        if (
            engine == "onnxruntime"
            and precision == "fp16"
            and _CUDA not in (providers or default_providers())
        ):
            # It runs, but ONNX Runtime computes most fp16 nodes on CPU in fp32 behind casts.
            logger.warning("fp16 model %s runs without CUDA: fp32 or int8 is faster", model_path)
        max_seq_length = metadata.get("max_seq_length")
        if not isinstance(max_seq_length, int | float):
            raise ModelNotFoundError(f"model bundle {path}: metadata.json lacks max_seq_length")
        return cls(
            model_path,
            bundle.tokenizer_path,
            bundle.labels,
            int(max_seq_length),
            intra_op_threads=intra_op_threads,
            providers=providers,
            session_config=session_config,
            temperature=recorded_temperature(metadata),
            long_text_strategy=recorded_strategy(metadata),
            engine=engine,
            compute=compute,
        )

    @property
    def long_text_strategy(self) -> LongTextStrategy:
        """How a text longer than the window is cut (see `long_text`)."""
        return self.tokenizer.strategy

    @property
    def input_names(self) -> tuple[str, ...]:
        """The graph inputs fed on every call, in graph order."""
        return tuple(self._input_types)

    @property
    def providers(self) -> list[str]:
        """The execution providers the session really uses."""
        providers: list[str] = self.session.get_providers()
        return providers

    def encode(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Tokenize one batch into the arrays the graph declares, padded to the longest text.

        Args:
            texts: The texts of one batch.

        Returns:
            Graph input name to array of shape (len(texts), longest sequence in the batch).
        """
        return encode_texts(self.tokenizer, texts, self._input_types)

    def run(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """Run the graph on encoded features (see `encode`).

        Returns:
            float32 logits of shape (batch, classes).
        """
        outputs = self.session.run(None, features)
        logits: np.ndarray = np.asarray(outputs[0], dtype=np.float32)
        return logits

    def logits(self, texts: Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """Logits for every text, in the order given.

        Args:
            texts: Texts to classify.
            batch_size: Texts per ONNX Runtime call.

        Returns:
            float32 array of shape (len(texts), number of labels).
        """
        _check_texts(texts)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        out = np.empty((len(texts), len(self.labels)), dtype=np.float32)
        # Batching texts of similar length wastes less compute on padding; character count
        # is a cheap stand-in for token count.
        order = np.argsort([len(t) for t in texts], kind="stable")
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            out[rows] = self.run(self.encode([texts[i] for i in rows]))
        return out

    def predict_proba(
        self, texts: Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE
    ) -> np.ndarray:
        """Calibrated class probabilities (softmax of logits / `temperature`), shape
        (len(texts), number of labels); columns follow `labels`."""
        return softmax(self.logits(texts, batch_size), self.temperature)

    def predict(self, texts: Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE) -> list[str]:
        """The most probable label of each text."""
        best = self.logits(texts, batch_size).argmax(axis=-1)
        return [self.labels.names[i] for i in best]

    def _check_graph(self, model_path: Path) -> dict[str, type[np.integer]]:
        """Map each graph input to its dtype, refusing graphs this class cannot feed."""
        input_types: dict[str, type[np.integer]] = {}
        for node in self.session.get_inputs():
            if node.name not in SUPPORTED_INPUTS or node.type not in _ONNX_INT_TYPES:
                raise ModelNotFoundError(
                    f"{model_path} declares input {node.name!r} of type {node.type}; a text "
                    f"classifier takes integer {', '.join(SUPPORTED_INPUTS)} only"
                )
            input_types[node.name] = _ONNX_INT_TYPES[node.type]
        if "input_ids" not in input_types:
            raise ModelNotFoundError(f"{model_path} has no input_ids input")
        classes = self.session.get_outputs()[0].shape[-1]
        if isinstance(classes, int) and classes != len(self.labels):
            raise ModelNotFoundError(
                f"{model_path} outputs {classes} logits but the label map holds "
                f"{len(self.labels)} labels: the bundle's files do not belong together"
            )
        return input_types


def _check_texts(texts: Sequence[str]) -> None:
    # A lone string is a Sequence[str] too, and would be classified one character at a time.
    if isinstance(texts, str):
        raise TypeError("pass a list of texts, not a single string")
