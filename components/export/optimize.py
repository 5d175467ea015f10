"""Graph rewrites for serving: transformer fusion, INT8 static quantization, fp16 conversion.

Each takes one single-file ONNX graph and writes another; none of them judges its result,
which is the job of `parity` and `variants`. ONNX Runtime's tools are imported inside the
functions: they pull in sympy and onnx helpers that serving never needs.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

#: Hugging Face model types whose graphs follow BERT's layout (embeddings, post-LayerNorm
#: encoder blocks of self-attention and GELU MLP), the one pattern set that
#: `onnxruntime.transformers.optimizer` matches under its `bert` model type.
FUSABLE_MODEL_TYPES = frozenset(
    {"bert", "distilbert", "roberta", "xlm-roberta", "camembert", "electra"}
)
#: Contrib operators whose presence shows the BERT fusions took.
FUSED_OPS = (
    "Attention",
    "MultiHeadAttention",
    "EmbedLayerNormalization",
    "SkipLayerNormalization",
    "LayerNormalization",
    "BiasGelu",
    "FastGelu",
    "Gelu",
)
#: INT8 weights are signed and quantized per output channel or per tensor.
INT8_WEIGHT_TYPE = "QInt8"
#: INT8 activations are unsigned with a zero point: the pairing (U8S8) ONNX Runtime's CPU
#: integer kernels are built for.
INT8_ACTIVATION_TYPE = "QUInt8"
#: What INT8 quantizes: MatMuls with a weight (nearly all the work) and embedding lookups
#: (most of the bytes).
INT8_OPERATORS = ("MatMul", "Gather")


@dataclass(frozen=True)
class FusionOutcome:
    """Whether the transformer fusions were applied to the graph, and why (not)."""

    applied: bool
    model_type: str
    reason: str
    fused_ops: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "model_type": self.model_type,
            "reason": self.reason,
            "fused_ops": dict(self.fused_ops),
        }


def fuse_transformer(
    source: Path, target: Path, *, model_type: str, num_heads: int, hidden_size: int
) -> FusionOutcome:
    """Fuse attention, LayerNorm and GELU subgraphs into ONNX Runtime's transformer kernels.

    Args:
        source: The exported fp32 graph.
        target: Where the fused graph is written, when fusion applies.
        model_type: The Hugging Face config's `model_type`.
        num_heads: Attention heads per layer (from the config; 0 lets the optimizer guess).
        hidden_size: Hidden width (from the config; 0 lets the optimizer guess).

    Returns:
        The outcome; `target` exists only when `applied` is true.
    """
    if model_type not in FUSABLE_MODEL_TYPES:
        return FusionOutcome(
            applied=False,
            model_type=model_type,
            reason=(
                f"model_type {model_type!r} is not one ONNX Runtime's BERT fusions match "
                f"({', '.join(sorted(FUSABLE_MODEL_TYPES))}); model.onnx is the unfused graph"
            ),
        )
    from onnxruntime.transformers.optimizer import optimize_model

    started = time.perf_counter()
    try:
        # opt_level=0: only the Python fusions. ONNX Runtime's own optimizations run when a
        # session loads the graph, on whatever provider serves it; baking them in here would
        # tie the file to the provider it was optimized on.
        optimized = optimize_model(
            str(source),
            model_type="bert",
            num_heads=num_heads,
            hidden_size=hidden_size,
            opt_level=0,
            use_gpu=False,
        )
    except Exception as e:  # the pattern matcher raises anything; the unfused graph still serves
        logger.warning("fusion failed: %s: %s", type(e).__name__, e)
        return FusionOutcome(
            applied=False,
            model_type=model_type,
            reason=f"the transformer optimizer failed ({type(e).__name__}: {e})",
        )
    counts = fused_op_counts(optimized.model)
    if not counts:
        return FusionOutcome(
            applied=False,
            model_type=model_type,
            reason="the transformer optimizer matched no subgraph to fuse",
        )
    optimized.save_model_to_file(str(target), use_external_data_format=False)
    reason = "fused with onnxruntime.transformers.optimizer (model_type=bert)"
    if not counts.get("Attention") and not counts.get("MultiHeadAttention"):
        reason += "; attention was not fused, only normalization and activation subgraphs"
    logger.info(
        "fused %s: %s seconds=%.1f",
        target.name,
        " ".join(f"{op}={n}" for op, n in counts.items()),
        time.perf_counter() - started,
    )
    return FusionOutcome(applied=True, model_type=model_type, reason=reason, fused_ops=counts)


def fused_op_counts(model: Any) -> dict[str, int]:
    """How many nodes of each fused operator type an ONNX `ModelProto` holds."""
    counts = Counter(node.op_type for node in model.graph.node)
    return {op: counts[op] for op in FUSED_OPS if counts[op]}


def quantize_int8(
    source: Path,
    target: Path,
    *,
    calibration: Iterable[dict[str, np.ndarray]],
    per_channel: bool,
    float_consumers: bool = True,
) -> int:
    """Write `source` with static INT8 quantization, every scale fixed before serving.

    Weights become signed INT8; each activation a weight MatMul reads gets one scale and zero
    point, set from the ranges the calibration batches reach (MinMax). Fixed scales are what
    make the graph batch invariant: dynamic quantization computes one scale over the whole
    padded batch at run time, so a text's answer moves with its neighbours. QDQ format, which
    ONNX Runtime's CPU provider fuses into integer MatMul kernels.

    Args:
        source: The unfused fp32 graph (plain MatMul nodes, which the QDQ fusions match).
        target: Where the quantized graph is written.
        calibration: Encoded batches of real texts, each without padding (see
            `variants.calibration_batches`); read once.
        per_channel: One weight scale per output channel, else one per tensor.
        float_consumers: Point every consumer but the quantized operators back at the float
            activation (`keep_float_consumers`); False keeps `quantize_static`'s own graph,
            which the benchmark compares.

    Returns:
        The number of calibration batches read.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    batches = list(calibration)
    if not batches:
        raise ValueError("static INT8 quantization needs at least one calibration batch")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    started = time.perf_counter()
    model = onnx.load(str(source))
    with (
        tempfile.TemporaryDirectory(prefix="textops-int8-") as scratch,
        _without_preprocessing_advice(),
    ):
        quantized_path = Path(scratch) / "qdq.onnx"
        quantize_static(
            str(source),
            str(quantized_path),
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType[INT8_ACTIVATION_TYPE],
            weight_type=QuantType[INT8_WEIGHT_TYPE],
            per_channel=per_channel,
            calibrate_method=CalibrationMethod.MinMax,
            op_types_to_quantize=list(INT8_OPERATORS),
            # Attention scores and context (activation times activation) stay float, as in
            # dynamic quantization: their ranges vary most from text to text.
            nodes_to_exclude=activation_matmuls(model),
            extra_options={
                # MatMul outputs stay float: the bias Add and residual follow in fp32, and a
                # rounded output would only add error.
                "OpTypesToExcludeOutputQuantization": list(INT8_OPERATORS),
                # Bounds memory: ranges merge every few batches instead of at the end.
                "CalibMaxIntermediateOutputs": 8,
            },
        )
        quantized = onnx.load(str(quantized_path))
    rerouted = keep_float_consumers(quantized, INT8_OPERATORS) if float_consumers else 0
    gather_before_dequantize(quantized)
    onnx.save(quantized, str(target))
    logger.info(
        "quantized %s: static per_channel=%s calibration_batches=%d float_consumers=%d "
        "bytes=%d seconds=%.1f",
        target.name,
        per_channel,
        len(batches),
        rerouted,
        target.stat().st_size,
        time.perf_counter() - started,
    )
    return len(batches)


