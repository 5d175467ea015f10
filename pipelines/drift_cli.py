"""`textops drift`: compare a window of logged traffic with the model bundle's reference sample.

Exit status: 0 no drift (or not enough data to tell), 4 drift found (whether or not `--trigger`
started a retraining), 2 bad input or configuration, 1 the retraining pipeline failed.

Only light imports here: Evidently loads when the command runs.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

from textops.components.common.config import TrainingConfig
from textops.components.monitor.collector_cli import add_store_argument, default_store_url
from textops.components.monitor.drift_settings import DATA_TESTS, DriftJobSettings, DriftSettings
from textops.pipelines.kubeflow import ENDPOINT_ENV
from textops.pipelines.kubeflow_cli import add_connection_flags

#: Exit status of a run that found drift.
EXIT_DRIFT = 4
#: When no window is given: the monitoring pipeline's default window start, the last day.
DEFAULT_SINCE: str = DriftJobSettings.model_fields["since"].default
_DEFAULTS = TrainingConfig()
#: The drift job's settings (DriftJobSettings) that have a flag of their own, by field name:
#: the flag's metavar and its default, said "here" where it differs from the monitoring
#: pipeline's (the rest of the help is the field's description). The store and the bundle are
#: --store and --bundle, the spellings of the other commands that read them.
_JOB_FLAGS: dict[str, tuple[str, str]] = {
    "since": ("TIME", f"default here: {DEFAULT_SINCE} when neither --until nor --last is given"),
    "until": ("TIME", "default: now"),
    "last": ("N", "default: all; here N is at least 1"),
    "workspace": (
        "DIR",
        "default here: <output-dir>/workspace, the pipeline's: none; --no-workspace: none",
    ),
    "pushgateway": ("URL", "default: none"),
}
#: Settings that have a flag of their own (the tests are set in the file or with --threshold).
_SETTING_FLAGS = (
    "min_window_rows",
    "family_alpha",
    "drift_share",
    "min_labelled_rows",
    "max_accuracy_drop",
    "max_macro_f1_drop",
)


def _test_threshold(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    if not sep or name.strip() not in DATA_TESTS:
        raise argparse.ArgumentTypeError(
            f"expected TEST=VALUE with TEST one of {', '.join(DATA_TESTS)}, got {text!r}"
        )
    try:
        return name.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None


def add_drift_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `textops drift`."""
    model = parser.add_argument_group("model")
    model.add_argument(
        "--bundle",
        help="the model bundle to compare with: a directory, or its URI in an object store "
        "(s3://bucket/path/bundle; only the files the job reads are copied)",
    )
    model.add_argument(
        "--model-repository",
        type=Path,
        default=_DEFAULTS.model_repository,
        help="without --bundle: the local model repository whose current version is compared "
        f"with (default: {_DEFAULTS.model_repository})",
    )
    model.add_argument(
        "--model-name",
        default=_DEFAULTS.model_name,
        help=f"the model whose traffic is fetched (default: {_DEFAULTS.model_name})",
    )

    window = parser.add_argument_group("window")
    source = window.add_mutually_exclusive_group()
    add_store_argument(source, "payload store to fetch traffic from")
    source.add_argument(
        "--window-file",
        type=Path,
        help="a CSV, Parquet or JSONL file of traffic (text, prediction[, confidence, label]) "
        "instead of the store",
    )
    for name in ("since", "until", "last"):
        _add_job_flag(window, name)

    out = parser.add_argument_group("outputs")
    out.add_argument(
        "--output-dir",
        type=Path,
        help="where report.html, summary.json and drift.prom go (default: "
        f"{_DEFAULTS.output_dir}/drift/<model-name>)",
    )
    _add_job_flag(out, "workspace")
    out.add_argument(
        "--no-workspace",
        action="store_true",
        help="add the run to no workspace (`evidently ui --workspace DIR` shows a workspace's "
        "history)",
    )
    _add_job_flag(out, "pushgateway")

    tests = parser.add_argument_group("tests")
    tests.add_argument("--drift-config", type=Path, help="YAML file of drift settings")
    for name in _SETTING_FLAGS:
        field = DriftSettings.model_fields[name]
        tests.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=field.annotation,  # type: ignore[arg-type]
            metavar=str(getattr(field.annotation, "__name__", "X")).upper(),
            help=f"{field.description} (default: {field.default})",
        )
    tests.add_argument(
        "--threshold",
        type=_test_threshold,
        action="append",
        default=[],
        metavar="TEST=VALUE",
        help=f"one test's threshold (repeatable); TEST: {', '.join(DATA_TESTS)}",
    )

    retrain = parser.add_argument_group("retraining")
    retrain.add_argument(
        "--trigger", action="store_true", help="when drift is found, start the training pipeline"
    )
    retrain.add_argument(
        "--config", type=Path, help="training settings for the retraining (the YAML of textops run)"
    )
    add_connection_flags(
        retrain, unset="; when neither is set, the retraining runs here through kfp.local"
    )
    retrain.add_argument(
        "--training-package",
        type=Path,
        help="compiled training pipeline to submit (default: the checked-in training.yaml)",
    )


