"""`textops submit` and `textops schedule`: the compiled pipelines on Kubeflow Pipelines.

The work is done in `kubeflow.py` (uploads, runs) and `schedules.py` (recurring runs); this
module reads the command line. Connection: `--kubeflow-host` (or $KF_PIPELINES_ENDPOINT),
`--namespace` for a multi-user Kubeflow, a bearer token from $KF_PIPELINES_TOKEN.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from textops.components.common.errors import ConfigError
from textops.pipelines.kubeflow import (
    DEFAULT_EXPERIMENT,
    ENDPOINT_ENV,
    HOST_FLAG,
    PIPELINE_PACKAGES,
    TOKEN_ENV,
    TRAINING_PIPELINE,
    PipelinePackage,
    connect,
    resolve_host,
    submit_pipeline_run,
)
from textops.pipelines.schedules import (
    SCHEDULES,
    create_or_replace_schedule,
    delete_schedule,
    list_schedules,
    set_schedule_enabled,
    validate_cron,
)


def parse_param(text: str) -> tuple[str, Any]:
    """`NAME=VALUE` -> (NAME, VALUE), VALUE read as JSON where it is JSON, else as text."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        parsed: Any = json.loads(value)
    except ValueError:
        parsed = value
    return name.strip(), parsed


def add_connection_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, unset: str = ""
) -> None:
    """`--kubeflow-host`, `--namespace` and `--experiment`: where a command reaches Kubeflow
    Pipelines (submit, schedule, and drift for its retraining).

    Args:
        parser: The parser or argument group that gets the flags.
        unset: What the command does when neither the flag nor $KF_PIPELINES_ENDPOINT is set,
            for the help; empty: nothing to say (the command needs an address).
    """
    parser.add_argument(
        HOST_FLAG,
        metavar="URL",
        help=f"Kubeflow Pipelines API URL (default: ${ENDPOINT_ENV}{unset}); a bearer token "
        f"is read from ${TOKEN_ENV}",
    )
    parser.add_argument(
        "--namespace", help="Kubeflow profile namespace (multi-user Kubeflow); default: none"
    )
    parser.add_argument(
        "--experiment",
        default=DEFAULT_EXPERIMENT,
        help=f"experiment to run in (default: {DEFAULT_EXPERIMENT})",
    )


def add_arguments_flags(parser: argparse.ArgumentParser) -> None:
    """`--config`, `--param` and `--service-account`: what a run is given."""
    parser.add_argument(
        "--config",
        type=Path,
        help="training settings, the YAML file of `textops run`; the monitoring pipeline "
        "retrains with them",
    )
    parser.add_argument(
        "--param",
        type=parse_param,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a pipeline parameter (repeatable; VALUE is JSON or text); wins over --config",
    )
    parser.add_argument(
        "--service-account",
        help="Kubernetes service account the run's pods use (default: Kubeflow Pipelines' "
        "own, e.g. pipeline-runner); manifests/pipeline-rbac grants it what the steps need",
    )


def pipeline_arguments_for(
    package: PipelinePackage, config: Path | None, params: list[tuple[str, Any]]
) -> dict[str, Any]:
    """A run's arguments: the training settings, then `params` over them.

    The training pipeline gets every setting (from `config`, else the defaults). Another
    pipeline gets the settings it shares parameters with (the monitoring pipeline retrains
    with them), only when `config` is given; without, its own defaults stand.

    Raises:
        ConfigError: `config` is invalid, or the pipeline takes none of its settings.
    """
    arguments: dict[str, Any] = {}
    if package.name == TRAINING_PIPELINE or config is not None:
        from textops.components.common.config import load_config
        from textops.pipelines.training import pipeline_arguments

        settings = pipeline_arguments(load_config(config))
        if package.name != TRAINING_PIPELINE:
            settings = {k: v for k, v in settings.items() if k in package.parameters}
            if not settings:
                raise ConfigError(
                    f"--config holds training settings, and the {package.name} pipeline takes "
                    "none of them; give its parameters with --param NAME=VALUE"
                )
        arguments.update(settings)
    arguments.update(params)
    package.check_arguments(arguments)
    return arguments


def package_path(pipeline: str, package: Path | None) -> Path:
    """The compiled package to upload: `package`, else the checked-in one of `pipeline`."""
    return package if package is not None else PIPELINE_PACKAGES[pipeline]


def add_package_flag(parser: argparse.ArgumentParser) -> None:
    """`--package`: the compiled pipeline to upload instead of the checked-in one."""
    parser.add_argument(
        "--package", type=Path, help="compiled pipeline YAML (default: the checked-in one)"
    )