@contextlib.contextmanager
def _without_preprocessing_advice() -> Iterator[None]:
    """Hide the quantizer's advice to run its pre-processing first, logged on every call.

    The advice (shape inference and folding before quantizing) is what the measured recipe
    does without; on the root logger, at WARNING, it would read as a fault in every export.
    """

    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Please consider")

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def activation_matmuls(model: Any) -> list[str]:
    """Names of the MatMul nodes of an ONNX `ModelProto` with no constant (weight) input."""
    constants = {tensor.name for tensor in model.graph.initializer}
    constants |= {
        out for node in model.graph.node if node.op_type == "Constant" for out in node.output
    }
    return [
        node.name
        for node in model.graph.node
        if node.op_type == "MatMul" and not any(name in constants for name in node.input)
    ]


def keep_float_consumers(model: Any, quantized_ops: Sequence[str]) -> int:
    """Let only the quantized operators read the rounded copy of an activation.

    `quantize_static` puts a QuantizeLinear/DequantizeLinear pair on each activation it
    quantizes and routes every consumer through it, so a transformer's residual connections
    and LayerNorms would read the rounded copy too. On fine-tuned all-MiniLM-L6-v2 that cost
    0.67 points of validation accuracy, and fp32's verdict on 99.33% of the validation split
    instead of 100% (docs/benchmarks.md, "ONNX export"). Edits `model` in place.

    Returns:
        How many node inputs were pointed back at the float tensor.
    """
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    outputs = {value.name for value in graph.output}
    rerouted = 0
    for dequantize in [node for node in graph.node if node.op_type == "DequantizeLinear"]:
        quantize = producers.get(dequantize.input[0])
        if quantize is None or quantize.op_type != "QuantizeLinear":
            continue  # a weight's DequantizeLinear: its input is a constant, not an activation
        if dequantize.output[0] in outputs:
            continue
        for node in graph.node:
            if node.op_type in quantized_ops:
                continue
            for index, name in enumerate(node.input):
                if name == dequantize.output[0]:
                    node.input[index] = quantize.input[0]
                    rerouted += 1
    _drop_unread(graph, ("QuantizeLinear", "DequantizeLinear"))
    return rerouted


