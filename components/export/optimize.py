"""Graph rewrites for serving: transformer fusion, INT8 dynamic quantization, fp16 conversion.

Each takes one single-file ONNX graph and writes another; none of them judges its result,
which is the job of `parity` and `variants`. ONNX Runtime's tools are imported inside the
functions: they pull in sympy and onnx helpers that serving never needs.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def quantize_int8(source: Path, target: Path, *, per_channel: bool) -> None:
    """Write `source` with INT8 dynamic quantization: signed INT8 weights, activations at run time.

    Args:
        source: An fp32 graph, fused or not.
        target: Where the quantized graph is written.
        per_channel: One scale per output channel of each weight, else one per tensor.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    started = time.perf_counter()
    quantize_dynamic(
        str(source),
        str(target),
        weight_type=QuantType[INT8_WEIGHT_TYPE],
        per_channel=per_channel,
        # ONNX shape inference knows no com.microsoft operators, so a fused graph leaves
        # tensor types unknown; every tensor the quantizer asks about is float.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    logger.info(
        "quantized %s: per_channel=%s bytes=%d seconds=%.1f",
        target.name,
        per_channel,
        target.stat().st_size,
        time.perf_counter() - started,
    )


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
