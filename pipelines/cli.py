"""The `textops` command: `run` the training pipeline locally, `compile` it for Kubeflow.

The other commands (serve, collect, drift, submit, schedule, ...) live beside the code they
drive: each module in `COMMAND_MODULES` has `register(commands)`, which adds its sub-parser with
`set_defaults(handler=...)`, a function of the parsed arguments returning the exit status. Those
modules import only light things at top level (the libraries a command needs load when it
runs), so `textops --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from textops.components.common.config import TrainingConfig, load_config
from textops.components.common.errors import ConfigError, TextopsError
from textops.components.monitor import collector_cli
from textops.components.serve import command as serve_cli
from textops.pipelines import drift_cli, feedback_cli, kubeflow_cli, models_cli
from textops.pipelines.config_flags import add_config_flags

#: Settings too structured for a flag: they are given in the --config file.
CONFIG_FILE_ONLY = frozenset(
    name
    for name, field in TrainingConfig.model_fields.items()
    if typing.get_origin(field.annotation) is list and typing.get_args(field.annotation) != (str,)
)

#: Exit status of a run whose model the evaluation gate held back (0: published, 1: a step
#: failed, 2: bad input or configuration).
EXIT_NOT_DEPLOYED = 3

#: Modules that register more sub-commands (see the module docstring), in `--help`'s order.
COMMAND_MODULES: tuple[ModuleType, ...] = (
    collector_cli,
    kubeflow_cli,
    drift_cli,
    feedback_cli,
    serve_cli,
    models_cli,
)

#: Where `textops compile` writes by default: the checked-in copies in this package.
COMPILED_PIPELINE = Path(__file__).resolve().parent / "compiled" / "training.yaml"
COMPILED_MONITORING = Path(__file__).resolve().parent / "compiled" / "monitoring.yaml"


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainingConfig field but those set in the config file only."""
    add_config_flags(
        parser, [name for name in TrainingConfig.model_fields if name not in CONFIG_FILE_ONLY]
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="textops",
        description="Train, validate, export and publish transformer text classifiers.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run the training pipeline on this machine (kfp.local)",
        description="Run validate -> preprocess -> train -> evaluate -> export -> deploy "
        "through kfp.local and publish the model bundle to the local model repository.",
    )
    run.add_argument("--config", type=Path, help="YAML file of settings; flags override it")
    _add_config_flags(run)
    run.set_defaults(handler=run_command)

    loop = commands.add_parser(
        "loop",
        help="the whole loop on this machine: train, serve, replay traffic, detect drift, "
        "retrain (what `make run` runs)",
        description="Run the training pipeline, start the payload collector and the KServe "
        "predictor, replay in-distribution and shifted traffic through it, run the drift job "
        "on each window, retrain when drift is found, print where every report is, and stop "
        "the processes it started.",
    )
    loop.add_argument("--config", type=Path, help="YAML file of settings; flags override it")
    loop.add_argument(
        "--traffic-rows",
        type=int,
        default=300,
        metavar="N",
        help="in-distribution texts replayed first (default: 300)",
    )
    loop.add_argument(
        "--shifted-rows",
        type=int,
        default=1500,
        metavar="N",
        help="tweets replayed next, the shifted traffic: two thirds have their labels posted "
        "and teach the retrained version, a third is held out to score both versions "
        "(default: 1500)",
    )
    _add_config_flags(loop)
    loop.set_defaults(handler=loop_command)

    compile_ = commands.add_parser(
        "compile",
        help="compile the training and monitoring pipelines to Kubeflow Pipelines IR YAML",
    )
    compile_.set_defaults(handler=compile_command)
    compile_.add_argument(
        "--output", type=Path, default=COMPILED_PIPELINE, help=f"default: {COMPILED_PIPELINE}"
    )
    compile_.add_argument(
        "--monitoring-output",
        type=Path,
        default=COMPILED_MONITORING,
        help=f"default: {COMPILED_MONITORING}",
    )
    for module in COMMAND_MODULES:
        module.register(commands)
    return parser


def run_command(args: argparse.Namespace) -> int:
    from textops.pipelines.local import run_training_locally, score_lines

    overrides = {name: getattr(args, name, None) for name in TrainingConfig.model_fields}
    config = load_config(args.config, overrides)
    result = run_training_locally(config)
    scores = {k: round(v, 4) for k, v in result.metrics.items() if isinstance(v, float)}
    verdict = (
        f"  published bundle:   {result.published_path}"
        if result.deployed
        else f"  not published:      {result.reasons}\n  exported bundle:    {result.bundle_path}"
    )
    print(
        "\n".join(
            [
                "",
                "textops: training pipeline finished",
                verdict,
                f"  gate:               {result.reasons}",
                *score_lines(result.metrics),
                f"  test metrics:       {json.dumps(scores)}",
                f"  metrics artifact:   {result.metrics_path}",
                f"  validation report:  {result.validation_report}",
                f"  evaluation report:  {result.evaluation_report}",
            ]
        )
    )
    return 0 if result.deployed else EXIT_NOT_DEPLOYED


def loop_command(args: argparse.Namespace) -> int:
    from textops.pipelines.loop import run_loop, summary_lines

    overrides = {name: getattr(args, name, None) for name in TrainingConfig.model_fields}
    config = load_config(args.config, overrides)
    for flag, value in (
        ("--traffic-rows", args.traffic_rows),
        ("--shifted-rows", args.shifted_rows),
    ):
        if value < 1:
            raise ConfigError(f"{flag} must be at least 1; got {value}")
    result = run_loop(config, rows=args.traffic_rows, shifted_rows=args.shifted_rows)
    print("\n".join(summary_lines(result, config)))
    return 0


def compile_command(args: argparse.Namespace) -> int:
    from textops.pipelines.compile import compile_monitoring_pipeline, compile_training_pipeline

    # The monitoring pipeline holds the training pipeline: both are written together.
    path = compile_training_pipeline(args.output)
    monitoring = compile_monitoring_pipeline(args.monitoring_output)
    print(f"textops: compiled the training pipeline to {path}")
    print(f"textops: compiled the monitoring pipeline to {monitoring}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `textops` console script."""
    from textops.pipelines.local import PipelineFailedError

    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except PipelineFailedError as e:
        print(f"textops: error: {e}", file=sys.stderr)
        return 1
    except TextopsError as e:
        print(f"textops: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
