"""The monitoring pipeline: drift -> (drift found) -> the training pipeline.

`detect-drift` compares a window of logged traffic with the model bundle's reference sample
(the logic of `textops drift`); when it finds drift, the training pipeline runs as a nested
pipeline inside `dsl.If`. Scheduled as a recurring run on Kubeflow, this is the retraining
loop. Its parameters are generated like the training pipeline's: the drift job's (`DriftJobSettings`
and `DriftSettings`: window, store, thresholds) followed by every parameter of the training
pipeline, with the same defaults, so a retraining started by drift is configured exactly as
`textops run` or a training run would be.
"""

import inspect
from typing import Any

from kfp import dsl

from textops.components.monitor.component import detect_drift
from textops.components.monitor.drift_settings import DriftJobSettings, DriftSettings
from textops.pipelines.cluster import use_artifact_store_credentials
from textops.pipelines.parameters import pipeline_function, settings_for, settings_parameters
from textops.pipelines.training import PARAMETERS as TRAINING_PARAMETERS
from textops.pipelines.training import training_pipeline, use_payload_store_url

PIPELINE_NAME = "textops-monitoring"

#: The drift job's parameters: its window and destinations, then its thresholds (the data
#: tests themselves are set in a drift settings file, not per run).
DRIFT_PARAMETERS: tuple[inspect.Parameter, ...] = (
    *settings_parameters(DriftJobSettings),
    *settings_parameters(DriftSettings, exclude={"tests"}),
)


def _monitoring(params: dict[str, Any]) -> None:
    # model_name and model_repository are shared: the model watched is the model retrained.
    drift = detect_drift(**settings_for(detect_drift, params)).set_display_name("drift")
    # Traffic changes from run to run: never answer from a cache.
    drift.set_caching_options(False)
    # The payload store's URL comes from the collector's Secret; `store_url` wins.
    use_payload_store_url(drift)
    # The bundle the InferenceService serves (deploy_target 'kserve') is in the object store.
    use_artifact_store_credentials(drift)
    with dsl.If(drift.outputs["Output"] == True, name="drift-found"):  # noqa: E712
        training_pipeline(**settings_for(training_pipeline, params))


monitoring_pipeline = dsl.pipeline(
    name=PIPELINE_NAME,
    description="Test a window of logged traffic for drift against the model's reference "
    "sample (Evidently) and, when drift is found, run the training pipeline.",
)(pipeline_function(_monitoring, DRIFT_PARAMETERS + TRAINING_PARAMETERS))