def gather_before_dequantize(model: Any) -> int:
    """Look up embedding rows in the INT8 table and dequantize only the rows looked up.

    `quantize_static` dequantizes a quantized embedding table whole and then gathers from it,
    and ONNX Runtime runs that DequantizeLinear on every call: 30522 x 384 values for one
    sentence, which cost static INT8 most of its speed at batch 1. With one scale and zero
    point for the table, gathering first gives the very same values. Edits `model` in place.

    Returns:
        How many lookups were reordered.
    """
    import onnx.helper

    graph = model.graph
    constants = {tensor.name: tensor for tensor in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    reordered = 0
    for gather in [node for node in graph.node if node.op_type == "Gather"]:
        dequantize = producers.get(gather.input[0])
        if dequantize is None or dequantize.op_type != "DequantizeLinear":
            continue
        table, *parameters = dequantize.input
        per_tensor = all(
            name in constants and not list(constants[name].dims) for name in parameters
        )
        if table not in constants or not per_tensor:
            continue  # per-axis scales would need the axis carried through the lookup
        rows = f"{gather.output[0]}_quantized"
        after = onnx.helper.make_node(
            "DequantizeLinear",
            [rows, *parameters],
            [gather.output[0]],
            name=f"{gather.name}_DequantizeLinear",
        )
        gather.input[0] = table
        gather.output[0] = rows
        position = list(graph.node).index(gather)
        graph.node.insert(position + 1, after)
        reordered += 1
    _drop_unread(graph, ("DequantizeLinear",))
    return reordered


def _drop_unread(graph: Any, op_types: Sequence[str]) -> None:
    """Remove nodes of `op_types` whose outputs nothing reads, until none is left."""
    while True:
        read = {name for node in graph.node for name in node.input}
        read |= {value.name for value in graph.output}
        unread = [
            node
            for node in graph.node
            if node.op_type in op_types and not any(out in read for out in node.output)
        ]
        if not unread:
            return
        for node in unread:
            graph.node.remove(node)


def convert_fp16(source: Path, target: Path) -> None:
    """Write `source` with float16 weights and activations, keeping float32 inputs and outputs.

    Float32 logits out mean serving code needs no change; the operators ONNX Runtime's
    converter keeps in float32 by default (those that overflow in half precision) stay so.
    """
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    started = time.perf_counter()
    model = OnnxModel(onnx.load(str(source)))
    model.convert_float_to_float16(keep_io_types=True)
    model.save_model_to_file(str(target), use_external_data_format=False)
    logger.info(
        "converted %s to fp16: bytes=%d seconds=%.1f",
        target.name,
        target.stat().st_size,
        time.perf_counter() - started,
    )
