"""The variants a bundle can be served as: which graph file, run by which engine, in which
precision, and what the host must have to run it natively.

A variant is a pair (engine, precision) over one of the bundle's graph files:

| variant         | engine       | graph file        | computes in | runs where                    |
|-----------------|--------------|-------------------|-------------|-------------------------------|
| `fp32`          | ONNX Runtime | model.onnx        | fp32        | CPU, or CUDA where available  |
| `int8`          | ONNX Runtime | model.int8.onnx   | INT8        | CPU                           |
| `fp16`          | ONNX Runtime | model.fp16.onnx   | fp16        | CUDA                          |
| `openvino-fp32` | OpenVINO     | model.onnx        | fp32        | CPU                           |
| `openvino-int8` | OpenVINO     | model.int8.onnx   | INT8        | CPU                           |
| `openvino-bf16` | OpenVINO     | model.onnx        | bf16        | CPUs with native bf16 (AMX or |
|                 |              |                   |             | AVX-512 BF16) only            |

Which one is fastest depends on the processor (VNNI, AMX, AVX-512 BF16, the engines' kernels
for it), so export judges every variant it can run against PyTorch and records it in
metadata.json `variants`, and the predictor measures those that passed on its own host and
serves the fastest (`textops.components.serve.engine_probe`).

This module imports neither engine: the `textops` command and the settings import it.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Literal

from textops.components.common.bundle import Precision
from textops.components.common.precision_quality import (
    FP16_MAX_LOSS_POINTS,
    INT8_MAX_LOSS_POINTS,
)

logger = logging.getLogger(__name__)

Engine = Literal["onnxruntime", "openvino"]
Compute = Literal["fp32", "int8", "fp16", "bf16"]

#: Most accuracy or macro-F1 points bf16 may lose against fp32: the fp16 allowance, since
#: bf16 rounds activations more coarsely than fp16 but never overflows.
BF16_MAX_LOSS_POINTS = FP16_MAX_LOSS_POINTS
#: The OpenVINO device every OpenVINO variant runs on.
OPENVINO_DEVICE = "CPU"


@dataclass(frozen=True)
class Variant:
    """One way to serve a bundle.

    Attributes:
        name: The name `--variant`, metadata.json and the metrics use.
        engine: The runtime that executes the graph.
        graph: Which of the bundle's graph files it runs (see `bundle.MODEL_FILES`).
        compute: The precision its arithmetic runs in.
        max_loss_points: For a reduced-precision variant, the accuracy and macro-F1 points it
            may lose against fp32 on true labels; None for an fp32 variant, which must
            reproduce PyTorch (argmax agreement 100%, logits within the parity tolerance).
    """

    name: str
    engine: Engine
    graph: Precision
    compute: Compute
    max_loss_points: float | None

    @property
    def reduced(self) -> bool:
        """True when it computes in less than fp32 (judged by quality, not by parity)."""
        return self.max_loss_points is not None


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("fp32", "onnxruntime", "fp32", "fp32", None),
        Variant("int8", "onnxruntime", "int8", "int8", INT8_MAX_LOSS_POINTS),
        Variant("fp16", "onnxruntime", "fp16", "fp16", FP16_MAX_LOSS_POINTS),
        Variant("openvino-fp32", "openvino", "fp32", "fp32", None),
        Variant("openvino-int8", "openvino", "int8", "int8", INT8_MAX_LOSS_POINTS),
        Variant("openvino-bf16", "openvino", "fp32", "bf16", BF16_MAX_LOSS_POINTS),
    )
}
#: Variants that run on a CPU, in the order the probe lists them (fp32 first: the reference).
CPU_VARIANTS = ("fp32", "int8", "openvino-fp32", "openvino-int8", "openvino-bf16")
#: What `--variant` takes besides a variant's name: measure and serve the fastest.
AUTO = "auto"


def variant(name: str) -> Variant:
    """The variant called `name`.

    Raises:
        ValueError: No variant has that name.
    """
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(
            f"no serving variant is called {name!r}; choose {AUTO} or one of {', '.join(VARIANTS)}"
        ) from None


@functools.cache
def openvino_missing() -> str | None:
    """Why OpenVINO cannot run here (not installed, or no CPU device), or None when it can."""
    try:
        import openvino as ov
    except ImportError as e:
        return f"openvino is not installed ({e})"
    try:
        devices = ov.Core().available_devices
    except Exception as e:  # OpenVINO's errors derive from RuntimeError or Exception only
        return f"openvino cannot start ({type(e).__name__}: {e})"
    if OPENVINO_DEVICE not in devices:
        return f"openvino finds no {OPENVINO_DEVICE} device (it has {', '.join(devices)})"
    return None


@functools.cache
def cpu_capabilities() -> tuple[str, ...]:
    """What OpenVINO's CPU plugin can compute natively here (e.g. FP32, INT8, BF16, FP16);
    empty where OpenVINO cannot run."""
    if openvino_missing() is not None:
        return ()
    import openvino as ov

    capabilities = ov.Core().get_property(OPENVINO_DEVICE, "OPTIMIZATION_CAPABILITIES")
    return tuple(str(c) for c in capabilities)


def host_refusal(candidate: Variant) -> str | None:
    """Why this host cannot run `candidate` as it is meant to run, or None when it can.

    CUDA variants are judged where their session opens (see `serve.execution`); this covers
    the CPU engines: OpenVINO must be installed, and bf16 must be native. Emulated bf16
    (OpenVINO would compute in fp32 behind conversions) is never faster than fp32.
    """
    if candidate.engine != "openvino":
        return None
    missing = openvino_missing()
    if missing is not None:
        return missing
    if candidate.compute == "bf16" and "BF16" not in cpu_capabilities():
        return (
            "this CPU does not compute bf16 natively (no AMX or AVX-512 BF16; OpenVINO's CPU "
            f"capabilities are {', '.join(cpu_capabilities()) or 'none'})"
        )
    return None
