"""The monitoring pipeline: drift -> (drift found) -> the training pipeline.

`detect-drift` compares a window of logged traffic with the model bundle's reference sample
(the logic of `textops drift`); when it finds drift, the training pipeline runs as a nested
pipeline inside `dsl.If`. Scheduled as a recurring run on Kubeflow, this is the retraining
loop. Its parameters are the drift job's (window, thresholds, store) followed by every
parameter of the training pipeline, with the same defaults, so a retraining started by drift is
configured exactly as `textops run` or a training run would be.
"""

import inspect
from typing import Any

from kfp import dsl, kubernetes

from textops.components.common.cluster_run import PAYLOAD_STORE_SECRET, PAYLOAD_STORE_SECRET_KEY
from textops.components.monitor.collector_cli import STORE_URL_ENV
from textops.components.monitor.component import detect_drift
from textops.components.monitor.drift_settings import DriftSettings
from textops.pipelines.cluster import use_artifact_store_credentials
from textops.pipelines.training import training_pipeline

PIPELINE_NAME = "textops-monitoring"
_DRIFT = DriftSettings()

#: The drift job's parameters: (name, type, default).
DRIFT_PARAMETERS: tuple[tuple[str, type, Any], ...] = (
    ("store_url", str, ""),
    ("bundle", str, ""),
    ("since", str, "24h"),
    ("until", str, ""),
    ("last", int, 0),
    ("min_window_rows", int, _DRIFT.min_window_rows),
    ("family_alpha", float, _DRIFT.family_alpha),
    ("drift_share", float, _DRIFT.drift_share),
    ("min_labelled_rows", int, _DRIFT.min_labelled_rows),
    ("max_accuracy_drop", float, _DRIFT.max_accuracy_drop),
    ("max_macro_f1_drop", float, _DRIFT.max_macro_f1_drop),
    ("workspace", str, ""),
    ("pushgateway", str, ""),
)
#: The training pipeline's parameters, taken from its own signature (model_name and
#: model_repository are shared: the model watched is the model retrained).
TRAINING_PARAMETERS: tuple[inspect.Parameter, ...] = tuple(
    inspect.signature(training_pipeline.pipeline_func).parameters.values()
)


def _monitoring(*values: Any) -> None:
    # kfp calls a pipeline function with one argument per parameter of its signature, in
    # order; the signature is set below, from DRIFT_PARAMETERS and TRAINING_PARAMETERS.
    names = [name for name, _, _ in DRIFT_PARAMETERS] + [p.name for p in TRAINING_PARAMETERS]
    arguments = dict(zip(names, values, strict=True))
    drift = detect_drift(
        **{name: arguments[name] for name, _, _ in DRIFT_PARAMETERS},
        model_repository=arguments["model_repository"],
        model_name=arguments["model_name"],
        deploy_target=arguments["deploy_target"],
        kserve_namespace=arguments["kserve_namespace"],
    ).set_display_name("drift")
    # Traffic changes from run to run: never answer from a cache.
    drift.set_caching_options(False)
    kubernetes.use_secret_as_env(
        drift,
        # The payload store's URL carries a password, so it comes from the collector's Secret
        # (manifests/README.md, "Production") rather than a parameter; `store_url` wins.
        secret_name=PAYLOAD_STORE_SECRET,
        secret_key_to_env={PAYLOAD_STORE_SECRET_KEY: STORE_URL_ENV},
        optional=True,
    )
    # The bundle the InferenceService serves (deploy_target 'kserve') is in the object store.
    use_artifact_store_credentials(drift)
    with dsl.If(drift.outputs["Output"] == True, name="drift-found"):  # noqa: E712
        training_pipeline(**{p.name: arguments[p.name] for p in TRAINING_PARAMETERS})


_monitoring.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [
        inspect.Parameter(
            name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=kind
        )
        for name, kind, default in DRIFT_PARAMETERS
    ]
    + [p.replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD) for p in TRAINING_PARAMETERS]
)

monitoring_pipeline = dsl.pipeline(
    name=PIPELINE_NAME,
    description="Test a window of logged traffic for drift against the model's reference "
    "sample (Evidently) and, when drift is found, run the training pipeline.",
)(_monitoring)
