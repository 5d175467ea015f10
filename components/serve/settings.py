"""What the predictor serves and its limits, resolved from the command line.

This module stays light (no kserve, no onnxruntime): the `textops` command imports it, and the
predictor's objects carry a `ServeSettings` into every KServe worker process.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from textops.components.common.bundle import METADATA_FILE, ModelBundle
from textops.components.common.config import TrainingConfig
from textops.components.common.engines import AUTO, VARIANTS
from textops.components.common.errors import ConfigError, ModelNotFoundError
from textops.components.common.model_repository import current_version
from textops.components.common.traffic import DEFAULT_MAX_BODY_BYTES

#: The model name when neither --model-name nor the bundle's folder gives one: the name
#: training publishes under by default, so that `serve --model-repository` finds its model.
DEFAULT_MODEL_NAME: str = TrainingConfig.model_fields["model_name"].default
#: Texts one request may hold (V1 instances, V2 tensor elements); more gets 413.
DEFAULT_MAX_BATCH_SIZE = 256
#: Texts per ONNX Runtime call; concurrent requests are coalesced up to this many texts.
DEFAULT_INFERENCE_BATCH_SIZE = 64
#: Requests the payload logger holds (with room for their responses) while its senders catch
#: up; more are dropped whole.
DEFAULT_PAYLOAD_QUEUE_SIZE = 1000
#: Characters kept per token of the model's max sequence length: a longer text is cut to its
#: first and last max_seq_length * this many characters (both ends: a model trained with the
#: head_tail long-text strategy reads the end too) before the tokenizer sees it. The longest sample
#: sentences need about 8 characters a token (a word piece and its space), English text 4 to 5,
#: so the cut changes nothing a model would read, while a megabyte of text costs what 2 KB do.
DEFAULT_MAX_CHARS_PER_TOKEN = 16
#: Texts per explain request; each costs up to explain_max_words + 1 classifications.
DEFAULT_EXPLAIN_MAX_TEXTS = 16
#: Words scored per explained text (its first ones); later words get no importance.
DEFAULT_EXPLAIN_MAX_WORDS = 64
#: Explain requests one serving process works on at once; more are answered 503.
DEFAULT_EXPLAIN_CONCURRENCY = 2
#: Seconds an explain request may take, waiting for the model included; then 503.
DEFAULT_EXPLAIN_TIMEOUT_SECONDS = 30.0
#: The share of the model's time explanations get while predictions keep it busy: enough
#: that one 64-word explanation finishes within seconds under load, while a prediction waits
#: for an explanation's call (one max-length text) in no more than a tenth of the time.
DEFAULT_EXPLAIN_SHARE = 0.1

#: Reference rows `--variant auto` judges and times each variant on at the full batch: a few
#: batches, and enough that one point of accuracy is more than two rows.
CHECK_ROWS = 256
#: Seconds `--variant auto` times each variant on one text at a time (`--probe-seconds`);
#: the checks on CHECK_ROWS rows come on top.
DEFAULT_PROBE_SECONDS = 1.0

ServePrecision = Literal["fp32", "int8", "fp16"]
_VERSION_DIR = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class PayloadLoggerSettings:
    """Where and how the predictor sends request and response CloudEvents.

    Attributes:
        url: The collector's URL.
        source: The `Ce-Source` of every event.
        namespace: The `Ce-Namespace` of every event.
        endpoint: The `Ce-Endpoint` of every event (`default` or `canary` in KServe).
        component: The `Ce-Component` of every event.
        queue_size: Requests whose events may wait to be sent; each holds room for its request
            and its response, and a request arriving when it is full is dropped with its
            response (see `payload_logger`).
        timeout_seconds: Time allowed for one event's POST.
    """

    url: str
    source: str
    namespace: str = "default"
    endpoint: str = "default"
    component: str = "predictor"
    queue_size: int = DEFAULT_PAYLOAD_QUEUE_SIZE
    timeout_seconds: float = 5.0


@dataclass(frozen=True)
class ServeSettings:
    """Everything the predictor needs to know besides KServe's own flags.

    Attributes:
        model_name: The name in the URL paths (`/v1/models/<name>:predict`).
        bundle: The bundle directory served in bundle mode.
        model_repository: The local model repository served in repository mode.
        model_version: The version to report in bundle mode; None reads it from the bundle.
        precision: Which ONNX Runtime model file to run, unmeasured. fp16 is served only on
            CUDA, once it passes export's fp16 rule there; else fp32 is (see `execution`).
        variant: `auto` or None (without `precision`) measures the variants on this host and
            serves the fastest; a variant's name serves it (see `execution`).
        probe_seconds: Seconds the measuring spends on texts alone (see `engine_probe`).
        intra_op_threads: ONNX Runtime threads per call; None uses the usable cores.
        intra_op_spinning: Let idle intra-op threads spin-wait for the next call.
        max_batch_size: Texts one request may hold.
        max_body_bytes: Bytes one request body may hold.
        inference_batch_size: Texts per ONNX Runtime call.
        max_chars_per_token: Each text is cut to its first and last max_seq_length times this
            many characters before it is tokenized (see `max_text_chars`).
        explain_max_texts: Texts one explain request may hold (and no more than
            max_batch_size).
        explain_max_words: Words scored per explained text.
        explain_concurrency: Explain requests worked on at once per process.
        explain_timeout_seconds: Time one explain request may take.
        explain_share: The share of the model's time explanations get while predictions
            keep it busy (see `inference_gate`); idle time they get whole.
        payload_logger: Where to send CloudEvents; None sends none.
    """

    model_name: str
    bundle: Path | None = None
    model_repository: Path | None = None
    model_version: str | None = None
    precision: ServePrecision | None = None
    variant: str | None = None
    probe_seconds: float = DEFAULT_PROBE_SECONDS
    intra_op_threads: int | None = None
    intra_op_spinning: bool = False
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    inference_batch_size: int = DEFAULT_INFERENCE_BATCH_SIZE
    max_chars_per_token: int = DEFAULT_MAX_CHARS_PER_TOKEN
    explain_max_texts: int = DEFAULT_EXPLAIN_MAX_TEXTS
    explain_max_words: int = DEFAULT_EXPLAIN_MAX_WORDS
    explain_concurrency: int = DEFAULT_EXPLAIN_CONCURRENCY
    explain_timeout_seconds: float = DEFAULT_EXPLAIN_TIMEOUT_SECONDS
    explain_share: float = DEFAULT_EXPLAIN_SHARE
    payload_logger: PayloadLoggerSettings | None = None

    def __post_init__(self) -> None:
        if (self.bundle is None) == (self.model_repository is None):
            raise ConfigError("give exactly one of --bundle DIR and --model-repository DIR")
        if self.precision is not None and self.variant is not None:
            raise ConfigError("give --variant or --precision, not both")
        if self.variant is not None and self.variant != AUTO and self.variant not in VARIANTS:
            raise ConfigError(
                f"--variant {self.variant!r} names no variant; choose {AUTO} or one of "
                f"{', '.join(VARIANTS)}"
            )
        if not 0 <= self.probe_seconds <= 60:
            raise ConfigError(f"--probe-seconds must be between 0 and 60, got {self.probe_seconds}")
        for name in (
            "max_batch_size",
            "max_body_bytes",
            "inference_batch_size",
            "max_chars_per_token",
            "explain_max_texts",
            "explain_max_words",
            "explain_concurrency",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        if self.intra_op_threads is not None and self.intra_op_threads < 1:
            raise ConfigError("--intra-op-threads must be at least 1")
        if not self.explain_timeout_seconds > 0:
            raise ConfigError(
                f"--explain-timeout-seconds must be above 0, got {self.explain_timeout_seconds}"
            )
        if not 0 <= self.explain_share <= 1:
            raise ConfigError(f"--explain-share must be between 0 and 1, got {self.explain_share}")

    def max_text_chars(self, max_seq_length: int) -> int:
        """Characters kept at each end of a text, for a model keeping `max_seq_length` tokens.

        The tokenizer reads a whole text before it is cut to max_seq_length tokens, so an
        uncut megabyte of text would cost seconds and hundreds of megabytes; cut first to its
        first and last this many characters (`long_text.bound_text`), every text costs at most
        what a text of twice this many characters costs.
        """
        return max_seq_length * self.max_chars_per_token


@dataclass(frozen=True)
class BundleSource:
    """The bundle to serve now: its directory, its version, and what to serve of it.

    Attributes:
        path: The bundle directory.
        version: The version reported.
        precision: The ONNX Runtime model file asked for (`--precision`), or the bundle's
            default file where a variant is measured or named.
        variant: `auto`, a variant's name, or None to serve `precision` unmeasured.
    """

    path: Path
    version: str
    precision: ServePrecision
    variant: str | None = None

    @property
    def requested(self) -> str:
        """What was asked for: the variant (or auto), else the precision."""
        return self.variant or self.precision


def default_model_name(bundle: Path | None) -> str:
    """The served name when --model-name is not given.

    A bundle inside a model repository (`<repo>/<name>/<n>/`) takes the repository's model
    name; any other bundle takes its folder's name; a repository serves `DEFAULT_MODEL_NAME`,
    the name training publishes under by default.
    """
    if bundle is None:
        return DEFAULT_MODEL_NAME
    path = bundle.resolve()
    if _VERSION_DIR.fullmatch(path.name) and path.parent.name:
        return path.parent.name
    return path.name or DEFAULT_MODEL_NAME


def bundle_version(bundle: Path) -> str:
    """A bundle's version: metadata.json's `version` when it has one, else its folder's name."""
    try:
        metadata = json.loads((bundle / METADATA_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        metadata = {}
    recorded = metadata.get("version") if isinstance(metadata, dict) else None
    if isinstance(recorded, str | int) and not isinstance(recorded, bool) and str(recorded):
        return str(recorded)
    return bundle.resolve().name


def resolve_source(settings: ServeSettings) -> BundleSource:
    """The bundle to serve now: the --bundle folder, or the version current.json names.

    Raises:
        ModelNotFoundError: The repository has no published version of the model, or the
            bundle asked for lacks the model file of the precision asked for.
        PublishError: current.json cannot be read.
    """
    if settings.model_repository is not None:
        published = current_version(settings.model_repository, settings.model_name)
        if published is None:
            raise ModelNotFoundError(
                f"model repository {settings.model_repository} has no published version of "
                f"{settings.model_name!r}; publish one (textops run) or pass --model-name"
            )
        path, version = published.path, str(published.version)
    else:
        assert settings.bundle is not None
        path = settings.bundle
        version = settings.model_version or bundle_version(path)
    variant = settings.variant or (AUTO if settings.precision is None else None)
    return BundleSource(path, version, choose_precision(path, settings.precision), variant)


def choose_precision(bundle: Path, asked: ServePrecision | None) -> ServePrecision:
    """The precision asked for, else the bundle's default (`ModelBundle.serving_precision`)."""
    if asked is not None:
        return asked
    return ModelBundle(bundle).serving_precision


def usable_cores() -> int:
    """CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
