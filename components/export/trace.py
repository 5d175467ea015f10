"""Trace a Hugging Face classifier to a single-file ONNX graph, with the tokenizer it needs.

torch and transformers are imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from textops.components.common import bundle as bundle_format
from textops.components.common.errors import ExportError
from textops.components.common.labels import LabelMap
from textops.components.common.onnx_classifier import SUPPORTED_INPUTS

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

#: ONNX opset of the exported graph; 17 is served by every onnxruntime and Triton in use.
OPSET = 17


def load_model(model_dir: Path, labels: LabelMap, max_seq_length: int) -> PreTrainedModel:
    """The classifier in eval mode, checked against its label map and `max_seq_length`.

    Raises:
        ExportError: config.json and labels.json disagree, or the window exceeds the
            model's positions.
    """
    from transformers import AutoModelForSequenceClassification

    # Eager attention traces to plain MatMul/Softmax ops; the SDPA path branches on the mask.
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, attn_implementation="eager"
    ).eval()
    config_labels = tuple(str(model.config.id2label[i]) for i in range(model.config.num_labels))
    if config_labels != labels.names:
        raise ExportError(
            f"{model_dir}: config.json id2label {list(config_labels)} does not match "
            f"labels.json {list(labels.names)}; re-run training so both come from one label map"
        )
    limit = getattr(model.config, "max_position_embeddings", None)
    if isinstance(limit, int) and max_seq_length > limit:
        raise ExportError(
            f"max_seq_length {max_seq_length} exceeds the model's {limit} positions; "
            f"train with max_seq_length <= {limit}"
        )
    return model


def load_fast_tokenizer(model_dir: Path) -> PreTrainedTokenizerBase:
    """The tokenizer training used, which must be a fast one (backed by `tokenizers`).

    Raises:
        ExportError: The model directory holds no fast tokenizer.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if not tokenizer.is_fast:
        raise ExportError(
            f"{model_dir} holds no fast tokenizer (tokenizer.json): serving tokenizes with the "
            "`tokenizers` library, so save the model with a fast tokenizer"
        )
    return tokenizer


def write_tokenizer(
    tokenizer: PreTrainedTokenizerBase, bundle_dir: Path, max_seq_length: int
) -> None:
    """Write the bundle's tokenizer.json: truncating at `max_seq_length`, padding to the longest.

    It is the training tokenizer's own backend, so serving splits text exactly as training did.
    """
    backend = tokenizer.backend_tokenizer
    backend.enable_truncation(max_length=max_seq_length)
    backend.enable_padding(
        pad_id=tokenizer.pad_token_id or 0,
        pad_token=tokenizer.pad_token or "[PAD]",
        pad_type_id=getattr(tokenizer, "pad_token_type_id", 0) or 0,
        direction=tokenizer.padding_side,
    )
    backend.save(str(bundle_dir / bundle_format.TOKENIZER_FILE))


def graph_inputs(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> tuple[str, ...]:
    """The inputs the tokenizer produces and the model accepts, in `SUPPORTED_INPUTS` order."""
    import inspect

    produced = set(tokenizer.model_input_names) | {"input_ids", "attention_mask"}
    accepted = set(inspect.signature(model.forward).parameters)
    return tuple(name for name in SUPPORTED_INPUTS if name in produced and name in accepted)


def export_onnx(model: PreTrainedModel, example: dict[str, np.ndarray], onnx_path: Path) -> None:
    """Trace `model` to a single-file ONNX graph with dynamic batch and sequence axes.

    Args:
        model: The classifier, in eval mode.
        example: Tokenized inputs to trace with, named as the graph's inputs will be; a batch
            of texts of different lengths, so the trace sees padding.
        onnx_path: The .onnx file to write.

    Raises:
        ExportError: The graph does not fit in one file or fails the ONNX checker.
    """
    import onnx
    import torch

    input_names = list(example)
    wrapper = _logits_only(model, input_names).eval()
    started = time.perf_counter()
    with _quiet_export(), torch.no_grad():
        torch.onnx.export(
            wrapper,
            tuple(torch.from_numpy(a).long() for a in example.values()),
            str(onnx_path),
            input_names=input_names,
            output_names=["logits"],
            dynamic_axes={
                **{name: {0: "batch", 1: "sequence"} for name in input_names},
                "logits": {0: "batch"},
            },
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    # The exporter toggles training mode and restores it on exit; parity must run in eval
    # mode (dropout off), so do not depend on the mode it restored.
    model.eval()

    strays = sorted(p.name for p in onnx_path.parent.iterdir() if p.suffix in {".data", ".bin"})
    proto = onnx.load(str(onnx_path), load_external_data=False)
    if strays or any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
        raise ExportError(
            f"the ONNX graph was written with external data ({', '.join(strays) or 'tensors'}): "
            "the bundle needs one model.onnx, which caps the model at 2 GB"
        )
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"the exported graph is not valid ONNX: {e}") from e
    logger.info(
        "exported %s: opset=%d inputs=%s bytes=%d seconds=%.1f",
        onnx_path.name,
        OPSET,
        ",".join(input_names),
        onnx_path.stat().st_size,
        time.perf_counter() - started,
    )


def _logits_only(model: PreTrainedModel, input_names: Sequence[str]) -> torch.nn.Module:
    """Wrap `model` to take positional inputs in graph order and return only the logits."""
    import torch

    class LogitsOnly(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            logits: torch.Tensor = self.model(**dict(zip(input_names, inputs, strict=True))).logits
            return logits

    return LogitsOnly()


@contextmanager
def _quiet_export() -> Iterator[None]:
    """Silence warnings the TorchScript exporter raises on every transformer export.

    Each is harmless here, and the parity check would catch a wrong graph: the deprecation
    of the TorchScript exporter (dynamo=False is chosen on purpose), tracer warnings on shape
    checks that are constant without a KV cache, and the generic aten::index note.
    """
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", message=r".*The feature will be removed")
        warnings.filterwarnings("ignore", message=r"Exporting aten::index operator")
        yield
