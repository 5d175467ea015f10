"""Start the predictor: `python -m textops.components.serve --bundle DIR` (or `textops serve`).

The command line is KServe's own (`kserve.model_server.parser`: --http_port, --workers,
--model_name, ...) plus the textops flags; see `build_parser`.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kserve import ModelServer
from kserve.model_server import app
from kserve.model_server import parser as kserve_parser

from textops.components.common.errors import TextopsError
from textops.components.common.logs import configure_logging
from textops.components.serve.dataplane import TextopsDataPlane
from textops.components.serve.middleware import install_http_hooks
from textops.components.serve.model import TextClassifierModel
from textops.components.serve.repository import BundleRepository, TextopsRepositoryExtension
from textops.components.serve.settings import (
    DEFAULT_EXPLAIN_CONCURRENCY,
    DEFAULT_EXPLAIN_MAX_TEXTS,
    DEFAULT_EXPLAIN_MAX_WORDS,
    DEFAULT_EXPLAIN_SHARE,
    DEFAULT_EXPLAIN_TIMEOUT_SECONDS,
    DEFAULT_INFERENCE_BATCH_SIZE,
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CHARS_PER_TOKEN,
    DEFAULT_PAYLOAD_QUEUE_SIZE,
    PayloadLoggerSettings,
    ServeSettings,
    default_model_name,
    usable_cores,
)

logger = logging.getLogger(__name__)

PROG = "python -m textops.components.serve"


def kserve_argument_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A parser with KServe's model server flags, to which a server adds its own."""
    # A copy, so that changing defaults here leaves KServe's own parser as it was.
    return argparse.ArgumentParser(
        prog=prog,
        description=description,
        parents=[copy.deepcopy(kserve_parser)],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )


def add_request_limit_flags(
    parser: argparse.ArgumentParser, *, model_version_help: str, inference_batch_help: str
) -> None:
    """Add the flags the predictor and the transformer share: the version and the limits.

    Args:
        parser: The server's parser.
        model_version_help: The help text of --model-version.
        inference_batch_help: The help text of --inference-batch-size (what one call is).
    """
    parser.add_argument("--model-version", help=model_version_help)
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=DEFAULT_MAX_BATCH_SIZE,
        help="texts one request may hold; more is answered 413",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        help="bytes one request body may hold; more is answered 413",
    )
    parser.add_argument(
        "--inference-batch-size",
        type=int,
        default=DEFAULT_INFERENCE_BATCH_SIZE,
        help=inference_batch_help,
    )
    parser.add_argument(
        "--max-chars-per-token",
        type=int,
        default=DEFAULT_MAX_CHARS_PER_TOKEN,
        help="each text is cut to the model's max_seq_length times this many characters "
        "before it is tokenized, so that a text's cost is bounded whatever its length; "
        "ordinary text needs 4 to 8 characters a token",
    )


def request_limit_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The `ServeSettings` fields of the flags `add_request_limit_flags` adds."""
    return {
        "model_version": args.model_version,
        "max_batch_size": args.max_batch_size,
        "max_body_bytes": args.max_body_bytes,
        "inference_batch_size": args.inference_batch_size,
        "max_chars_per_token": args.max_chars_per_token,
    }


def _add_explain_flags(parser: argparse.ArgumentParser) -> None:
    """Add the limits of V1 `:explain` (per-word importance by occlusion)."""
    group = parser.add_argument_group("explain (V1 :explain, per-word importance)")
    group.add_argument(
        "--explain-max-texts",
        type=int,
        default=DEFAULT_EXPLAIN_MAX_TEXTS,
        help="texts one explain request may hold (and no more than --max-batch-size); more "
        "is answered 413",
    )
    group.add_argument(
        "--explain-max-words",
        type=int,
        default=DEFAULT_EXPLAIN_MAX_WORDS,
        help="words scored per text, its first ones; each costs one classification",
    )
    group.add_argument(
        "--explain-concurrency",
        type=int,
        default=DEFAULT_EXPLAIN_CONCURRENCY,
        help="explain requests one serving process works on at once; more are answered 503",
    )
    group.add_argument(
        "--explain-timeout-seconds",
        type=float,
        default=DEFAULT_EXPLAIN_TIMEOUT_SECONDS,
        help="time an explain request may take, waiting for the model included (predictions "
        "go first); then it is stopped and answered 503",
    )
    group.add_argument(
        "--explain-share",
        type=float,
        default=DEFAULT_EXPLAIN_SHARE,
        help="share of the model's time explanations get while predictions keep it busy (0 "
        "to 1); a prediction waits for an explanation's call only in that share of the time, "
        "and 0 leaves explanations only the idle time, where they may never finish",
    )


def _explain_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The `ServeSettings` fields of the flags `_add_explain_flags` adds."""
    return {
        "explain_max_texts": args.explain_max_texts,
        "explain_max_words": args.explain_max_words,
        "explain_concurrency": args.explain_concurrency,
        "explain_timeout_seconds": args.explain_timeout_seconds,
        "explain_share": args.explain_share,
    }


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """KServe's model server parser extended with the textops flags."""
    parser = kserve_argument_parser(
        prog, "Serve a textops model bundle with KServe (V1 and V2 protocols)."
    )
    # --model_name defaults to the bundle's name; gRPC is off unless asked for, since the
    # body limit, the error contract and the payload logger apply to the REST routes.
    parser.set_defaults(model_name=None, enable_grpc=False)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--bundle", type=Path, help="the model bundle directory to serve")
    source.add_argument(
        "--model-repository",
        type=Path,
        help="a local model repository: serve the version <repo>/<model_name>/current.json "
        "names; the load route swaps to the version it names then",
    )
    add_request_limit_flags(
        parser,
        model_version_help="version to report in --bundle mode (default: metadata.json's "
        "version, else the folder name)",
        inference_batch_help="texts per ONNX Runtime call; concurrent requests are coalesced "
        "up to this",
    )
    parser.add_argument(
        "--precision",
        choices=("fp32", "int8", "fp16"),
        help="model file to run (default: int8 when the bundle has model.int8.onnx, else "
        "fp32); fp16 runs on CUDA only, after a check against fp32 there, and falls back to "
        "fp32 with a warning where it cannot",
    )
    parser.add_argument(
        "--intra-op-threads",
        type=int,
        help="ONNX Runtime threads per call (default: usable cores / --workers)",
    )
    parser.add_argument(
        "--intra-op-spinning",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="let idle ONNX Runtime threads spin-wait for the next call (faster lone calls, "
        "but the spinning takes CPU from the event loop and concurrent requests)",
    )
    _add_explain_flags(parser)
    _add_payload_logger_flags(parser)
    return parser


