"""Recurring runs on Kubeflow Pipelines: weekly retraining and an hourly drift check.

`textops schedule create` makes the server's recurring runs match `SCHEDULES`, found by their
display name: it creates a missing one, leaves one with the same specification alone, and
replaces one whose cron, pipeline version or arguments changed (Kubeflow Pipelines has no
update for a recurring run). Every schedule runs one at a time (`max_concurrency=1`) and
skips the runs it missed while paused (`no_catchup`).

Cron expressions have six fields, seconds first, as Kubeflow Pipelines reads them:
`second minute hour day-of-month month day-of-week`, in the scheduler's time zone (UTC on
most clusters).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from textops.components.common.errors import ConfigError, KubeflowError
from textops.pipelines.kubeflow import (
    PAGE_SIZE,
    PipelinePackage,
    api_call,
    prepare_pipeline,
)

if TYPE_CHECKING:
    import kfp

logger = logging.getLogger(__name__)

MAX_CONCURRENCY = 1
#: Marks the specification's fingerprint in a recurring run's description.
_FINGERPRINT = re.compile(r"\[textops-spec ([0-9a-f]{16})\]")


@dataclass(frozen=True)
class Schedule:
    """One recurring run textops keeps on the server."""

    name: str
    display_name: str
    pipeline: str
    cron: str
    description: str


SCHEDULES: dict[str, Schedule] = {
    "retraining": Schedule(
        "retraining",
        "textops-retraining",
        "training",
        "0 0 3 * * 1",
        "Retrain the classifier every Monday at 03:00.",
    ),
    "drift": Schedule(
        "drift",
        "textops-drift-check",
        "monitoring",
        "0 0 * * * *",
        "Check the served model's traffic for drift every hour.",
    ),
}

_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
#: (name, lowest, highest, names for the numbers from `lowest`) per field.
_CRON_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("second", 0, 59, ()),
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 6, _DAYS),
)
_CRON_ITEM = re.compile(r"^(?P<range>\*|\?|[A-Za-z0-9]+(?:-[A-Za-z0-9]+)?)(?:/(?P<step>\d+))?$")


def _cron_value(text: str, field: str, low: int, high: int, names: tuple[str, ...]) -> int:
    if text.upper() in names:
        return low + names.index(text.upper())
    if not text.isdigit() or not low <= int(text) <= high:
        raise ValueError(f"{field} must be {low}-{high}" + (" or a name" if names else ""))
    return int(text)


def validate_cron(expression: str) -> str:
    """Check a 6-field cron expression as Kubeflow Pipelines reads it; return it normalized.

    Kubeflow's recurring runs parse cron with Go's robfig/cron (seconds first). No cron
    library is installed here, and the maintained one that reads seconds first, croniter
    (`second_at_beginning=True`), reads another dialect: it accepts 5 fields (which Kubeflow
    would read seconds first, as another schedule) and backwards ranges such as 18-8, `L` and
    `1#2` (which robfig/cron refuses), and says only valid or not. So this check follows
    robfig/cron's fields and bounds and says which field is wrong and what to write.

    Raises:
        ConfigError: Not six fields, or a field out of range, with what to write instead.
    """
    fields = expression.split()
    if len(fields) == 5:
        raise ConfigError(
            f"cron {expression!r} has 5 fields; Kubeflow Pipelines takes 6, seconds first: "
            f"'0 {' '.join(fields)}'"
        )
    if len(fields) != 6:
        raise ConfigError(
            f"cron {expression!r} has {len(fields)} fields; Kubeflow Pipelines takes 6: "
            "second minute hour day-of-month month day-of-week (e.g. '0 0 3 * * 1')"
        )
    for text, (field, low, high, names) in zip(fields, _CRON_FIELDS, strict=True):
        for item in text.split(","):
            match = _CRON_ITEM.match(item)
            try:
                if match is None:
                    raise ValueError("expected *, N, N-M, a list of those, or any with /STEP")
                if match["range"] == "?" and field not in ("day of month", "day of week"):
                    raise ValueError("? is for the day fields only")
                if match["step"] is not None and int(match["step"]) == 0:
                    raise ValueError("a step must be at least 1")
                if match["range"] not in ("*", "?"):
                    bounds = [
                        _cron_value(v, field, low, high, names) for v in match["range"].split("-")
                    ]
                    if bounds != sorted(bounds):
                        raise ValueError(f"range {match['range']} runs backwards")
            except ValueError as e:
                raise ConfigError(f"cron {expression!r}: {field} field {text!r}: {e}") from e
    return " ".join(fields)


def spec_fingerprint(
    cron: str,
    pipeline_version_id: str,
    arguments: Mapping[str, Any],
    service_account: str | None = None,
) -> str:
    """A short hash of everything `create` sets: equal hashes, an unchanged schedule."""
    spec = {
        "cron": cron,
        "pipeline_version_id": pipeline_version_id,
        "arguments": dict(arguments),
        "service_account": service_account or "",
        "max_concurrency": MAX_CONCURRENCY,
        "no_catchup": True,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ScheduleInfo:
    """A recurring run as the server describes it."""

    recurring_run_id: str
    display_name: str
    enabled: bool
    cron: str
    pipeline_version_id: str
    fingerprint: str | None

    @classmethod
    def of(cls, run: Any) -> ScheduleInfo:
        """From a `V2beta1RecurringRun`."""
        trigger = run.trigger
        cron = trigger.cron_schedule.cron if trigger and trigger.cron_schedule else ""
        reference = run.pipeline_version_reference
        match = _FINGERPRINT.search(run.description or "")
        return cls(
            recurring_run_id=str(run.recurring_run_id),
            display_name=str(run.display_name),
            enabled=str(run.status or run.mode or "").upper() in ("ENABLED", "ENABLE"),
            cron=cron or "",
            pipeline_version_id=str(reference.pipeline_version_id if reference else ""),
            fingerprint=match[1] if match else None,
        )


def list_schedules(client: kfp.Client, *, experiment: str, host: str) -> list[ScheduleInfo]:
    """Every recurring run in `experiment` (none when the experiment does not exist)."""
    with api_call(f"look up experiment {experiment}", host):
        try:
            found = client.get_experiment(experiment_name=experiment)
        except ValueError as e:  # kfp's way of saying there is none, or several
            if str(e).startswith("No experiment"):
                return []
            raise KubeflowError(f"{e} Give --experiment a name that is unique.") from e
    return _list_in(client, str(found.experiment_id), host)


def _list_in(client: kfp.Client, experiment_id: str, host: str) -> list[ScheduleInfo]:
    schedules: list[ScheduleInfo] = []
    token = ""
    while True:
        with api_call("list recurring runs", host):
            page = client.list_recurring_runs(
                experiment_id=experiment_id, page_token=token, page_size=PAGE_SIZE
            )
        schedules.extend(ScheduleInfo.of(run) for run in page.recurring_runs or [])
        token = page.next_page_token or ""
        if not token:
            return schedules


@dataclass(frozen=True)
class ScheduleResult:
    """What `create_or_replace_schedule` did."""

    display_name: str
    action: str  # created | replaced | unchanged
    recurring_run_id: str
    cron: str
    version_name: str
    enabled: bool


def create_or_replace_schedule(
    client: kfp.Client,
    schedule: Schedule,
    package: PipelinePackage,
    arguments: Mapping[str, Any],
    *,
    experiment: str,
    host: str,
    cron: str | None = None,
    service_account: str | None = None,
) -> ScheduleResult:
    """Make the recurring run `schedule.display_name` run `package` with `arguments` on `cron`.

    Idempotent: a recurring run of that name with the same specification is left as it is;
    one that differs is replaced (created anew, then the old one deleted), keeping it paused
    if it was paused.

    Raises:
        ConfigError: A bad cron expression, or an argument the pipeline does not take.
        KubeflowError: The server refused a request.
    """
    cron = validate_cron(cron or schedule.cron)
    version, experiment_id = prepare_pipeline(
        client, package, arguments=arguments, experiment=experiment, host=host
    )
    fingerprint = spec_fingerprint(cron, version.version_id, arguments, service_account)
    existing = [
        s for s in _list_in(client, experiment_id, host) if s.display_name == schedule.display_name
    ]
    enabled = all(s.enabled for s in existing)
    if len(existing) == 1 and existing[0].fingerprint == fingerprint:
        found = existing[0]
        logger.info("schedule unchanged name=%s id=%s", found.display_name, found.recurring_run_id)
        return ScheduleResult(
            found.display_name,
            "unchanged",
            found.recurring_run_id,
            cron,
            version.version_name,
            found.enabled,
        )
    with api_call(f"create recurring run {schedule.display_name}", host):
        created = client.create_recurring_run(
            experiment_id=experiment_id,
            job_name=schedule.display_name,
            description=f"{schedule.description} [textops-spec {fingerprint}]",
            cron_expression=cron,
            max_concurrency=MAX_CONCURRENCY,
            no_catchup=True,
            params=dict(arguments),
            pipeline_id=version.pipeline_id,
            version_id=version.version_id,
            enabled=enabled,
            service_account=service_account,
        )
    for old in existing:
        with api_call(f"delete the replaced recurring run {old.recurring_run_id}", host):
            client.delete_recurring_run(old.recurring_run_id)
    action = "replaced" if existing else "created"
    logger.info(
        "schedule %s name=%s id=%s", action, schedule.display_name, created.recurring_run_id
    )
    return ScheduleResult(
        schedule.display_name,
        action,
        str(created.recurring_run_id),
        cron,
        version.version_name,
        enabled,
    )


def _matching(client: kfp.Client, name: str, *, experiment: str, host: str) -> list[ScheduleInfo]:
    display_name = SCHEDULES[name].display_name if name in SCHEDULES else name
    matching = [
        s
        for s in list_schedules(client, experiment=experiment, host=host)
        if s.display_name == display_name
    ]
    if not matching:
        raise KubeflowError(
            f"no recurring run named {display_name} in experiment {experiment}; "
            "`textops schedule list` shows the ones there, `textops schedule create` makes them"
        )
    return matching


def set_schedule_enabled(
    client: kfp.Client, name: str, enabled: bool, *, experiment: str, host: str
) -> list[ScheduleInfo]:
    """Resume (`enabled`) or pause the recurring run `name` (a SCHEDULES key or display name)."""
    matching = _matching(client, name, experiment=experiment, host=host)
    for schedule in matching:
        verb = "resume" if enabled else "pause"
        with api_call(f"{verb} recurring run {schedule.display_name}", host):
            if enabled:
                client.enable_recurring_run(schedule.recurring_run_id)
            else:
                client.disable_recurring_run(schedule.recurring_run_id)
    return matching


def delete_schedule(
    client: kfp.Client, name: str, *, experiment: str, host: str
) -> list[ScheduleInfo]:
    """Delete the recurring run `name` (a SCHEDULES key or display name)."""
    matching = _matching(client, name, experiment=experiment, host=host)
    for schedule in matching:
        with api_call(f"delete recurring run {schedule.display_name}", host):
            client.delete_recurring_run(schedule.recurring_run_id)
    return matching
