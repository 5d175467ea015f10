"""Start the predictor: `python -m textops.components.serve --bundle DIR` (or `textops serve`).

The command line is KServe's own (`kserve.model_server.parser`: --http_port, --workers,
--model_name, ...) plus the textops flags; see `build_parser`. KServe's flags that textops
hands on also take the project's spelling, with hyphens (`--model-name`, `--http-port`).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kserve import ModelServer
from kserve.model_server import app
from kserve.model_server import parser as kserve_parser
from kserve.predictor_config import PredictorConfig

from textops.components.common.engines import AUTO, VARIANTS
from textops.components.common.errors import TextopsError
from textops.components.common.logs import configure_logging
from textops.components.serve.dataplane import TextopsDataPlane
from textops.components.serve.middleware import install_http_hooks
from textops.components.serve.model import TextClassifierModel
from textops.components.serve.repository import BundleRepository, TextopsRepositoryExtension
from textops.components.serve.settings import (
    CHECK_ROWS,
    DEFAULT_PROBE_SECONDS,
    PayloadLoggerSettings,
    ServeSettings,
    default_model_name,
    usable_cores,
)

logger = logging.getLogger(__name__)

PROG = "python -m textops.components.serve"

#: KServe's flags whose values `TextopsModelServer` hands to `ModelServer`, under their names.
MODEL_SERVER_FLAGS = (
    "http_port",
    "grpc_port",
    "workers",
    "max_threads",
    "max_asyncio_workers",
    "enable_grpc",
    "enable_docs_url",
    "enable_latency_logging",
    "access_log_format",
    "event_loop",
    "timeout_keep_alive",
    "ssl_certfile",
    "ssl_keyfile",
)
#: KServe's flags that also take the project's spelling: the ones textops reads from its own
#: parse. KServe reads the others (--enable_docs_url, --configure_logging, --log_config_file,
#: the --grpc_max_* lengths) from sys.argv itself when it is imported, where a hyphenated
#: spelling would be ignored without a word.
PROJECT_SPELT_FLAGS = (
    "model_name",
    *(name for name in MODEL_SERVER_FLAGS if name != "enable_docs_url"),
)

#: The request limits the predictor and the transformer share: `ServeSettings` fields, each
#: with its flag's help text (the transformer says what its --inference-batch-size is).
REQUEST_LIMIT_FLAGS = {
    "max_batch_size": "texts one request may hold; more is answered 413",
    "max_body_bytes": "bytes one request body may hold; more is answered 413",
    "inference_batch_size": "texts per ONNX Runtime call; concurrent requests are coalesced "
    "up to this",
    "max_chars_per_token": "each text is cut to its first and last max_seq_length times this "
    "many characters before it is tokenized, so that a text's cost is bounded whatever its "
    "length; ordinary text needs 4 to 8 characters a token",
}
#: The limits of V1 `:explain` (per-word importance by occlusion), as `REQUEST_LIMIT_FLAGS`.
EXPLAIN_FLAGS = {
    "explain_max_texts": "texts one explain request may hold (and no more than "
    "--max-batch-size); more is answered 413",
    "explain_max_words": "words scored per text, its first ones; each costs one classification",
    "explain_concurrency": "explain requests one serving process works on at once; more are "
    "answered 503",
    "explain_timeout_seconds": "time an explain request may take, waiting for the model "
    "included (predictions go first); then it is stopped and answered 503",
    "explain_share": "share of the model's time explanations get while predictions keep it "
    "busy (0 to 1); a prediction waits for an explanation's call only in that share of the "
    "time, and 0 leaves explanations only the idle time, where they may never finish",
}


def kserve_argument_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A parser with KServe's model server flags, to which a server adds its own."""
    # A copy, so that changing defaults and spellings here leaves KServe's own parser as it was.
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        parents=[copy.deepcopy(kserve_parser)],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    accept_project_spelling(parser, PROJECT_SPELT_FLAGS)
    return parser


def accept_project_spelling(parser: argparse.ArgumentParser, dests: Iterable[str]) -> None:
    """Let KServe's flags of `dests` take the project's spelling too: `--model-name` and more.

    The hyphenated spelling becomes an option string of KServe's own action, named first so
    that the usage line shows it: both spellings set one value, and `--help` lists both.
    """
    wanted = set(dests)
    # argparse has no public way to give an existing argument another name.
    for action in parser._actions:
        if action.dest not in wanted:
            continue
        for option in list(action.option_strings):
            spelling = option.replace("_", "-")
            if spelling != option and spelling not in parser._option_string_actions:
                action.option_strings = [spelling, *action.option_strings]
                parser._option_string_actions[spelling] = action


def flag_values(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    """The parsed values of the flags whose destinations are `names`, by name."""
    return {name: getattr(args, name) for name in names}


def _add_settings_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, flags: Mapping[str, str]
) -> None:
    """Add a flag for each `ServeSettings` field in `flags`, with the field's type and default.

    Args:
        parser: The parser or argument group to add them to.
        flags: Field names (`max_batch_size` is `--max-batch-size`) and their help texts.
    """
    defaults = _field_defaults(ServeSettings)
    for name, help_text in flags.items():
        default = defaults[name]
        parser.add_argument(
            "--" + name.replace("_", "-"), type=type(default), default=default, help=help_text
        )


