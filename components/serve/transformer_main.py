"""Start the Triton transformer: `python -m textops.components.serve.transformer --bundle DIR`.

The command line is KServe's own (`kserve.model_server.parser`: --model_name, --predictor_host,
--predictor_protocol, --http_port, --predictor_request_timeout_seconds, ...) plus the textops
flags; see `build_parser`. KServe's flags that textops hands on also take the project's
spelling, with hyphens (`--model-name`, `--predictor-host`). The server is the predictor's
(same middleware, error answers and repository routes) with `transformer.TritonTransformer`
as its model.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from kserve.errors import ModelNotFound
from kserve.model_server import app
from kserve.predictor_config import PredictorConfig
from kserve.protocol.dataplane import DataPlane

from textops.components.common.errors import ConfigError
from textops.components.serve.dataplane import TextopsDataPlane
from textops.components.serve.middleware import install_http_hooks
from textops.components.serve.repository import BundleRepository
from textops.components.serve.server import (
    TextopsModelServer,
    accept_project_spelling,
    add_request_limit_flags,
    flag_values,
    kserve_argument_parser,
    run_command,
    shared_settings,
)
from textops.components.serve.settings import ServeSettings
from textops.components.serve.transformer import PredictorError, TritonTransformer

logger = logging.getLogger(__name__)

PROG = "python -m textops.components.serve.transformer"

#: KServe's flags of the call to Triton, by their `PredictorConfig` names (which are their
#: own, but for --enable_predictor_health_check's `predictor_health_check`).
PREDICTOR_FLAGS = (
    "predictor_host",
    "predictor_protocol",
    "predictor_use_ssl",
    "predictor_request_timeout_seconds",
    "predictor_request_retries",
)


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """KServe's model server parser extended with the transformer's flags."""
    parser = kserve_argument_parser(
        prog,
        "Tokenize for a textops model.onnx served by Triton, and label its logits "
        "(KServe transformer, V1 and V2 protocols).",
    )
    # Triton speaks V2; gRPC is off unless asked for, since the body limit and the error
    # contract apply to the REST routes.
    parser.set_defaults(model_name=None, enable_grpc=False, predictor_protocol="v2")
    accept_project_spelling(parser, (*PREDICTOR_FLAGS, "enable_predictor_health_check"))
    parser.add_argument(
        "--bundle",
        type=Path,
        required=True,
        help="the model bundle directory: its tokenizer.json, labels.json and metadata.json",
    )
    add_request_limit_flags(
        parser,
        model_version_help="version to report (default: metadata.json's version, else the "
        "folder name)",
        inference_batch_help="texts per Triton request, at most the Triton model's max batch "
        "size (the overlay's --backend-config=default-max-batch-size)",
    )
    return parser


def settings_from_args(args: argparse.Namespace) -> tuple[ServeSettings, PredictorConfig]:
    """The transformer's settings and Triton's address, from parsed arguments.

    Raises:
        ConfigError: A flag is missing or out of range.
    """
    if not args.predictor_host:
        raise ConfigError(
            "--predictor_host HOST[:PORT] is required: the Triton predictor (KServe sets it)"
        )
    if args.predictor_protocol != "v2":
        raise ConfigError(
            f"--predictor_protocol {args.predictor_protocol} is not supported: the transformer "
            "calls Triton over REST with the V2 protocol (--predictor_protocol v2)"
        )
    if args.predictor_request_timeout_seconds < 1:
        raise ConfigError("--predictor_request_timeout_seconds must be at least 1")
    predictor = PredictorConfig(
        **flag_values(args, PREDICTOR_FLAGS),
        predictor_health_check=args.enable_predictor_health_check,
    )
    return ServeSettings(**shared_settings(args)), predictor


class TransformerRepository(BundleRepository):
    """The transformer's one model; the repository load route reads the bundle's files again."""

    def __init__(self, settings: ServeSettings, predictor: PredictorConfig) -> None:
        super().__init__(settings)
        self.predictor = predictor

    async def load(self, name: str) -> bool:
        """Read the bundle's files again (or bring back an unloaded transformer).

        Raises:
            ModelNotFound: `name` is not the model this transformer serves.
            ModelNotFoundError: The files cannot be read; the ones read before keep serving.
        """
        if name != self.settings.model_name:
            raise ModelNotFound(name)
        model = self.get_model(name)
        if not isinstance(model, TritonTransformer):
            model = TritonTransformer(self.settings, self.predictor)
            await model.reload()
            self.update(model)
        else:
            await model.reload()
        return True


async def _predictor_failed(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PredictorError)
    logger.warning("predictor call failed: status=%d error=%s", exc.status_code, exc)
    return JSONResponse(status_code=exc.status_code, content={"error": str(exc)})


def install_transformer_hooks(
    fastapi_app: FastAPI, settings: ServeSettings, dataplane: DataPlane
) -> None:
    """The predictor's limits, error answers and metrics, plus the answers to Triton failures."""
    install_http_hooks(fastapi_app, settings, dataplane)
    if not getattr(fastapi_app.state, "textops_transformer_hooks", False):
        fastapi_app.state.textops_transformer_hooks = True
        fastapi_app.add_exception_handler(PredictorError, _predictor_failed)


class TransformerDataPlane(TextopsDataPlane):
    """The predictor's data plane; every `--workers` process also answers Triton failures."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        install_transformer_hooks(app, self.bundles.settings, self)


class TransformerServer(TextopsModelServer):
    """The predictor's model server with the transformer's data plane."""

    dataplane_type = TransformerDataPlane


def serve(argv: Sequence[str] | None = None, prog: str = PROG) -> None:
    """Parse the command line, read the bundle and serve until stopped.

    Raises:
        TextopsError: The bundle cannot be read, or a flag is invalid.
    """
    args = build_parser(prog).parse_args(argv)
    settings, predictor = settings_from_args(args)
    repository = TransformerRepository(settings, predictor)
    model = TritonTransformer(settings, predictor)
    model.load()
    server = TransformerServer(repository, args, predictor)
    install_transformer_hooks(app, settings, server.dataplane)
    logger.info(
        "transformer for %s version %s on port %d: Triton at %s, %d texts per call",
        settings.model_name,
        model.served_version,
        args.http_port,
        predictor.predictor_base_url,
        settings.inference_batch_size,
    )
    server.start([model])


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Entry point: serve, or print a textops error and return 2."""
    return run_command(serve, argv, prog)
