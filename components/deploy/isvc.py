"""The InferenceService textops deploys: its shape, and what its status says.

The names are shared with the manifests (ServingRuntime `textops-onnx`, model format
`textops-bundle`, the collector's Service). Everything here works on the plain dicts the
Kubernetes API returns, except `inference_service`, which builds the KServe SDK's model object
that `KServeClient.create` and `KServeClient.patch` send.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from textops.components.common.production_model import (
    MODEL_VERSION_ANNOTATION,
    PREVIOUS_STORAGE_URI_ANNOTATION,
    ServedModel,
    read_served_model,
)
from textops.components.deploy.served_history import (
    HISTORY_ANNOTATION,
    ServedPeriod,
    format_periods,
    next_periods,
    parse_periods,
    utc_now,
    version_of_uri,
)

if TYPE_CHECKING:
    from kserve import V1beta1InferenceService

#: The ServingRuntime that runs textops bundles (manifests/base).
RUNTIME = "textops-onnx"
#: The model format the runtime declares in `supportedModelFormats`.
MODEL_FORMAT = "textops-bundle"
PART_OF_LABEL = "app.kubernetes.io/part-of"
PART_OF = "textops"
#: The payload collector's Service and port (components/monitor).
COLLECTOR_SERVICE = "textops-collector"
COLLECTOR_PORT = 8088

# Reasons that mean the new revision will not become Ready without a change to the spec.
# RevisionMissing is left out: it is also what a revision reports while it is being created.
_FAILED_REASONS = frozenset({"RevisionFailed", "ProgressDeadlineExceeded", "ContainerMissing"})
_FAILED_TRANSITIONS = frozenset({"BlockedByFailedLoad", "InvalidSpec"})


def collector_url(namespace: str) -> str:
    """Where the predictor's payload logger sends its CloudEvents."""
    return f"http://{COLLECTOR_SERVICE}.{namespace}.svc.cluster.local:{COLLECTOR_PORT}/events"


@dataclass(frozen=True)
class ModelRollout:
    """The model part of an InferenceService spec that one rollout step writes."""

    storage_uri: str
    version: int
    #: Share of traffic for the new revision; None sends it all (written as 100 on a patch,
    #: since a JSON merge patch built from SDK objects cannot remove a field).
    canary_traffic_percent: int | None = None
    #: What to put back if a canary fails; None clears the annotation.
    previous_storage_uri: str | None = None
    #: The change this write makes, as the served history records it (see served_history).
    via: str = "rollout"

    def traffic(self) -> dict[str, int]:
        """storageUri -> the share of traffic this spec sends it, once its revision is Ready.

        A canary share of 0 holds all traffic on the revision rolled out before (KServe's
        `latestRolledoutRevision`), the previous storageUri.
        """
        canary = self.canary_traffic_percent
        if canary is None or canary >= 100:
            return {self.storage_uri: 100}
        shares = {self.storage_uri: canary}
        if self.previous_storage_uri is not None:
            previous = self.previous_storage_uri
            shares[previous] = shares.get(previous, 0) + 100 - canary
        return shares


def inference_service(
    name: str,
    namespace: str,
    model: ModelRollout,
    *,
    resource_version: str | None = None,
    for_patch: bool = False,
    history: Sequence[ServedPeriod] | None = None,
) -> V1beta1InferenceService:
    """The InferenceService as textops writes it (the whole object, or a merge patch).

    Args:
        name: Its name (the model name).
        namespace: Its namespace.
        model: The bundle, version and traffic to write.
        resource_version: When given, the API server refuses the write (409 Conflict) if the
            object changed since it was read at that version.
        for_patch: Write `canaryTrafficPercent: 100` rather than leaving it out, and clear the
            previous-storageUri annotation with a null, as a merge patch needs.
        history: The served history before this write (`ServiceState.history`, empty for a
            new service); the history annotation then records the change. None leaves the
            annotation out.
    """
    from kserve import (
        V1beta1InferenceService,
        V1beta1InferenceServiceSpec,
        V1beta1LoggerSpec,
        V1beta1ModelFormat,
        V1beta1ModelSpec,
        V1beta1PredictorSpec,
        constants,
    )
    from kubernetes.client import V1ObjectMeta

    annotations: dict[str, str | None] = {MODEL_VERSION_ANNOTATION: str(model.version)}
    if model.previous_storage_uri is not None or for_patch:
        annotations[PREVIOUS_STORAGE_URI_ANNOTATION] = model.previous_storage_uri
    if history is not None:
        annotations[HISTORY_ANNOTATION] = format_periods(_recorded(history, model))
    canary = model.canary_traffic_percent
    if canary is None and for_patch:
        canary = 100
    return V1beta1InferenceService(
        api_version=constants.KSERVE_V1BETA1,
        kind=constants.KSERVE_KIND_INFERENCESERVICE,
        metadata=V1ObjectMeta(
            name=name,
            namespace=namespace,
            labels={PART_OF_LABEL: PART_OF},
            annotations=annotations,
            resource_version=resource_version,
        ),
        spec=V1beta1InferenceServiceSpec(
            predictor=V1beta1PredictorSpec(
                model=V1beta1ModelSpec(
                    model_format=V1beta1ModelFormat(name=MODEL_FORMAT),
                    runtime=RUNTIME,
                    storage_uri=model.storage_uri,
                    # The bundle lands in /mnt/models, a name without the version in it.
                    args=["--model-version", str(model.version)],
                ),
                canary_traffic_percent=canary,
                logger=V1beta1LoggerSpec(mode="all", url=collector_url(namespace)),
            )
        ),
    )