def add_request_limit_flags(
    parser: argparse.ArgumentParser,
    *,
    model_version_help: str,
    inference_batch_help: str | None = None,
) -> None:
    """Add the flags the predictor and the transformer share: the version and the limits.

    Args:
        parser: The server's parser.
        model_version_help: The help text of --model-version.
        inference_batch_help: The help text of --inference-batch-size, where one call is not
            the predictor's ONNX Runtime call.
    """
    parser.add_argument("--model-version", help=model_version_help)
    helps = dict(REQUEST_LIMIT_FLAGS)
    if inference_batch_help is not None:
        helps["inference_batch_size"] = inference_batch_help
    _add_settings_flags(parser, helps)


def shared_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The `ServeSettings` fields of the flags the predictor and the transformer share.

    The served name (--model-name, else the bundle's; see `default_model_name`), the version
    and the flags `add_request_limit_flags` adds.
    """
    return {
        "model_name": args.model_name or default_model_name(args.bundle),
        "bundle": args.bundle,
        "model_version": args.model_version,
        **flag_values(args, REQUEST_LIMIT_FLAGS),
    }


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """KServe's model server parser extended with the textops flags."""
    parser = kserve_argument_parser(
        prog, "Serve a textops model bundle with KServe (V1 and V2 protocols)."
    )
    # --model-name defaults to the bundle's name; gRPC is off unless asked for, since the
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
    )
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument(
        "--variant",
        choices=(AUTO, *VARIANTS),
        help="what to serve: auto (default) measures the bundle's CPU variants on this host "
        "(ONNX Runtime and OpenVINO, fp32, INT8, and bf16 where the CPU has it) and serves the "
        "fastest that passes its check here; a name serves that variant (an OpenVINO one "
        "after the same check, else fp32 with a warning)",
    )
    choice.add_argument(
        "--precision",
        choices=("fp32", "int8", "fp16"),
        help="run this ONNX Runtime model file, without measuring: fp16 runs on CUDA only, "
        "after a check against fp32 there, and falls back to fp32 with a warning where it "
        "cannot (the GPU image asks for fp16)",
    )
    parser.add_argument(
        "--probe-seconds",
        type=float,
        default=DEFAULT_PROBE_SECONDS,
        help="seconds --variant auto spends timing each variant on one text at a time, after "
        f"judging and timing them on up to {CHECK_ROWS} reference rows at the full batch",
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
    _add_settings_flags(
        parser.add_argument_group("explain (V1 :explain, per-word importance)"), EXPLAIN_FLAGS
    )
    _add_payload_logger_flags(parser)
    return parser


def _add_payload_logger_flags(parser: argparse.ArgumentParser) -> None:
    """Add where and how the payload logger sends; the defaults are `PayloadLoggerSettings`'."""
    defaults = _field_defaults(PayloadLoggerSettings)
    logging_group = parser.add_argument_group("payload logger (KServe agent CloudEvents)")
    logging_group.add_argument(
        "--payload-logger-url", help="send request and response CloudEvents to this URL"
    )
    logging_group.add_argument(
        "--payload-logger-namespace",
        default=os.environ.get("POD_NAMESPACE", defaults["namespace"]),
        help="Ce-Namespace of the events",
    )
    logging_group.add_argument(
        "--payload-logger-endpoint", default=defaults["endpoint"], help="Ce-Endpoint of the events"
    )
    logging_group.add_argument(
        "--payload-logger-queue-size",
        type=int,
        default=defaults["queue_size"],
        help="requests whose CloudEvents may wait to be sent, each with room for its request "
        "and its response; a request arriving when it is full is dropped with its response "
        "and counted in textops_payload_events_dropped_total{reason=queue_full}",
    )


def _field_defaults(settings_type: type) -> dict[str, Any]:
    """The default of each field of a settings dataclass that has one, by field name."""
    return {
        field.name: field.default
        for field in dataclasses.fields(settings_type)
        if field.default is not dataclasses.MISSING
    }


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    """The `ServeSettings` of parsed arguments.

    Raises:
        ConfigError: A flag's value is out of range, or both or neither source is given.
    """
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
        model_repository=args.model_repository,
        precision=args.precision,
        variant=args.variant,
        probe_seconds=args.probe_seconds,
        intra_op_threads=threads,
        intra_op_spinning=args.intra_op_spinning,
        payload_logger=payload_logger,
        **shared_settings(args),
        **flag_values(args, EXPLAIN_FLAGS),
    )


class TextopsModelServer(ModelServer):
    """KServe's `ModelServer` with a textops data plane and the repository extension.

    Attributes:
        dataplane_type: The data plane every server process answers with.
    """

    dataplane_type: type[TextopsDataPlane] = TextopsDataPlane

    def __init__(
        self,
        repository: BundleRepository,
        args: argparse.Namespace,
        predictor: PredictorConfig | None = None,
    ) -> None:
        """Set the server up from KServe's parsed flags.

        Args:
            repository: The models served.
            args: The parsed command line (`MODEL_SERVER_FLAGS` are read).
            predictor: The predictor a transformer calls; None for the predictor itself.
        """
        # KServe's data plane reads the predictor's address (--enable_predictor_health_check)
        # from its context, which ModelServer fills from sys.argv unless it is given one.
        super().__init__(
            registered_models=repository,
            predictor_config=predictor,
            **flag_values(args, MODEL_SERVER_FLAGS),
        )
        self.dataplane = self.dataplane_type(model_registry=repository)
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
