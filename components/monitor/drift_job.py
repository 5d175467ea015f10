"""The drift job: fetch a window of logged traffic, compare it with the bundle's reference
sample (`drift.detect_drift`), and write the report, the summary, the gauges and a workspace run.

Shared by `textops drift`, the monitoring pipeline's drift component and the benchmark.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textops.components.common.bundle import (
    LABELS_FILE,
    METADATA_FILE,
    REFERENCE_FILE,
    ModelBundle,
)
from textops.components.common.dataio import is_uri
from textops.components.common.errors import DriftInputError, ModelNotFoundError
from textops.components.common.production_model import (
    RepositoryTarget,
    fetch_bundle_files,
    production_bundle,
)
from textops.components.monitor.drift import DriftResult, detect_drift, quality_baseline
from textops.components.monitor.drift_report import (
    METRICS_FILE,
    REPORT_FILE,
    SUMMARY_FILE,
    add_to_workspace,
    drift_gauges,
    push_gauges,
    write_gauges,
    write_report,
    write_summary,
)
from textops.components.monitor.drift_settings import DriftSettings

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

#: The bundle files the drift job reads (a bundle in an object store is fetched without its
#: models).
DRIFT_FILES = (LABELS_FILE, METADATA_FILE, REFERENCE_FILE)
#: `--since 24h`: a duration back from now, in minutes, hours or days.
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([mhd])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def parse_moment(text: str, now: datetime | None = None) -> datetime:
    """A point in time: ISO 8601 (naive means UTC), or a duration back from now (30m, 24h, 7d).

    Raises:
        DriftInputError: Neither form.
    """
    match = _DURATION.match(text)
    if match:
        now = now or datetime.now(UTC)
        return now - timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as e:
        raise DriftInputError(
            f"cannot read the time {text!r}: give ISO 8601 (2026-05-01T12:00:00Z) or a "
            "duration back from now (30m, 24h, 7d)"
        ) from e
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class WindowSpec:
    """Which logged traffic a run looks at; fields left None do not restrict it."""

    since: datetime | None = None
    until: datetime | None = None
    last: int | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "last": self.last,
        }


@dataclass(frozen=True)
class OutputPaths:
    """Where one run writes its files."""

    report: Path
    summary: Path
    gauges: Path

    @classmethod
    def in_dir(cls, directory: str | Path) -> OutputPaths:
        directory = Path(directory)
        return cls(directory / REPORT_FILE, directory / SUMMARY_FILE, directory / METRICS_FILE)


@dataclass(frozen=True)
class DriftJobResult:
    """A finished drift run: the verdict, the summary written, and where everything went."""

    result: DriftResult
    summary: dict[str, Any]
    paths: OutputPaths
    workspace_run: str | None

    @property
    def drifted(self) -> bool:
        return self.result.drifted


def resolve_bundle(
    bundle: str | Path | None,
    model_repository: str | Path | None,
    model_name: str,
    *,
    scratch: Path | None = None,
) -> Path:
    """The bundle to compare with: `bundle` itself, else the model repository's current version.

    Args:
        bundle: A bundle directory, or the URI of one (s3://, gs://, ...), whose files the job
            reads are copied into `scratch`.
        model_repository: Without `bundle`: the local model repository.
        model_name: The model whose current version is taken from the repository.
        scratch: An empty directory that outlives the drift job; needed for a URI.

    Raises:
        ModelNotFoundError: Neither is given, or the repository has no published version.
        ConfigError: A bundle URI cannot be read from here (see `fetch_bundle_files`).
    """
    if bundle and is_uri(str(bundle)):
        if scratch is None:
            raise ValueError("a bundle URI needs a scratch directory to copy it into")
        return fetch_bundle_files(str(bundle), scratch, DRIFT_FILES)
    if bundle:
        return ModelBundle.open(bundle).path
    if not model_repository:
        raise ModelNotFoundError("give the bundle to compare with: --bundle or --model-repository")
    published = production_bundle(model_name, RepositoryTarget(model_repository))
    if published is None:
        raise ModelNotFoundError(
            f"no published version of {model_name} in the model repository {model_repository}: "
            "run `textops run` first, or give --bundle"
        )
    return ModelBundle.open(published.location).path


def fetch_traffic(store_url: str, model_name: str | None, spec: WindowSpec) -> pd.DataFrame:
    """The window of logged traffic from the payload store, without the evaluate step's."""
    from textops.components.common.traffic import EVALUATION_REQUEST_PREFIX
    from textops.components.monitor.store import open_store

    with open_store(store_url, create=False) as store:
        return store.fetch_window(
            model_name=model_name,
            since=spec.since,
            until=spec.until,
            last=spec.last,
            exclude_event_prefix=EVALUATION_REQUEST_PREFIX,
        )


def run_drift_job(
    *,
    bundle_dir: str | Path,
    window: pd.DataFrame,
    settings: DriftSettings,
    paths: OutputPaths,
    model_name: str,
    workspace: str | Path | None = None,
    pushgateway: str | None = None,
    namespace: str | None = None,
    window_spec: WindowSpec | None = None,
    source: str = "",
    bundle_source: str | None = None,
) -> DriftJobResult:
    """Compare `window` with the bundle's reference sample and write every output.

    Args:
        bundle_dir: The model bundle whose reference.parquet (and test metrics) is the baseline.
        window: Logged traffic, as `PayloadStore.fetch_window` returns it.
        settings: The tests and thresholds.
        paths: Where the report, the summary and the gauges go.
        model_name: The model, for the gauges' label and the workspace project.
        workspace: An Evidently workspace directory to add the run to; None: none.
        pushgateway: A Prometheus Pushgateway URL to push the gauges to; None: none.
        namespace: The InferenceService's namespace, a grouping label of the pushed gauges;
            None: none (a model served on this machine).
        window_spec: The window's bounds, recorded in the summary.
        source: Where the window came from (a masked store URL or a file), for the summary.
        bundle_source: Where the bundle came from when `bundle_dir` is a copy (its URI), for
            the summary; None: `bundle_dir`.

    Raises:
        ModelNotFoundError: The bundle is missing or incomplete.
        DriftInputError: The window or the reference cannot be compared.
    """
    import pandas as pd

    started = time.perf_counter()
    bundle = ModelBundle.open(bundle_dir, required=DRIFT_FILES)
    try:
        reference = pd.read_parquet(bundle.reference_path)
    except (OSError, ValueError) as e:
        raise DriftInputError(
            f"cannot read the reference sample {bundle.reference_path}: {e}"
        ) from e
    metadata = bundle.metadata
    baseline = quality_baseline(metadata, reference)
    result = detect_drift(
        reference,
        window,
        settings,
        baseline=baseline,
        name=f"{model_name} drift {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC",
    )
    summary = result.summary()
    summary.update(
        {
            "model_name": model_name,
            "bundle": bundle_source or str(bundle.path),
            "bundle_created_at": metadata.get("created_at"),
            "window": {**(window_spec or WindowSpec()).describe(), "source": source},
            "first_received_at": _time_bound(window, "min"),
            "last_received_at": _time_bound(window, "max"),
            "baseline": None
            if baseline is None
            else {
                "accuracy": baseline.accuracy,
                "macro_f1": baseline.macro_f1,
                "source": baseline.source,
            },
            "settings": settings.model_dump(mode="json"),
        }
    )
    write_report(result, paths.report)
    registry = drift_gauges(result, model_name)
    write_gauges(registry, paths.gauges)
    workspace_run = add_to_workspace(result, workspace, model_name) if workspace else None
    summary["workspace"] = (
        {"path": str(workspace), "run_id": workspace_run} if workspace is not None else None
    )
    if pushgateway:
        try:
            push_gauges(registry, pushgateway, model_name, namespace)
            summary["pushgateway"] = {"url": pushgateway, "error": None}
        except OSError as e:
            # The run's verdict and files stand; the gauges are in the .prom file still.
            logger.warning("cannot push drift gauges url=%s error=%s", pushgateway, e)
            summary["pushgateway"] = {"url": pushgateway, "error": str(e)}
    summary["seconds"] = round(time.perf_counter() - started, 3)
    write_summary(summary, paths.summary)
    return DriftJobResult(result, summary, paths, workspace_run)


def _time_bound(window: pd.DataFrame, which: str) -> str | None:
    """The earliest ("min") or latest ("max") received_at of the window, ISO 8601."""
    if "received_at" not in window.columns:
        return None
    times = window["received_at"].dropna()
    if times.empty:
        return None
    return str(getattr(times, which)().isoformat())
