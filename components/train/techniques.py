"""Speed techniques of the training loop, each of which a benchmark can switch off.

They change how fast the loop runs, never what it computes: the same batches in the same
order, padding that the attention mask hides, the same optimizer arithmetic. What each one
saves is measured one by one (`tests/benchmarks/bench_train.py --without NAME`).

The pieces: `Techniques` (the switches), `bucketed_width` (shape bucketing), `prefetched`
(a background thread that assembles the next batches), `LossTally` (losses summed on the
device, read every few steps), `attention_backends` (which SDPA kernels CUDA may pick).
"""

from __future__ import annotations

import contextlib
import math
import queue
import threading
from collections.abc import Generator, Iterable
from dataclasses import dataclass, fields, replace
from typing import ClassVar, TypeVar

import torch

#: Batch lengths are padded up to a multiple of this many tokens: at most 8 shapes for a
#: 128-token window, so kernels, attention plans and compiled graphs are reused.
BUCKET_TOKENS = 16
#: With deferred sync, the summed loss is read (a host-device sync) every this many steps,
#: and always before a checkpoint and at the end of an epoch.
SYNC_EVERY_STEPS = 16
#: Steps' batches the prefetch thread assembles ahead of the loop.
PREFETCH_DEPTH = 2

T = TypeVar("T")


@dataclass(frozen=True)
class Techniques:
    """Speed techniques of the training loop. Each is on by default (compile excepted) and
    leaves the trained model's quality unchanged; benchmarks switch them off one at a time."""

    #: Pad each batch's length up to a multiple of `BUCKET_TOKENS` (capped at the window), so
    #: kernels, cuDNN attention plans and any compiled graph are reused; only where shapes are
    #: reused (`buckets_on`).
    bucket_shapes: bool = True
    #: Batches padded ahead of time in a background thread from pre-tokenized int arrays;
    #: pinned memory and non-blocking copies on CUDA.
    prefetch: bool = True
    #: No per-step `.item()`: losses summed on the device, the non-finite check done every
    #: `SYNC_EVERY_STEPS` steps, before a checkpoint and at the epoch's end.
    deferred_sync: bool = True
    #: Fused AdamW (one kernel for all parameters) on CPU and CUDA.
    fused_optimizer: bool = True
    #: SDPA attention (off: the eager attention); on CUDA, flash or memory-efficient kernels
    #: rather than cuDNN's, which plans a graph for every new shape.
    flash_attention: bool = True
    #: `torch.compile(model, dynamic=False)` over the bucketed shapes.
    compile: bool = False

    NAMES: ClassVar[tuple[str, ...]] = (
        "bucket_shapes",
        "prefetch",
        "deferred_sync",
        "fused_optimizer",
        "flash_attention",
        "compile",
    )

    def without(self, name: str) -> Techniques:
        """A copy with technique `name` switched off.

        Raises:
            ValueError: `name` is not one of `NAMES`.
        """
        if name not in self.NAMES:
            raise ValueError(f"unknown technique {name!r}; the techniques are {list(self.NAMES)}")
        return replace(self, **{name: False})

    def buckets_on(self, device: torch.device) -> bool:
        """Whether batch lengths are bucketed on `device`: on CUDA, whose kernels and attention
        plans are chosen per shape, and wherever the model is compiled (a graph per shape).
        A CPU's eager kernels take any shape at no cost, and the extra padding is compute: on
        a 2-vCPU Xeon, fine-tuning the default model ran 1.38x faster without it."""
        return self.bucket_shapes and (device.type == "cuda" or self.compile)

    def enabled(self) -> list[str]:
        """The names of the techniques that are on, for logs and reports."""
        return [f.name for f in fields(self) if getattr(self, f.name)]


#: Every technique on but compile: what a run uses unless told otherwise.
DEFAULT_TECHNIQUES = Techniques()


def bucketed_width(longest: int, max_length: int, bucket: bool) -> int:
    """The padded length of a batch whose longest row has `longest` tokens.

    Bucketed: rounded up to a multiple of `BUCKET_TOKENS`, never past `max_length` (the
    tokenizer's truncation window, which no row exceeds).
    """
    if not bucket:
        return longest
    return min(max_length, BUCKET_TOKENS * math.ceil(longest / BUCKET_TOKENS))


def prefetched(items: Iterable[T], depth: int = PREFETCH_DEPTH) -> Generator[T, None, None]:
    """`items`, produced by a background thread up to `depth` ahead of the consumer.

    The order is `items`' own (one producer, a FIFO queue), so a resumed run sees the very
    same batches. An exception in the producer is raised in the consumer; a consumer that
    stops early (an error in the loop) stops the producer.
    """
    done = object()
    handoff: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item: object) -> bool:
        # A bounded wait, so that a consumer gone away never leaves this thread blocked.
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer(item):
                    return
        except BaseException as e:  # handed to the consumer, which raises it
            offer(_Failure(e))
            return
        offer(done)

    worker = threading.Thread(target=produce, name="textops-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = handoff.get()
            if item is done:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        worker.join()


@dataclass(frozen=True)
class _Failure:
    error: BaseException


class LossTally:
    """The training loss summed on the device, read on the host only when asked.

    Reading a CUDA tensor waits for every kernel queued before it; doing it once per step
    keeps the host from running ahead of the GPU.
    """

    def __init__(self, device: torch.device) -> None:
        self.pending = torch.zeros((), device=device)

    def add(self, loss: torch.Tensor) -> None:
        """Add a detached loss; no sync."""
        self.pending += loss

    def read(self) -> float:
        """The sum since the last read (a host-device sync), and start a new sum."""
        value = float(self.pending.item())
        self.pending.zero_()
        return value


def attention_backends(
    device: torch.device, enabled: bool
) -> contextlib.AbstractContextManager[None]:
    """Where the forward pass runs: on CUDA, SDPA may use flash, memory-efficient or math kernels.

    Without it, bf16 SDPA on recent GPUs picks cuDNN attention, which builds and caches a
    graph for each new (batch, length) shape: tens of milliseconds each time. The backward
    pass uses the kernel the forward chose, so the forward alone needs the context.
    """
    if not enabled or device.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(
        [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    )