def _add_job_flag(group: argparse._ArgumentGroup, name: str) -> None:
    """The flag of DriftJobSettings' field `name`: its spelling, type and help from the field.

    Unset, it is None, and the command's own default applies (see `_JOB_FLAGS`).
    """
    field = DriftJobSettings.model_fields[name]
    metavar, default = _JOB_FLAGS[name]
    group.add_argument(
        "--" + name.replace("_", "-"),
        dest=name,
        type=None if field.annotation is str else field.annotation,  # type: ignore[arg-type]
        metavar=metavar,
        help=f"{field.description} ({default})",
    )


def drift_command(args: argparse.Namespace) -> int:
    """Run the drift job; retrain on drift when asked. Returns the exit status."""
    from textops.components.common.config import load_config
    from textops.components.common.dataio import is_uri
    from textops.components.monitor.drift_job import OutputPaths, resolve_bundle, run_drift_job
    from textops.components.monitor.drift_settings import load_drift_settings

    overrides: dict[str, Any] = {name: getattr(args, name) for name in _SETTING_FLAGS}
    if args.threshold:
        overrides["tests"] = {name: {"threshold": value} for name, value in args.threshold}
    settings = load_drift_settings(args.drift_config, overrides)
    # A bad training config fails now, not after the drift run.
    training = load_config(args.config) if args.trigger else None
    with tempfile.TemporaryDirectory(prefix="textops-bundle-") as scratch:
        bundle_dir = resolve_bundle(
            args.bundle, args.model_repository, args.model_name, scratch=Path(scratch)
        )
        bundle_source = args.bundle if args.bundle and is_uri(args.bundle) else str(bundle_dir)
        window, spec, source = _load_window(args)
        output_dir = args.output_dir or Path(_DEFAULTS.output_dir) / "drift" / args.model_name
        workspace = _workspace(args, output_dir)
        job = run_drift_job(
            bundle_dir=bundle_dir,
            window=window,
            settings=settings,
            paths=OutputPaths.in_dir(output_dir),
            model_name=args.model_name,
            workspace=workspace,
            pushgateway=args.pushgateway,
            window_spec=spec,
            source=source,
            bundle_source=bundle_source,
        )
    result = job.result
    headline = {
        "drift": "drift found",
        "no_drift": "no drift",
        "not_enough_data": "not enough data",
    }[result.status]
    lines = [
        f"textops: {headline} in {result.window_rows} rows of {args.model_name} traffic "
        f"({result.labelled_rows} labelled) against {bundle_source}",
        *[f"  reason:     {reason}" for reason in result.reasons],
        f"  report:     {job.paths.report}",
        f"  summary:    {job.paths.summary}",
        f"  gauges:     {job.paths.gauges}",
    ]
    if workspace is not None:
        lines.append(f"  workspace:  {workspace} (evidently ui --workspace {workspace})")
    push = job.summary.get("pushgateway")
    if push and push["error"]:
        lines.append(f"  pushgateway: not pushed: {push['error']}")
    print("\n".join(lines))
    if job.drifted and training is not None:
        from textops.pipelines.retraining import trigger_retraining

        outcome = trigger_retraining(
            training,
            kubeflow_host=args.kubeflow_host or os.environ.get(ENDPOINT_ENV) or None,
            package=args.training_package,
            experiment=args.experiment,
            namespace=args.namespace,
        )
        print(f"  retraining: {outcome.detail}")
    return EXIT_DRIFT if job.drifted else 0


def _workspace(args: argparse.Namespace, output_dir: Path) -> Path | None:
    """The Evidently workspace: none with --no-workspace or an empty --workspace (as in the
    pipeline), else --workspace, else the one beside the outputs."""
    if args.no_workspace or args.workspace == "":
        return None
    return Path(args.workspace) if args.workspace else output_dir / "workspace"


def _load_window(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """The traffic window, its bounds and where it came from."""
    from textops.components.common.errors import DriftInputError
    from textops.components.monitor.drift_job import WindowSpec, fetch_traffic, parse_moment

    if args.window_file is not None:
        if args.since or args.until or args.last is not None:
            raise DriftInputError(
                "--since, --until and --last select traffic in the store; a --window-file is "
                "compared as a whole"
            )
        from textops.components.common.dataio import read_table

        return read_table(str(args.window_file)), WindowSpec(), str(args.window_file)
    from textops.components.monitor.store import mask_url

    since = args.since
    if since is None and args.until is None and args.last is None:
        since = DEFAULT_SINCE
    spec = WindowSpec(
        since=parse_moment(since) if since else None,
        until=parse_moment(args.until) if args.until else None,
        last=args.last,
    )
    if spec.last is not None and spec.last < 1:
        raise DriftInputError(f"--last must be at least 1, not {spec.last}")
    store_url = args.store or default_store_url()
    return fetch_traffic(store_url, args.model_name, spec), spec, mask_url(store_url)


def register(commands: argparse._SubParsersAction) -> None:
    """Add `textops drift`."""
    parser = commands.add_parser(
        "drift",
        help="compare logged traffic with the model's reference sample (Evidently)",
        description="Fetch a window of logged traffic, test it for drift against the model "
        "bundle's reference sample, write the HTML report, a JSON summary and Prometheus "
        "gauges, add the run to an Evidently workspace, and optionally start retraining. "
        "Exit status: 0 no drift or not enough data, 4 drift found, 2 bad input, "
        "1 the retraining failed.",
    )
    add_drift_arguments(parser)
    parser.set_defaults(handler=drift_command)