def _recorded(history: Sequence[ServedPeriod], model: ModelRollout) -> tuple[ServedPeriod, ...]:
    """The served history once `model` is written."""
    version_of = {model.storage_uri: model.version}
    previous = version_of_uri(history, model.previous_storage_uri)
    if model.previous_storage_uri is not None and previous is not None:
        version_of.setdefault(model.previous_storage_uri, previous)
    return next_periods(
        history,
        model.traffic(),
        version_of,
        via=model.via,
        now=utc_now(),
        target=model.storage_uri,
    )


@dataclass(frozen=True)
class ServiceState(ServedModel):
    """What an existing InferenceService's spec and metadata say (not its status): the model
    it serves (which `production_model` reads too) and what a rollout needs besides."""

    generation: int
    resource_version: str | None
    #: Runtime, model format, logger and label are the ones textops writes.
    has_textops_shape: bool
    #: When each version served (the history annotation); a service deployed before the
    #: annotation existed starts with its current model, served since an unknown time.
    history: tuple[ServedPeriod, ...] = ()

    @property
    def next_version(self) -> int:
        """The number for a new bundle: above every version served, so none is reused after
        a rollback."""
        return max([self.version, *(p.version for p in self.history)]) + 1


def read_state(isvc: Mapping[str, Any], namespace: str) -> ServiceState:
    """Read the model, version and traffic textops wrote into an InferenceService."""
    served = read_served_model(isvc)
    metadata = isvc.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    predictor = (isvc.get("spec") or {}).get("predictor") or {}
    model = predictor.get("model") or {}
    logger = predictor.get("logger") or {}
    shape = (
        model.get("runtime") == RUNTIME
        and (model.get("modelFormat") or {}).get("name") == MODEL_FORMAT
        and logger.get("mode") == "all"
        and logger.get("url") == collector_url(namespace)
        and (metadata.get("labels") or {}).get(PART_OF_LABEL) == PART_OF
    )
    history = parse_periods(
        annotations.get(HISTORY_ANNOTATION), f"{HISTORY_ANNOTATION} of {metadata.get('name')}"
    )
    if HISTORY_ANNOTATION not in annotations and served.storage_uri and served.version:
        history = (ServedPeriod(served.version, None, None, "unknown", None, served.storage_uri),)
    return ServiceState(
        **dataclasses.asdict(served),
        generation=_as_int(metadata.get("generation")),
        resource_version=metadata.get("resourceVersion"),
        has_textops_shape=bool(shape),
        history=history,
    )


def _as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


@dataclass(frozen=True)
class Readiness:
    """Whether the spec at a generation is served, will not be, or is still on its way."""

    ready: bool
    failed: bool
    message: str


def readiness(isvc: Mapping[str, Any], generation: int) -> Readiness:
    """Judge the status against the spec written at `generation`.

    Ready means the controller has seen that generation, the `Ready` condition is True and
    the latest revision created is the latest one ready (a canary's revision included).
    Failed means KServe or Knative report a failure that waiting will not cure: the model
    failed to load, the spec is invalid, or the revision failed.
    """
    status = isvc.get("status") or {}
    observed = _as_int(status.get("observedGeneration"))
    if observed < generation:
        return Readiness(
            False, False, f"the controller has not reconciled generation {generation} yet"
        )
    model_status = status.get("modelStatus") or {}
    if model_status.get("transitionStatus") in _FAILED_TRANSITIONS:
        failure = model_status.get("lastFailureInfo") or {}
        detail = failure.get("message") or failure.get("reason") or "no message"
        return Readiness(False, True, f"{model_status['transitionStatus']}: {detail}")
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if isinstance(c, dict)}
    for condition in conditions.values():
        if condition.get("status") == "False" and condition.get("reason") in _FAILED_REASONS:
            return Readiness(False, True, _describe(condition))
    ready = conditions.get("Ready") or {}
    predictor = (status.get("components") or {}).get("predictor") or {}
    created, serving = predictor.get("latestCreatedRevision"), predictor.get("latestReadyRevision")
    if ready.get("status") == "True" and created == serving:
        return Readiness(True, False, "Ready")
    if ready.get("status") == "True":
        return Readiness(False, False, f"revision {created} is not ready yet ({serving} is)")
    waiting = [c for c in conditions.values() if c.get("status") != "True"]
    message = "; ".join(_describe(c) for c in waiting) or "no Ready condition yet"
    return Readiness(False, False, message)


def _describe(condition: Mapping[str, Any]) -> str:
    text = f"{condition.get('type')}={condition.get('status')}"
    if condition.get("reason"):
        text += f" {condition['reason']}"
    if condition.get("message"):
        text += f": {condition['message']}"
    return text


def service_url(isvc: Mapping[str, Any]) -> str | None:
    """The URL the InferenceService answers at, once KServe has published one."""
    status = isvc.get("status") or {}
    url = status.get("url") or (status.get("address") or {}).get("url")
    return str(url) if url else None
