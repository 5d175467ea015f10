"""`textops models list|promote|rollback|canary|lineage`: a model's versions, locally or on KServe.

Where: the local model repository (`--model-repository`, by default the one `textops run`
publishes to and `make serve` serves), or with `--kserve` the InferenceService named after the
model (`--kserve-namespace`). The work is done in `components/deploy/versions.py` (local),
`service_versions.py` (KServe) and `lineage.py`; this module reads the command line and prints.

Exit status: 0 done, or nothing to do (each command can be run again safely); 2 bad input (an
unknown version, no previous version, no such model); 1 the switch failed (a rollout not
Ready, a server that did not load the version), and the message says what serves now.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from textops.components.common.config import TrainingConfig
from textops.components.common.errors import ConfigError, DeployError

if TYPE_CHECKING:
    from textops.components.deploy.service_versions import ServiceVersions
    from textops.components.deploy.versions import LocalVersions, ModelVersion, VersionChange

_DEFAULTS = TrainingConfig()
_ENDED = {"rollback": " (rolled back)", "restore": " (failed; put back)"}
#: What --rollout-timeout-seconds means for these commands, after the field's description.
_TIMEOUT_USE = (
    "Here: the longest wait for the InferenceService to be Ready, or for the local server to "
    "load the version."
)


def register(commands: argparse._SubParsersAction) -> None:
    """Add `textops models list|promote|rollback|canary|lineage`."""
    models = commands.add_parser(
        "models",
        help="list a model's versions, promote one, roll back, try one in canary (local or KServe)",
        description="A model's versions: list them with their scores and when each served, "
        "promote one, or roll back to the previous or a named version, in the local model "
        "repository or (--kserve) on its InferenceService, where `canary` also tries a bundle "
        "on a share of the traffic. Each command is idempotent. Exit "
        "status: 0 done or nothing to do, 2 bad input, 1 the switch failed (the message says "
        "what serves now).",
    )
    actions = models.add_subparsers(dest="models_action", required=True, metavar="ACTION")

    listing = actions.add_parser(
        "list",
        help="every version: accuracy, macro-F1, created-at, share of traffic, when it served",
        description="List every version of the model, newest first: accuracy and macro-F1 "
        "(from its metadata.json), when it was created, the share of traffic it gets now (a "
        "canary and its stable model share it) and when it served, from the served history "
        "(history.jsonl in the repository, the textops.dev/history annotation on KServe).",
    )
    _add_target_flags(listing)
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(handler=list_command)

    _add_switch_command(
        actions,
        "promote",
        promote_command,
        help="KServe: give the canary all traffic; local: make a version current",
        description="On KServe (--kserve): send all traffic to the canary (the InferenceService "
        "with 0 < canaryTrafficPercent < 100) once its revision is Ready; with no canary, "
        "nothing changes. Locally: make --version N current (default: the newest version, "
        "which undoes a rollback) and, with --serve-url, load it into the running server. A "
        "version already in place changes nothing.",
        version_help="local: the version to make current (default: the newest); KServe: the "
        "canary's version, checked before promoting",
    )
    _add_switch_command(
        actions,
        "rollback",
        rollback_command,
        help="serve the version that served before the current one, or --version N",
        description="Serve the version that served before the current one (from the served "
        "history), or the one --version names, with all traffic. On KServe while a canary runs, "
        "that is the stable model: traffic leaves the canary within seconds (canaryTraffic"
        "Percent 0 holds it on the stable revision while the rolled-back spec starts), then "
        "all traffic moves once Ready; a target that is not Ready in time is undone and what "
        "served before is put back (exit 1). Running it again after a rollback changes "
        "nothing: to go back further, name the version. Locally, --serve-url loads the "
        "version into the running server.",
        version_help="the version to serve (default: the one that served before the current one)",
    )

    canary = actions.add_parser(
        "canary",
        help="KServe: try a bundle on a share of the traffic, as the next version",
        description="With --kserve: roll the bundle at --storage-uri out to the "
        "InferenceService as the next version with --canary-traffic-percent of the traffic, "
        "wait for it to be Ready, and leave it in canary for `promote` or `rollback` (the "
        "deploy step does the same, then promotes by itself). Run again with another "
        "--canary-traffic-percent to change the share. A canary that is not Ready in time is "
        "undone (exit 1).",
    )
    _add_target_flags(canary)
    canary.add_argument(
        "--storage-uri",
        required=True,
        metavar="URI",
        help="the bundle: s3://, gs://, ... or the minio:// artifact URI the Kubeflow UI shows "
        "for the export step's bundle",
    )
    _add_setting_flag(canary, "canary_traffic_percent", "Here: the canary's share, 1 to 99.")
    _add_setting_flag(canary, "rollout_timeout_seconds", _TIMEOUT_USE)
    canary.set_defaults(handler=canary_command)

    lineage = actions.add_parser(
        "lineage",
        help="the data a version was trained on and the versions it replaced, back in time",
        description="For a version (default: the current one): its base data and fingerprint, "
        "each feedback snapshot merged into it (fingerprint, window, rows used and held out), "
        "the versions it replaced, then the same for each of those, back through the chain. "
        "A version exported before lineage was recorded says so.",
    )
    _add_target_flags(lineage)
    lineage.add_argument(
        "--version",
        type=_version_number,
        metavar="N",
        help="the version to trace (default: the current one; on KServe, the one the spec names)",
    )
    lineage.add_argument("--json", action="store_true", help="print JSON instead of text")
    lineage.set_defaults(handler=lineage_command)


def _version_number(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a version is a positive integer, not {text!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"a version is a positive integer, not {number}")
    return number


def _add_target_flags(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--model-repository",
        type=Path,
        default=_DEFAULTS.model_repository,
        metavar="DIR",
        help=f"the local model repository (default: {_DEFAULTS.model_repository}, where "
        "`textops run` publishes and `make serve` serves from)",
    )
    where.add_argument(
        "--kserve",
        action="store_true",
        help="the model's KServe InferenceService (named after the model) instead; uses "
        "~/.kube/config or the pod's service account",
    )
    _add_setting_flag(
        parser,
        "kserve_namespace",
        "Here only with --kserve; empty: the pod's own namespace.",
    )
    _add_setting_flag(parser, "model_name")


def _add_setting_flag(parser: argparse.ArgumentParser, name: str, use: str = "") -> None:
    """The flag of TrainingConfig's field `name`, as `textops run` spells it, with the field's
    type, default and description (then `use`: what it means for this command)."""
    field = TrainingConfig.model_fields[name]
    parser.add_argument(
        "--" + name.replace("_", "-"),
        dest=name,
        type=None if field.annotation is str else field.annotation,  # type: ignore[arg-type]
        default=field.default,
        metavar=name.split("_")[-1].upper(),
        help=" ".join(filter(None, (field.description, use)))
        + f" (default: {field.default or 'empty'})",
    )


def _add_switch_command(
    actions: argparse._SubParsersAction,
    name: str,
    handler: Callable[[argparse.Namespace], int],
    *,
    help: str,
    description: str,
    version_help: str,
) -> None:
    """Add `promote` or `rollback`: where, which --version, and how to switch to it."""
    parser = actions.add_parser(name, help=help, description=description)
    _add_target_flags(parser)
    parser.add_argument("--version", type=_version_number, metavar="N", help=version_help)
    _add_setting_flag(
        parser,
        "serve_url",
        f"Here: the server {name} loads the version into, e.g. http://127.0.0.1:8080.",
    )
    _add_setting_flag(parser, "rollout_timeout_seconds", _TIMEOUT_USE)
    parser.set_defaults(handler=handler)


# --- handlers -------------------------------------------------------------------------------


def list_command(args: argparse.Namespace) -> int:
    """`textops models list`."""
    _check_target(args)
    if args.kserve:
        service = _service(args)
        versions = service.versions()
        where = f"on InferenceService {service.namespace}/{service.name}"
    else:
        from textops.components.deploy.versions import local_versions

        versions = local_versions(args.model_repository, args.model_name)
        where = f"in the local model repository {args.model_repository}"
    if args.json:
        print(json.dumps([v.to_json() for v in versions], indent=2))
        return 0
    if not versions:
        print(f"textops: no version of {args.model_name} {where}")
        return 0
    print(f"textops: {args.model_name} {where} (times in UTC)")
    print("\n".join(version_table(versions, show_location=args.kserve)))
    return 0


def promote_command(args: argparse.Namespace) -> int:
    """`textops models promote`."""
    return _switch(args, lambda versions: versions.promote(args.version))


def rollback_command(args: argparse.Namespace) -> int:
    """`textops models rollback`."""
    return _switch(args, lambda versions: versions.roll_back_to(args.version))


def _switch(
    args: argparse.Namespace,
    switch: Callable[[ServiceVersions | LocalVersions], VersionChange],
) -> int:
    """Change which version serves: on the InferenceService with --kserve, else in the local
    model repository."""
    _check_target(args)
    if args.kserve:
        return _report(lambda: switch(_service(args)))
    from textops.components.deploy.versions import LocalVersions

    local = LocalVersions(
        args.model_repository,
        args.model_name,
        serve_url=args.serve_url,
        timeout_seconds=args.rollout_timeout_seconds,
    )
    return _report(lambda: switch(local))


def canary_command(args: argparse.Namespace) -> int:
    """`textops models canary`."""
    _check_target(args)
    if not args.kserve:
        raise ConfigError(
            "a canary splits an InferenceService's traffic: add --kserve (the local repository "
            "serves one version at a time; `textops models promote` switches it)"
        )
    from textops.components.deploy.deployment import storage_uri_for
    from textops.components.deploy.service_versions import bundle_problem

    storage_uri = storage_uri_for(args.storage_uri.strip())
    problem = bundle_problem(storage_uri)
    if problem:
        print(
            f"textops: warning: cannot check the bundle from here ({problem}); rolling it out "
            "all the same, KServe's storage initializer reads it with its own credentials",
            file=sys.stderr,
        )
    return _report(lambda: _service(args).start_canary(storage_uri, args.canary_traffic_percent))


def lineage_command(args: argparse.Namespace) -> int:
    """`textops models lineage`."""
    _check_target(args)
    if args.kserve:
        from textops.components.deploy.lineage import service_lineage

        service = _service(args)
        where = f"on InferenceService {service.namespace}/{service.name}"
        chain = service_lineage(
            service.state(), f"InferenceService {service.namespace}/{service.name}", args.version
        )
    else:
        from textops.components.deploy.lineage import local_lineage

        where = f"in the local model repository {args.model_repository}"
        chain = local_lineage(args.model_repository, args.model_name, args.version)
    if args.json:
        print(json.dumps([record.to_json() for record in chain], indent=2))
        return 0
    print(f"textops: lineage of {args.model_name} version {chain[0].version} {where}")
    for record in chain:
        print("\n".join(record.lines()))
    return 0


def _report(action: Callable[[], VersionChange]) -> int:
    """Run a promotion or rollback: 0 and its message, or 1 and what failed."""
    try:
        change = action()
    except DeployError as e:
        print(f"textops: error: {e}", file=sys.stderr)
        return 1
    print(f"textops: {change.message}")
    return 0


def _check_target(args: argparse.Namespace) -> None:
    """Refuse flags that belong to the other target rather than ignore them."""
    if args.kserve and getattr(args, "serve_url", ""):
        raise ConfigError(
            "--serve-url loads a version into a local server; an InferenceService loads its "
            "model itself: leave --serve-url out with --kserve"
        )
    if not args.kserve and args.kserve_namespace:
        raise ConfigError(
            f"--kserve-namespace {args.kserve_namespace} names an InferenceService's namespace: "
            "add --kserve, or leave --kserve-namespace out for the local model repository"
        )


def _service(args: argparse.Namespace) -> ServiceVersions:
    from textops.components.common import kubernetes_api
    from textops.components.deploy.service_versions import ServiceVersions

    namespace = kubernetes_api.resolve_namespace(args.kserve_namespace, "--kserve-namespace")
    timeout = getattr(args, "rollout_timeout_seconds", _DEFAULTS.rollout_timeout_seconds)
    return ServiceVersions(
        kubernetes_api.kserve_client(), args.model_name, namespace, timeout_seconds=timeout
    )


# --- the table ------------------------------------------------------------------------------


def version_table(versions: Sequence[ModelVersion], *, show_location: bool) -> list[str]:
    """The lines of `textops models list`: a header, then one row per version."""
    rows = [["VERSION", "TRAFFIC", "ACCURACY", "MACRO_F1", "CREATED", "SERVED"]]
    if show_location:
        rows[0].append("BUNDLE")
    for v in versions:
        row = [
            "?" if v.version is None else str(v.version),
            f"{v.traffic_percent}%" if v.traffic_percent else "-",
            _score(v.accuracy),
            _score(v.macro_f1),
            _when(v.created_at),
            _served(v),
        ]
        if show_location:
            row.append(v.location)
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = [
        "  ".join([*(c.ljust(w) for c, w in zip(r, widths, strict=False)), r[-1]]) for r in rows
    ]
    notes = [f"  version {v.version}: {v.problem}" for v in versions if v.problem]
    return [line.rstrip() for line in lines] + notes


def _score(value: float | None) -> str:
    return "?" if value is None else f"{value:.4f}"


def _when(text: str | None) -> str:
    if not text:
        return "?"
    try:
        return datetime.fromisoformat(text).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return text


def _served(version: ModelVersion) -> str:
    """Its serving periods, oldest first: `from → to`, `now` while it serves."""
    parts = []
    for period in version.periods:
        if period.ended is not None:
            end = _when(period.ended) + _ENDED.get(period.ended_by or "", "")
        elif period.ended_by is not None or not version.traffic_percent:
            end = "?"  # the record lost track of when it ended
        else:
            end = "now"
        parts.append(f"{_when(period.started)} → {end}")
    if not parts:
        if version.traffic_percent:
            return "now (since ?)"
        return "never" if version.history_known else "? (no history recorded)"
    return "; ".join(parts)