def _add_payload_logger_flags(parser: argparse.ArgumentParser) -> None:
    logging_group = parser.add_argument_group("payload logger (KServe agent CloudEvents)")
    logging_group.add_argument(
        "--payload-logger-url", help="send request and response CloudEvents to this URL"
    )
    logging_group.add_argument(
        "--payload-logger-namespace",
        default=os.environ.get("POD_NAMESPACE", "default"),
        help="Ce-Namespace of the events",
    )
    logging_group.add_argument(
        "--payload-logger-endpoint", default="default", help="Ce-Endpoint of the events"
    )
    logging_group.add_argument(
        "--payload-logger-queue-size",
        type=int,
        default=DEFAULT_PAYLOAD_QUEUE_SIZE,
        help="requests whose CloudEvents may wait to be sent, each with room for its request "
        "and its response; a request arriving when it is full is dropped with its response "
        "and counted in textops_payload_events_dropped_total{reason=queue_full}",
    )


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    """The `ServeSettings` of parsed arguments.

    Raises:
        ConfigError: A flag's value is out of range, or both or neither source is given.
    """
    name = args.model_name or default_model_name(args.bundle)
    threads = args.intra_op_threads or max(1, usable_cores() // max(1, args.workers))
    payload_logger = None
    if args.payload_logger_url:
        payload_logger = PayloadLoggerSettings(
            url=args.payload_logger_url,
            source=f"http://localhost:{args.http_port}/",
            namespace=args.payload_logger_namespace,
            endpoint=args.payload_logger_endpoint,
            queue_size=args.payload_logger_queue_size,
        )
    return ServeSettings(
        model_name=name,
        bundle=args.bundle,
        model_repository=args.model_repository,
        precision=args.precision,
        intra_op_threads=threads,
        intra_op_spinning=args.intra_op_spinning,
        payload_logger=payload_logger,
        **request_limit_settings(args),
        **_explain_settings(args),
    )


class TextopsModelServer(ModelServer):
    """KServe's `ModelServer` with the predictor's data plane and repository extension."""

    def __init__(self, repository: BundleRepository, args: argparse.Namespace) -> None:
        super().__init__(
            http_port=args.http_port,
            grpc_port=args.grpc_port,
            workers=args.workers,
            max_threads=args.max_threads,
            max_asyncio_workers=args.max_asyncio_workers,
            registered_models=repository,
            enable_grpc=args.enable_grpc,
            enable_docs_url=args.enable_docs_url,
            enable_latency_logging=args.enable_latency_logging,
            access_log_format=args.access_log_format,
            event_loop=args.event_loop,
            timeout_keep_alive=args.timeout_keep_alive,
            ssl_certfile=args.ssl_certfile,
            ssl_keyfile=args.ssl_keyfile,
        )
        self.dataplane = TextopsDataPlane(model_registry=repository)
        self.model_repository_extension = TextopsRepositoryExtension(model_registry=repository)


def serve(argv: Sequence[str] | None = None, prog: str = PROG) -> None:
    """Parse the command line, load the bundle and serve until stopped.

    Raises:
        TextopsError: The bundle or repository cannot be served, or a flag is invalid.
    """
    args = build_parser(prog).parse_args(argv)
    settings = settings_from_args(args)
    repository = BundleRepository(settings)
    model = TextClassifierModel(settings)
    model.load()
    server = TextopsModelServer(repository, args)
    install_http_hooks(app, settings, server.dataplane)
    logger.info(
        "serving %s version %s on port %d (workers=%d, threads=%s)",
        settings.model_name,
        model.runtime.version,
        args.http_port,
        args.workers,
        settings.intra_op_threads,
    )
    server.start([model])


def run_command(
    serve_fn: Callable[[Sequence[str] | None, str], None],
    argv: Sequence[str] | None = None,
    prog: str = PROG,
) -> int:
    """Configure logging and serve with `serve_fn`, or print a textops error and return 2."""
    configure_logging()
    try:
        serve_fn(argv, prog)
    except TextopsError as e:
        print(f"textops: error: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Entry point: serve, or print a textops error and return 2."""
    return run_command(serve, argv, prog)
