"""OpenVINO running a bundle's ONNX graph, behind the few methods of an ONNX Runtime session
that `OnnxClassifier` calls (`run`, `get_inputs`, `get_outputs`, `get_providers`).

The graph file is the same one ONNX Runtime runs (model.onnx, or the QDQ model.int8.onnx,
which OpenVINO executes with its own INT8 kernels); OpenVINO's CPU plugin reads the ONNX
Runtime contrib operators the fused graph holds (Attention, SkipLayerNormalization, BiasGelu).
bf16 is OpenVINO's inference precision on a graph stored in fp32, asked for only where the
CPU computes it natively (see `engines.host_refusal`); a request for it anywhere else fails
here rather than run fp32 under a bf16 name.

One compiled model serves every thread; each thread gets its own infer request, since one
request must not run two calls at once.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from textops.components.common.engines import OPENVINO_DEVICE, Compute
from textops.components.common.errors import ModelNotFoundError

#: What `get_providers` reports, as an ONNX Runtime session names its execution provider.
PROVIDER = f"OpenVINO:{OPENVINO_DEVICE}"
#: OpenVINO's inference precision for each compute precision an OpenVINO variant may ask.
#: INT8 graphs are compiled at f32: their quantized nodes run in INT8 regardless, and what
#: stays float between them stays fp32, as it does in ONNX Runtime.
_INFERENCE_PRECISION = {"fp32": "f32", "int8": "f32", "bf16": "bf16"}
_ONNX_TYPES = {"i64": "tensor(int64)", "i32": "tensor(int32)", "f32": "tensor(float)"}


@dataclass(frozen=True)
class _Node:
    """A graph input or output, as `onnxruntime.NodeArg` describes it."""

    name: str
    type: str
    shape: list[int | str | None]


class OpenVinoSession:
    """A compiled OpenVINO model that answers like an `onnxruntime.InferenceSession`."""

    def __init__(
        self,
        model_path: str | Path,
        compute: Compute = "fp32",
        *,
        threads: int | None = None,
    ) -> None:
        """Compile `model_path` for OpenVINO's CPU plugin.

        Args:
            model_path: The ONNX graph.
            compute: fp32, int8 or bf16.
            threads: Inference threads; None lets OpenVINO use every core it may run on.

        Raises:
            ModelNotFoundError: OpenVINO cannot read or compile the graph, or the inference
                precision it compiled at is not the one asked for (bf16 on a CPU without it).
        """
        import openvino as ov  # only here: a predictor serving ONNX Runtime never imports it

        if compute not in _INFERENCE_PRECISION:
            raise ValueError(f"OpenVINO serves fp32, int8 or bf16 here, not {compute}")
        wanted = _INFERENCE_PRECISION[compute]
        # LATENCY: one stream using all threads for each call, as ONNX Runtime runs; the
        # predictor makes one call at a time and batches concurrent requests itself.
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": wanted}
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            core = ov.Core()
            self._compiled = core.compile_model(
                core.read_model(str(model_path)), OPENVINO_DEVICE, config
            )
        except Exception as e:  # OpenVINO's errors derive from RuntimeError or Exception only
            raise ModelNotFoundError(
                f"OpenVINO cannot compile {model_path} ({type(e).__name__}: {e})"
            ) from e
        compiled_at = self._compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        if compiled_at != wanted:
            raise ModelNotFoundError(
                f"OpenVINO compiled {model_path} at {compiled_at}, not the {wanted} asked for"
            )
        self.compute = compute
        self._inputs = [_node(port) for port in self._compiled.inputs]
        self._outputs = [_node(port) for port in self._compiled.outputs]
        self._local = threading.local()

    def get_inputs(self) -> list[_Node]:
        return list(self._inputs)

    def get_outputs(self) -> list[_Node]:
        return list(self._outputs)

    def get_providers(self) -> list[str]:
        return [PROVIDER]

    def run(
        self,
        output_names: Sequence[str] | None,
        feeds: Mapping[str, np.ndarray],
        run_options: Any = None,
    ) -> list[np.ndarray]:
        """Run the graph on `feeds` and return its first output (the logits), copied out of
        the request, whose buffers the thread's next call overwrites.

        `run_options` (ONNX Runtime's, which can stop a call midway) is accepted and unused:
        an OpenVINO call runs to its end, and callers that cancel work (explanations) check
        between calls too.
        """
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        request.infer(dict(feeds))
        return [np.array(request.get_output_tensor(0).data, copy=True)]


def _node(port: Any) -> _Node:
    shape = [dim.get_length() if dim.is_static else None for dim in port.get_partial_shape()]
    element = port.get_element_type().get_type_name()
    return _Node(port.get_any_name(), _ONNX_TYPES.get(element, f"tensor({element})"), shape)