def submit_command(args: argparse.Namespace) -> int:
    """`textops submit`: upload the compiled pipeline and start a run."""
    host = resolve_host(args.kubeflow_host)
    compiled = PipelinePackage.read(package_path(args.pipeline, args.package))
    arguments = pipeline_arguments_for(compiled, args.config, args.param)
    submitted = submit_pipeline_run(
        host,
        compiled,
        arguments=arguments,
        experiment=args.experiment,
        namespace=args.namespace,
        service_account=args.service_account,
    )
    version = submitted.version
    print(f"textops: started run {submitted.run_id} of {compiled.name}")
    print(
        f"  pipeline version:  {version.version_name} "
        f"({'uploaded' if version.uploaded else 'unchanged, reused'})"
    )
    print(f"  experiment:        {args.experiment}")
    print(f"  details:           {host.rstrip('/')}/#/runs/details/{submitted.run_id}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add `textops submit` and `textops schedule`."""
    submit = commands.add_parser(
        "submit",
        help="upload a compiled pipeline to Kubeflow Pipelines and start a run",
        description="Upload the compiled pipeline (a new version when it changed since the "
        "last upload) and start a run of it in the experiment.",
    )
    add_connection_flags(submit)
    submit.add_argument(
        "--pipeline",
        choices=sorted(PIPELINE_PACKAGES),
        default="training",
        help="which pipeline (default: training)",
    )
    add_package_flag(submit)
    add_arguments_flags(submit)
    submit.set_defaults(handler=submit_command)
    register_schedule(commands)


def create_command(args: argparse.Namespace) -> int:
    """`textops schedule create [NAME ...]`."""
    host = resolve_host(args.kubeflow_host)
    names = args.names or list(SCHEDULES)
    unknown = [name for name in names if name not in SCHEDULES]
    if unknown:
        raise ConfigError(f"no schedule {', '.join(unknown)}; choose from {', '.join(SCHEDULES)}")
    if (args.cron or args.package) and len(names) != 1:
        raise ConfigError("--cron and --package apply to one schedule: name it")
    if args.cron:
        validate_cron(args.cron)
    plans = []
    unused = {name for name, _ in args.param}
    for name in names:
        schedule = SCHEDULES[name]
        package = PipelinePackage.read(args.package or PIPELINE_PACKAGES[schedule.pipeline])
        # With several schedules, each gets the --params its pipeline takes.
        params = [p for p in args.param if len(names) == 1 or p[0] in package.parameters]
        unused -= {name for name, _ in params}
        plans.append((schedule, package, pipeline_arguments_for(package, args.config, params)))
    if unused:
        raise ConfigError(
            f"{', '.join(sorted(unused))}: a parameter of none of the pipelines scheduled "
            f"({', '.join(package.name for _, package, _ in plans)})"
        )
    client = connect(host, namespace=args.namespace)
    for schedule, package, arguments in plans:
        result = create_or_replace_schedule(
            client,
            schedule,
            package,
            arguments,
            experiment=args.experiment,
            host=host,
            cron=args.cron,
            service_account=args.service_account,
        )
        state = "" if result.enabled else ", paused"
        print(
            f"textops: {result.display_name} {result.action} ({result.cron}, "
            f"{result.version_name}{state}) id {result.recurring_run_id}"
        )
    return 0


def list_command(args: argparse.Namespace) -> int:
    """`textops schedule list`."""
    host = resolve_host(args.kubeflow_host)
    client = connect(host, namespace=args.namespace)
    schedules = list_schedules(client, experiment=args.experiment, host=host)
    if not schedules:
        print(f"textops: no recurring runs in experiment {args.experiment}")
        return 0
    print(f"{'NAME':<28} {'STATUS':<8} {'CRON':<16} ID")
    for s in schedules:
        status = "enabled" if s.enabled else "paused"
        print(f"{s.display_name:<28} {status:<8} {s.cron:<16} {s.recurring_run_id}")
    return 0


def _act_command(args: argparse.Namespace) -> int:
    host = resolve_host(args.kubeflow_host)
    client = connect(host, namespace=args.namespace)
    if args.schedule_action == "delete":
        done = delete_schedule(client, args.name, experiment=args.experiment, host=host)
    else:
        enabled = args.schedule_action == "resume"
        done = set_schedule_enabled(
            client, args.name, enabled, experiment=args.experiment, host=host
        )
    past = {"pause": "paused", "resume": "resumed", "delete": "deleted"}[args.schedule_action]
    for s in done:
        print(f"textops: {s.display_name} {past} (id {s.recurring_run_id})")
    return 0


def register_schedule(commands: argparse._SubParsersAction) -> None:
    """Add `textops schedule create|list|pause|resume|delete`."""
    schedule = commands.add_parser(
        "schedule",
        help="recurring runs on Kubeflow Pipelines: weekly retraining, hourly drift checks",
        description="Keep the recurring runs on Kubeflow Pipelines: "
        + "; ".join(f"{s.name}: {s.display_name}, cron '{s.cron}'" for s in SCHEDULES.values())
        + ". Cron has 6 fields, seconds first.",
    )
    actions = schedule.add_subparsers(dest="schedule_action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="create the schedules, or replace changed ones")
    create.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"which schedules: {', '.join(sorted(SCHEDULES))} (default: all)",
    )
    create.add_argument("--cron", help="6-field cron instead of the schedule's own")
    add_package_flag(create)
    add_connection_flags(create)
    add_arguments_flags(create)
    create.set_defaults(handler=create_command)
    listing = actions.add_parser("list", help="list the recurring runs in the experiment")
    add_connection_flags(listing)
    listing.set_defaults(handler=list_command)
    for action, help_text in (
        ("pause", "pause a schedule (its missed runs are skipped, not caught up)"),
        ("resume", "resume a paused schedule"),
        ("delete", "delete a schedule"),
    ):
        parser = actions.add_parser(action, help=help_text)
        parser.add_argument("name", help=f"{', '.join(sorted(SCHEDULES))}, or a display name")
        add_connection_flags(parser)
        parser.set_defaults(handler=_act_command)
