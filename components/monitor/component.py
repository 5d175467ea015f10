"""KFP components of the monitor: the drift job (logic in `drift_job.py`) and the feedback
snapshot (logic in `feedback.py`)."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Metrics, Output

from textops.components.common.images import MONITOR_IMAGE


@dsl.component(base_image=MONITOR_IMAGE, install_kfp_package=False)
def detect_drift(
    store_url: str,
    model_repository: str,
    model_name: str,
    bundle: str,
    since: str,
    until: str,
    last: int,
    min_window_rows: int,
    family_alpha: float,
    drift_share: float,
    min_labelled_rows: int,
    max_accuracy_drop: float,
    max_macro_f1_drop: float,
    workspace: str,
    pushgateway: str,
    report: Output[HTML],
    summary: Output[Artifact],
    metrics: Output[Metrics],
    deploy_target: str,
    kserve_namespace: str,
) -> bool:
    """Compare a window of logged traffic with the model bundle's reference sample.

    The store is `store_url`, else $TEXTOPS_STORE_URL (the pipeline sets it from a Secret),
    else the local SQLite file. The bundle is `bundle` when given (a directory or an s3://
    URI), else, with `deploy_target` 'kserve', the one the InferenceService `model_name` in
    `kserve_namespace` (empty: this pod's) serves to most of its traffic, else the current
    version of `model_name` in `model_repository`. The window is `model_name`'s traffic in
    the store between `since` and `until` (ISO 8601 or a duration back from now such as 24h;
    empty: unbounded), the most recent `last` texts of it when `last` > 0. Empty `workspace`
    and `pushgateway` skip them.

    On a cluster (its artifacts in an object store), it first refuses a store, workspace or
    `deploy_target` whose data would live only inside this pod.

    The settings are `DriftJobSettings`, `DriftSettings` (monitor/drift_settings.py) and
    `ProductionModelSettings` (common/settings.py), each checked by its model first.

    Returns whether drift was found; the reasons are in `summary`'s metadata and file.
    """
    # The inputs, before anything else is bound: they are checked by their settings models.
    parameters = dict(locals())

    import json
    import os
    import tempfile
    from pathlib import Path

    from textops.components.common import production_model
    from textops.components.common.cluster_run import (
        check_deploy_target,
        check_local_path,
        check_payload_store,
        on_a_cluster,
    )
    from textops.components.common.errors import ModelNotFoundError
    from textops.components.common.logs import configure_logging
    from textops.components.common.settings import ProductionModelSettings, section_from
    from textops.components.monitor.collector_cli import STORE_URL_ENV, default_store_url
    from textops.components.monitor.drift_job import (
        OutputPaths,
        WindowSpec,
        fetch_traffic,
        parse_moment,
        resolve_bundle,
        run_drift_job,
    )
    from textops.components.monitor.drift_settings import DriftJobSettings, DriftSettings
    from textops.components.monitor.store import mask_url

    configure_logging()
    settings = section_from(DriftSettings, parameters)
    for section in (DriftJobSettings, ProductionModelSettings):
        section_from(section, parameters)  # the values are used as given, once checked
    # Then, on a cluster, a check that could only read a pod's own disk, or a
    # retraining that could only publish there, stops here, naming what to set.
    if on_a_cluster(report.uri):
        check_deploy_target(deploy_target, model_repository)
        check_payload_store(store_url or os.environ.get(STORE_URL_ENV, ""))
        check_local_path("workspace", workspace)

    target = production_model.production_target(deploy_target, model_repository, kserve_namespace)
    namespace = None
    if isinstance(target, production_model.InferenceServiceTarget):
        namespace = target.namespace
    if not bundle and namespace is not None:
        served = production_model.production_bundle(model_name, target)
        if served is None:
            raise ModelNotFoundError(
                f"there is no InferenceService {model_name!r} in namespace {namespace!r} to "
                "compare traffic with: run the training pipeline with deploy_target 'kserve' "
                "first, or give the bundle to compare with (bundle=s3://...)"
            )
        bundle = served.location
    scratch = Path(tempfile.mkdtemp(prefix="textops-bundle-"))
    bundle_dir = resolve_bundle(
        bundle or None, model_repository or None, model_name, scratch=scratch
    )
    spec = WindowSpec(
        since=parse_moment(since) if since else None,
        until=parse_moment(until) if until else None,
        last=last if last > 0 else None,
    )
    store_url = store_url or default_store_url()
    window = fetch_traffic(store_url, model_name, spec)
    # The gauges reach Prometheus through the Pushgateway; the file is for local runs.
    gauges = Path(tempfile.mkdtemp(prefix="textops-drift-")) / "drift.prom"
    job = run_drift_job(
        bundle_dir=bundle_dir,
        window=window,
        settings=settings,
        paths=OutputPaths(report=Path(report.path), summary=Path(summary.path), gauges=gauges),
        model_name=model_name,
        workspace=workspace or None,
        pushgateway=pushgateway or None,
        namespace=namespace,
        window_spec=spec,
        source=mask_url(store_url),
        bundle_source=bundle or str(bundle_dir),
    )
    result = job.result
    metrics.log_metric("drifted", float(result.drifted))
    metrics.log_metric("window_rows", float(result.window_rows))
    metrics.log_metric("labelled_rows", float(result.labelled_rows))
    scores = {test.name: test.value for test in result.tests if test.value is not None}
    for name, value in scores.items():
        metrics.log_metric(name, float(value))
    with open(metrics.path, "w", encoding="utf-8") as f:
        json.dump({"status": result.status, **scores}, f, indent=2)
    summary.metadata.update(
        {"status": result.status, "drifted": result.drifted, "reasons": list(result.reasons)}
    )
    return result.drifted


@dsl.component(base_image=MONITOR_IMAGE, install_kfp_package=False)
def collect_feedback(
    feedback_store_url: str,
    feedback_since: str,
    feedback_until: str,
    feedback_last: int,
    feedback_dir: str,
    feedback_test_fraction: float,
    feedback_conflicts: str,
    feedback_unknown_labels: str,
    feedback_snapshots: list,
    data: str,
    data_format: str,
    text_column: str,
    label_column: str,
    allowed_labels: list,
    min_rows: int,
    min_text_chars: int,
    max_text_chars: int,
    text_mostly: float,
    max_duplicate_share: float,
    max_conflicting_label_share: float,
    min_class_share: float,
    redact_pii: bool,
    model_name: str,
    deploy_target: str,
    kserve_namespace: str,
    model_repository: str,
    summary: Output[Artifact],
) -> NamedTuple("FeedbackOutputs", [("snapshots", list)]):  # type: ignore[valid-type]
    """Build a feedback snapshot of `model_name`'s labelled traffic (see monitor/feedback.py).

    The store is `feedback_store_url`, else $TEXTOPS_STORE_URL (the pipeline sets it from the
    collector's Secret); with neither, or with no labelled row left by the rules, it logs
    "no labelled feedback: retraining on the base data only" and outputs `feedback_snapshots`
    as given. Labels are held to those of the model in production (`deploy_target`,
    `model_repository`, `kserve_namespace`); with none in production, to `allowed_labels`
    when set, else to the base `data`'s labels. The snapshot goes under `feedback_dir`, empty:
    `<output_dir>/feedback` beside the model repository (`<output_dir>/models`); on a cluster
    (its artifacts in an object store) it must be an object-store URI.

    The settings are `FeedbackSettings`, `FeedbackSnapshotsSettings`, `DataSettings`,
    `ValidationSettings` (of which `redact_pii` and `allowed_labels` are read here; its data
    checks are the validate step's) and `ProductionModelSettings`, each checked first.

    Returns the snapshot URIs to merge, as the output parameter `snapshots`; `summary`'s
    metadata records the fresh snapshot (uri, fingerprint, rows, window, label counts).
    """
    # The inputs, before anything else is bound: they are checked by their settings models.
    parameters = dict(locals())

    import logging
    import os
    from collections import namedtuple
    from pathlib import Path

    from textops.components.common import production_model
    from textops.components.common.cluster_run import on_a_cluster
    from textops.components.common.logs import configure_logging
    from textops.components.common.settings import (
        DataSettings,
        FeedbackSettings,
        ProductionModelSettings,
        ValidationSettings,
        section_from,
    )
    from textops.components.monitor import feedback
    from textops.components.monitor.collector_cli import STORE_URL_ENV

    # kfp reads the output's name from the returned tuple's field (the component's source
    # runs alone in its pod: a class declared beside it would not be there).
    FeedbackOutputs = namedtuple("FeedbackOutputs", ["snapshots"])
    configure_logging()
    for section in (FeedbackSettings, DataSettings, ValidationSettings, ProductionModelSettings):
        section_from(section, parameters)  # the values are used as given, once checked
    given = [str(uri) for uri in feedback_snapshots]
    store_url = feedback_store_url or os.environ.get(STORE_URL_ENV, "")
    if not store_url:
        logging.getLogger(__name__).info("%s (no payload store)", feedback.NO_FEEDBACK_MESSAGE)
        summary.metadata.update({"snapshot": None, "snapshots": given})
        return FeedbackOutputs(given)
    directory = feedback.default_feedback_dir(feedback_dir, str(Path(model_repository).parent))
    if on_a_cluster(summary.uri):
        feedback.check_feedback_dir_on_a_cluster(directory)

    target = production_model.production_target(deploy_target, model_repository, kserve_namespace)
    snapshot = feedback.collect_snapshot(store_url, directory, parameters, target)
    snapshots = feedback.snapshot_uris(snapshot, given)
    summary.metadata.update(
        {
            "snapshot": None if snapshot is None else {"uri": snapshot.uri, **snapshot.metadata},
            "snapshots": snapshots,
        }
    )
    return FeedbackOutputs(snapshots)
