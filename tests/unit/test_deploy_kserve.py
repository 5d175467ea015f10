"""Rolling bundles out to a KServe InferenceService: create, re-run, canary, rollback, errors.

No cluster runs here. The rollout gets a real `kserve.KServeClient` whose Kubernetes
`CustomObjectsApi` is an autospec of the real class (a call the real client would refuse
fails here too), driven by `FakeInferenceServices`: an in-memory API server plus a small
KServe controller. It stores what the real client would send (serialized by the real
`ApiClient`), applies JSON merge patches, honours resourceVersion preconditions, bumps the
generation on spec changes, and on a later read reconciles the status: revisions, Ready
conditions, model load failures and the canary traffic split.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from kubernetes.client import ApiClient, Configuration, CustomObjectsApi
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import MaxRetryError

from textops.components.common.errors import ConfigError, DeployError, PublishError
from textops.components.common.kubernetes_api import resolve_namespace
from textops.components.common.settings import DeploySettings
from textops.components.deploy.deployment import deploy_bundle, storage_uri_for
from textops.components.deploy.kserve_rollout import InferenceServiceRollout, RolloutResult

NAME = "textops-classifier"
NAMESPACE = "textops"
HISTORY = "textops.dev/history"
OLD = "s3://mlpipeline/v2/artifacts/textops-training/run-1/export-model/bundle"
NEW = "s3://mlpipeline/v2/artifacts/textops-training/run-2/export-model/bundle"
TIMEOUT = 60.0
KUBECONFIG = {
    "apiVersion": "v1",
    "kind": "Config",
    # Never contacted: the HTTP layer is replaced below.
    "clusters": [{"name": "test", "cluster": {"server": "https://127.0.0.1:9"}}],
    "users": [{"name": "test", "user": {"token": "test-token"}}],
    "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
    "current-context": "test",
}


def api_error(status: int, reason: str, message: str) -> ApiException:
    error = ApiException(status=status, reason=reason)
    error.body = json.dumps(
        {"kind": "Status", "status": "Failure", "message": message, "code": status}
    )
    return error


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch, as the API server applies `application/merge-patch+json`."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


@dataclass
class Controller:
    """KServe's view of one InferenceService: its revisions and which gets traffic."""

    revisions: list[tuple[str, str]] = field(default_factory=list)  # (name, storageUri)
    ready_revision: str | None = None
    rolled_out: str | None = None
    previous_rolled_out: str | None = None
    started: set[str] = field(default_factory=set)  # "slow" revisions seen starting


class FakeInferenceServices:
    """The Kubernetes API for InferenceServices, and a controller that reconciles on reads.

    `behaviour[storage_uri]` says what a revision of that bundle does: "ready", "fail" (the
    model does not load), "hang" (never Ready) or "slow" (Ready one reconcile later, as a pod
    start takes). `fail_next[verb]` queues errors for the next calls of a verb (None lets a
    call through).

    Traffic is routed as KServe asks Knative to: the canary's share, or all of it when there
    is no canary, goes to the latest *Ready* revision (`latestRevision: true`), the rest to
    the revision rolled out last; `canaryTrafficPercent: 0` keeps it all there.
    """

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.controllers: dict[tuple[str, str], Controller] = {}
        self.behaviour: dict[str, str] = {}
        self.fail_next: dict[str, list[BaseException | None]] = {}
        self.writes: list[tuple[str, dict[str, Any]]] = []
        self.traffic_history: list[dict[str, int]] = []
        self.conflicts = 0
        self.before_patch: list[Any] = []  # callables run before the next patches
        self.created_by_someone_else: str | None = None
        self._resource_version = 100
        self._serializer = ApiClient()

    # --- the API ---------------------------------------------------------------------------

    def get(self, group: str, version: str, namespace: str, plural: str, name: str) -> Any:
        self._check(group, version, plural)
        self._maybe_fail("get")
        obj = self._find(namespace, name)
        self._reconcile(namespace, name)
        return copy.deepcopy(obj)

    def create(self, group: str, version: str, namespace: str, plural: str, body: Any) -> Any:
        self._check(group, version, plural)
        if self.created_by_someone_else is not None:
            self.put(body.metadata.name, self.created_by_someone_else, namespace=namespace)
            self.created_by_someone_else = None
        self._maybe_fail("create")
        document = self._serializer.sanitize_for_serialization(body)
        name = document["metadata"]["name"]
        if (namespace, name) in self.objects:
            raise api_error(
                409, "Conflict", f'inferenceservices.serving.kserve.io "{name}" already exists'
            )
        self.writes.append(("create", copy.deepcopy(document)))
        document["metadata"].update(generation=1, resourceVersion=self._next_version())
        document["status"] = {}
        self.objects[(namespace, name)] = document
        self.controllers[(namespace, name)] = Controller()
        return copy.deepcopy(document)

    def patch(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: Any
    ) -> Any:
        self._check(group, version, plural)
        if self.before_patch:
            self.before_patch.pop(0)()
        self._maybe_fail("patch")
        obj = self._find(namespace, name)
        document = self._serializer.sanitize_for_serialization(body)
        self.writes.append(("patch", copy.deepcopy(document)))
        expected = (document.get("metadata") or {}).get("resourceVersion")
        if expected is not None and expected != obj["metadata"]["resourceVersion"]:
            self.conflicts += 1
            raise api_error(
                409,
                "Conflict",
                "Operation cannot be fulfilled: the object has been modified; please apply "
                "your changes to the latest version and try again",
            )
        document.get("metadata", {}).pop("resourceVersion", None)
        patched = merge_patch(obj, document)
        if patched["spec"] != obj["spec"]:
            patched["metadata"]["generation"] += 1
        patched["metadata"]["resourceVersion"] = self._next_version()
        self.objects[(namespace, name)] = patched
        return copy.deepcopy(patched)

    # --- helpers for tests -----------------------------------------------------------------

    def put(self, name: str, storage_uri: str, *, namespace: str = NAMESPACE, **spec: Any) -> None:
        """An InferenceService a deploy made earlier, reconciled and serving `storage_uri`."""
        from textops.components.deploy.isvc import ModelRollout, inference_service

        version = spec.pop("version", 1)
        body = inference_service(name, namespace, ModelRollout(storage_uri, version, **spec))
        document = self._serializer.sanitize_for_serialization(body)
        document["metadata"].update(generation=1, resourceVersion=self._next_version())
        document["status"] = {}
        self.objects[(namespace, name)] = document
        self.controllers[(namespace, name)] = Controller()
        self._reconcile(namespace, name, at_once=True)

    def spec(self, name: str = NAME) -> dict[str, Any]:
        return self.objects[(NAMESPACE, name)]

    def serving(self, name: str = NAME) -> dict[str, int]:
        """storageUri -> percent of traffic, as the last reconcile routed it."""
        return self._traffic_by_uri(NAMESPACE, name)

    def bump_resource_version(self, name: str = NAME) -> None:
        """What a status update by the controller does to the object."""
        self.objects[(NAMESPACE, name)]["metadata"]["resourceVersion"] = self._next_version()

    # --- internals -------------------------------------------------------------------------

    @staticmethod
    def _check(group: str, version: str, plural: str) -> None:
        assert (group, version, plural) == ("serving.kserve.io", "v1beta1", "inferenceservices")

    def _maybe_fail(self, verb: str) -> None:
        queue = self.fail_next.get(verb)
        if queue:
            error = queue.pop(0)
            if error is not None:
                raise error

    def _find(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            return self.objects[(namespace, name)]
        except KeyError:
            raise api_error(
                404, "Not Found", f'inferenceservices.serving.kserve.io "{name}" not found'
            ) from None

    def _next_version(self) -> str:
        self._resource_version += 1
        return str(self._resource_version)

    def _reconcile(self, namespace: str, name: str, *, at_once: bool = False) -> None:
        obj = self.objects[(namespace, name)]
        status = obj.setdefault("status", {})
        generation = obj["metadata"]["generation"]
        if status.get("observedGeneration", 0) >= generation and not status.get("_starting"):
            return
        if not at_once and not status.pop("_seen", False):
            status["_seen"] = True  # the controller picks the change up on the next read
            return
        controller = self.controllers[(namespace, name)]
        predictor = obj["spec"]["predictor"]
        uri = predictor["model"]["storageUri"]
        canary = predictor.get("canaryTrafficPercent")
        if not controller.revisions or controller.revisions[-1][1] != uri:
            controller.revisions.append(
                (f"{name}-predictor-{len(controller.revisions) + 1:05d}", uri)
            )
        latest = controller.revisions[-1][0]
        behaviour = self.behaviour.get(uri, "ready")
        starting = behaviour == "slow" and latest not in controller.started
        if behaviour == "slow":
            behaviour = "hang" if starting else "ready"
            controller.started.add(latest)
        conditions: list[dict[str, Any]]
        model_status: dict[str, Any] = {"transitionStatus": "UpToDate"}
        if behaviour == "ready":
            controller.ready_revision = latest
            conditions = [
                {"type": t, "status": "True"} for t in ("IngressReady", "PredictorReady", "Ready")
            ]
            split = (
                canary is not None and canary < 100 and controller.rolled_out not in (None, latest)
            )
            if split:
                traffic = [
                    {"revisionName": controller.rolled_out, "percent": 100 - canary, "tag": "prev"},
                    {"revisionName": latest, "percent": canary, "latestRevision": True},
                ]
            else:
                if controller.rolled_out != latest:
                    controller.previous_rolled_out = controller.rolled_out
                controller.rolled_out = latest
                traffic = [{"revisionName": latest, "percent": 100, "latestRevision": True}]
        else:
            message = (
                f'Revision "{latest}" failed with message: ModelNotFoundError: no model.onnx'
                if behaviour == "fail"
                else f'Revision "{latest}" is waiting for its pods'
            )
            reason = "RevisionFailed" if behaviour == "fail" else "Deploying"
            state = "False" if behaviour == "fail" else "Unknown"
            conditions = [
                {"type": "IngressReady", "status": "True"},
                {"type": "PredictorReady", "status": state, "reason": reason, "message": message},
                {"type": "Ready", "status": state, "reason": reason, "message": message},
            ]
            if behaviour == "fail":
                model_status = {
                    "transitionStatus": "BlockedByFailedLoad",
                    "lastFailureInfo": {"reason": "ModelLoadFailed", "message": message},
                }
            traffic = self._route_while_starting(controller, canary)
        obj["status"] = {
            "observedGeneration": generation,
            "url": f"http://{name}.{namespace}.example.com",
            "conditions": conditions,
            "modelStatus": model_status,
            "components": {
                "predictor": {
                    "latestCreatedRevision": latest,
                    "latestReadyRevision": controller.ready_revision,
                    "latestRolledoutRevision": controller.rolled_out,
                    "previousRolledoutRevision": controller.previous_rolled_out,
                    "traffic": traffic,
                }
            },
        }
        if starting:
            obj["status"]["_starting"] = True  # Ready at the next reconcile
        self.traffic_history.append(self._traffic_by_uri(namespace, name))

    @staticmethod
    def _route_while_starting(controller: Controller, canary: int | None) -> list[dict[str, Any]]:
        """Traffic while the latest revision is not Ready: KServe's split, Knative's routing."""
        share = 100 if canary is None else canary
        targets = [(controller.rolled_out, 100 - share), (controller.ready_revision, share)]
        traffic: list[dict[str, Any]] = []
        for revision, percent in targets:
            if revision is None or not percent:
                continue
            if traffic and traffic[-1]["revisionName"] == revision:
                traffic[-1]["percent"] += percent
            else:
                traffic.append({"revisionName": revision, "percent": percent})
        return traffic

    def _traffic_by_uri(self, namespace: str, name: str) -> dict[str, int]:
        uris = dict(self.controllers[(namespace, name)].revisions)
        traffic = self.objects[(namespace, name)]["status"]["components"]["predictor"]["traffic"]
        shares: dict[str, int] = {}
        for target in traffic:  # two revisions may serve one bundle (a rollback starts anew)
            uri = uris[target["revisionName"]]
            shares[uri] = shares.get(uri, 0) + target["percent"]
        return {uri: share for uri, share in shares.items() if share}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.now += seconds


@pytest.fixture
def fake() -> FakeInferenceServices:
    return FakeInferenceServices()


@contextlib.contextmanager
def kserve_client_over(fake: FakeInferenceServices) -> Iterator[Any]:
    """A real KServeClient whose CustomObjectsApi is an autospec driven by `fake`."""
    from kserve import KServeClient

    saved = Configuration.get_default_copy()
    try:
        kserve = KServeClient(config_dict=KUBECONFIG)
        api = mock.create_autospec(CustomObjectsApi, instance=True)
        api.get_namespaced_custom_object.side_effect = fake.get
        api.create_namespaced_custom_object.side_effect = fake.create
        api.patch_namespaced_custom_object.side_effect = fake.patch
        kserve.api_instance = api
        yield kserve
    finally:
        Configuration.set_default(saved)  # loading the kubeconfig changed the process default


@pytest.fixture
def client(fake: FakeInferenceServices) -> Iterator[Any]:
    """A real KServeClient whose CustomObjectsApi is an autospec driven by `fake`."""
    with kserve_client_over(fake) as kserve:
        yield kserve


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def rollout(client: Any, clock: FakeClock) -> InferenceServiceRollout:
    return InferenceServiceRollout(
        client,
        NAME,
        NAMESPACE,
        timeout_seconds=TIMEOUT,
        poll_seconds=5.0,
        sleep=clock.sleep,
        monotonic=clock.monotonic,
    )


def annotations(fake: FakeInferenceServices) -> dict[str, str]:
    return fake.spec()["metadata"].get("annotations") or {}


def predictor(fake: FakeInferenceServices) -> dict[str, Any]:
    return fake.spec()["spec"]["predictor"]


def without_history(fake: FakeInferenceServices) -> dict[str, str]:
    return {k: v for k, v in annotations(fake).items() if k != HISTORY}


def served_history(fake: FakeInferenceServices) -> list[dict[str, Any]]:
    periods: list[dict[str, Any]] = json.loads(annotations(fake)[HISTORY])
    return periods


# --- create, re-run -------------------------------------------------------------------------


def test_the_first_rollout_creates_the_inference_service_in_the_shared_shape(
    rollout: InferenceServiceRollout, fake: FakeInferenceServices
) -> None:
    result = rollout.roll_out(OLD, canary_traffic_percent=10)

    assert result == RolloutResult(
        "created", NAME, NAMESPACE, OLD, 1, f"http://{NAME}.{NAMESPACE}.example.com"
    )
    [(verb, body)] = fake.writes
    assert verb == "create"
    [first] = json.loads(body["metadata"]["annotations"].pop(HISTORY))
    assert first == {**first, "version": 1, "storageUri": OLD, "to": None, "via": "rollout"}
    assert set(first) == {"version", "storageUri", "from", "to", "via"}
    assert body == {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": NAME,
            "namespace": NAMESPACE,
            "labels": {"app.kubernetes.io/part-of": "textops"},
            "annotations": {"textops.dev/model-version": "1"},
        },
        "spec": {
            "predictor": {
                # No canary on a first rollout: there is nothing to split traffic with.
                "model": {
                    "name": "",
                    "modelFormat": {"name": "textops-bundle"},
                    "runtime": "textops-onnx",
                    "storageUri": OLD,
                    # The predictor reports the version the annotation names.
                    "args": ["--model-version", "1"],
                },
                "logger": {
                    "mode": "all",
                    "url": "http://textops-collector.textops.svc.cluster.local:8088/events",
                },
            }
        },
    }
    assert fake.serving() == {OLD: 100}


def test_running_again_with_the_same_bundle_changes_nothing(
    rollout: InferenceServiceRollout, fake: FakeInferenceServices
) -> None:
    first = rollout.roll_out(OLD)
    writes = list(fake.writes)
    before = copy.deepcopy(fake.spec())

    again = rollout.roll_out(OLD)
    third = rollout.roll_out(OLD, canary_traffic_percent=25)

    assert first.action == "created"
    assert again.action == third.action == "unchanged"
    assert again.version == third.version == 1
    assert fake.writes == writes
    assert fake.spec() == before


def test_a_hand_edited_logger_is_written_back_without_a_new_version(
    rollout: InferenceServiceRollout, fake: FakeInferenceServices
) -> None:
    fake.put(NAME, OLD, version=4)
    predictor(fake)["logger"]["url"] = "http://elsewhere:8080/"

    result = rollout.roll_out(OLD)

    assert result.action == "updated" and result.version == 4
    assert predictor(fake)["logger"]["url"].startswith("http://textops-collector.textops.svc")
    assert annotations(fake)["textops.dev/model-version"] == "4"


# --- canary, promotion ----------------------------------------------------------------------


def test_a_new_bundle_gets_its_canary_share_then_all_traffic(
    rollout: InferenceServiceRollout, fake: FakeInferenceServices
) -> None:
    fake.put(NAME, OLD, version=3)

    result = rollout.roll_out(NEW, canary_traffic_percent=10)

    assert result.action == "updated"
    assert result.version == 4
    assert result.previous_storage_uri == OLD
    canary_patch, promotion = [body for verb, body in fake.writes if verb == "patch"]
    assert canary_patch["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert canary_patch["spec"]["predictor"]["model"]["storageUri"] == NEW
    assert canary_patch["spec"]["predictor"]["model"]["args"] == ["--model-version", "4"]
    canary_history = json.loads(canary_patch["metadata"]["annotations"].pop(HISTORY))
    assert canary_patch["metadata"]["annotations"] == {
        "textops.dev/model-version": "4",
        "textops.dev/previous-storage-uri": OLD,
    }
    # Both serve while the canary runs; the one before the record began, since an unknown time.
    assert [
        (p["version"], p["storageUri"], p["from"] is None, p["to"]) for p in canary_history
    ] == [
        (3, OLD, True, None),
        (4, NEW, False, None),
    ]
    assert promotion["spec"]["predictor"]["canaryTrafficPercent"] == 100
    # The canary ran before the promotion: 90/10 first, then all to the new bundle.
    assert {OLD: 90, NEW: 10} in fake.traffic_history
    assert fake.traffic_history.index({OLD: 90, NEW: 10}) < fake.traffic_history.index({NEW: 100})
    assert fake.serving() == {NEW: 100}
    assert without_history(fake) == {"textops.dev/model-version": "4"}  # the undo note is cleared
    old, new = served_history(fake)
    assert (old["version"], old["endedBy"], new["version"], new["to"]) == (3, "rollout", 4, None)
    assert rollout.roll_out(NEW, canary_traffic_percent=10).action == "unchanged"


@pytest.mark.parametrize("percent", [0, 100])
def test_without_a_canary_share_all_traffic_moves_at_once(
    rollout: InferenceServiceRollout, fake: FakeInferenceServices, percent: int
) -> None:
    fake.put(NAME, OLD)

    result = rollout.roll_out(NEW, canary_traffic_percent=percent)

    [(verb, body)] = fake.writes
    assert verb == "patch"
    assert body["spec"]["predictor"]["canaryTrafficPercent"] == 100
    assert result.version == 2
    assert all(len(split) == 1 for split in fake.traffic_history)
    assert fake.serving() == {NEW: 100}


def test_an_interrupted_canary_is_promoted_by_the_next_run(
    rollout: InferenceServiceRollout, fake: FakeInferenceServices
) -> None:
    fake.put(NAME, OLD)
    fake.spec()["metadata"]["generation"] += 1  # the step was killed after its first patch
    predictor(fake).update(
        canaryTrafficPercent=10, model={**predictor(fake)["model"], "storageUri": NEW}
    )
    annotations(fake).update(
        {"textops.dev/model-version": "2", "textops.dev/previous-storage-uri": OLD}
    )

    result = rollout.roll_out(NEW, canary_traffic_percent=10)

    assert result.action == "updated" and result.version == 2
    assert fake.serving() == {NEW: 100}
    assert predictor(fake)["canaryTrafficPercent"] == 100


# --- failure, timeout, rollback -------------------------------------------------------------


def test_a_canary_that_fails_to_load_is_rolled_back(
    rollout: InferenceServiceRollout, fake: FakeInferenceServices
) -> None:
    fake.put(NAME, OLD, version=3)
    fake.behaviour[NEW] = "fail"

    with pytest.raises(DeployError) as raised:
        rollout.roll_out(NEW, canary_traffic_percent=10)

    message = str(raised.value)
    assert f"rolling out {NEW} to InferenceService {NAMESPACE}/{NAME} failed" in message
    assert "the canary failed" in message
    assert "BlockedByFailedLoad" in message and "ModelNotFoundError: no model.onnx" in message
    assert f"the previous model ({OLD}, version 3) is still serving" in message
    assert predictor(fake)["model"]["storageUri"] == OLD
    assert predictor(fake)["canaryTrafficPercent"] == 100
    assert without_history(fake) == {"textops.dev/model-version": "3"}
    old, canary = served_history(fake)  # the model before it served throughout
    assert (old["storageUri"], old["to"]) == (OLD, None)
    assert (canary["storageUri"], canary["endedBy"]) == (NEW, "restore")
    assert predictor(fake)["model"]["args"] == ["--model-version", "3"]
    assert fake.serving() == {OLD: 100}
    assert all(NEW not in split or split[NEW] < 100 for split in fake.traffic_history)


def test_a_new_model_that_never_becomes_ready_times_out_and_is_rolled_back(
    rollout: InferenceServiceRollout, fake: FakeInferenceServices, clock: FakeClock
) -> None:
    fake.put(NAME, OLD)
    fake.behaviour[NEW] = "hang"
    started = clock.now

    with pytest.raises(DeployError, match=r"did not become Ready within 60 s") as raised:
        rollout.roll_out(NEW)

    assert "is waiting for its pods" in str(raised.value)
    assert "still serving" in str(raised.value)
    assert clock.now - started >= TIMEOUT
    assert predictor(fake)["model"]["storageUri"] == OLD
    assert fake.serving() == {OLD: 100}


def test_an_api_failure_during_promotion_rolls_back(
    rollout: InferenceServiceRollout, fake: FakeInferenceServices
) -> None:
    fake.put(NAME, OLD)
    fake.fail_next["patch"] = [None, api_error(500, "Internal Server Error", "etcdserver: timeout")]

    with pytest.raises(DeployError) as raised:
        rollout.roll_out(NEW, canary_traffic_percent=20)

    message = str(raised.value)
    assert "the promoted model: cannot patch" in message
    assert "500 Internal Server Error: etcdserver: timeout" in message
    assert "Rolled back" in message
    assert fake.serving() == {OLD: 100}


def test_a_rollback_that_cannot_be_written_says_how_to_restore_by_hand(
    rollout: InferenceServiceRollout, fake: FakeInferenceServices
) -> None:
    fake.put(NAME, OLD)
    fake.behaviour[NEW] = "fail"
    forbidden = api_error(403, "Forbidden", "quota exceeded")
    fake.fail_next["patch"] = [None, forbidden]

    with pytest.raises(DeployError) as raised:
        rollout.roll_out(NEW, canary_traffic_percent=10)

    message = str(raised.value)
    assert "Putting the previous model back failed too" in message
    assert f"kubectl patch inferenceservice -n {NAMESPACE} {NAME} --type merge" in message
    assert f'"storageUri":"{OLD}"' in message


def test_a_first_model_that_fails_is_reported_with_nothing_to_roll_back(
    rollout: InferenceServiceRollout, fake: FakeInferenceServices
) -> None:
    fake.behaviour[OLD] = "fail"

    with pytest.raises(DeployError, match="nothing to roll back to") as raised:
        rollout.roll_out(OLD)

    assert "failed: BlockedByFailedLoad: Revision" in str(raised.value)
    assert [verb for verb, _ in fake.writes] == ["create"]


def test_a_transient_api_error_while_waiting_is_retried(
    rollout: InferenceServiceRollout, fake: FakeInferenceServices
) -> None:
    fake.put(NAME, OLD)
    unavailable = api_error(503, "Service Unavailable", "the server is currently unable")
    # The rollout's first read passes; the first poll after the patch meets a 503.
    fake.fail_next["get"] = [None, unavailable]

    assert rollout.roll_out(NEW).version == 2
    assert fake.serving() == {NEW: 100}


# --- conflicts ------------------------------------------------------------------------------


def test_a_conflicting_write_is_read_again_and_retried(
    rollout: InferenceServiceRollout, fake: FakeInferenceServices
) -> None:
    fake.put(NAME, OLD)
    fake.before_patch.append(fake.bump_resource_version)  # a status update lands in between

    result = rollout.roll_out(NEW)

    assert fake.conflicts == 1
    assert result.version == 2
    assert fake.serving() == {NEW: 100}


def test_another_rollout_in_between_is_not_overwritten(
    rollout: InferenceServiceRollout, fake: FakeInferenceServices
) -> None:
    other = "s3://mlpipeline/v2/artifacts/textops-training/run-9/export-model/bundle"
    fake.put(NAME, OLD)

    def someone_else_rolls_out() -> None:
        predictor(fake)["model"]["storageUri"] = other
        fake.spec()["metadata"]["generation"] += 1
        fake.bump_resource_version()

    fake.before_patch.append(someone_else_rolls_out)

    with pytest.raises(DeployError, match="nothing was changed") as raised:
        rollout.roll_out(NEW)

    assert f"someone else changed InferenceService {NAMESPACE}/{NAME}" in str(raised.value)
    assert other in str(raised.value)
    assert predictor(fake)["model"]["storageUri"] == other


def test_a_create_that_loses_a_race_rolls_out_onto_the_winner(
    rollout: InferenceServiceRollout, fake: FakeInferenceServices
) -> None:
    fake.created_by_someone_else = OLD  # another run created it between our read and write

    result = rollout.roll_out(NEW)

    assert result.action == "updated" and result.version == 2
    rollout.client.api_instance.create_namespaced_custom_object.assert_called_once()
    assert [verb for verb, _ in fake.writes] == ["patch"]  # the refused create stored nothing
    assert fake.serving() == {NEW: 100}


# --- API errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("verb", "error", "expected"),
    [
        (
            "get",
            api_error(403, "Forbidden", "cannot get resource inferenceservices"),
            "runs as needs get, create and patch on inferenceservices.serving.kserve.io in "
            "textops: apply manifests/pipeline-rbac",
        ),
        (
            "create",
            api_error(404, "Not Found", "the server could not find the requested resource"),
            "Is KServe installed",
        ),
        (
            "create",
            api_error(400, "Bad Request", "specified runtime textops-onnx does not exist"),
            "the cluster rejected the InferenceService: 400 Bad Request: specified runtime",
        ),
        (
            "get",
            MaxRetryError(None, "/apis/serving.kserve.io", ConnectionRefusedError(111, "refused")),
            "cannot reach the Kubernetes API server",
        ),
    ],
    ids=["forbidden", "no-crd", "rejected", "unreachable"],
)
def test_api_errors_say_what_failed_and_that_nothing_changed(
    rollout: InferenceServiceRollout,
    fake: FakeInferenceServices,
    verb: str,
    error: BaseException,
    expected: str,
) -> None:
    fake.fail_next[verb] = [error]

    with pytest.raises(DeployError) as raised:
        rollout.roll_out(NEW)

    message = str(raised.value)
    assert expected in message
    assert f"cannot {verb} InferenceService {NAMESPACE}/{NAME}" in message
    assert message.endswith("nothing was changed")
    assert fake.objects == {}


@pytest.mark.parametrize("percent", [-1, 101])
def test_a_canary_share_out_of_range_is_a_config_error(
    rollout: InferenceServiceRollout, percent: int
) -> None:
    with pytest.raises(ConfigError, match="between 0 and 100"):
        rollout.roll_out(NEW, canary_traffic_percent=percent)


# --- namespace, storageUri, the deploy step -------------------------------------------------


def test_the_namespace_comes_from_the_setting_or_the_pods_service_account(
    tmp_path: Path,
) -> None:
    namespace_file = tmp_path / "namespace"
    assert resolve_namespace("team-a", "kserve_namespace", namespace_file) == "team-a"
    with pytest.raises(ConfigError, match="outside a Kubernetes pod, set kserve_namespace"):
        resolve_namespace("", "kserve_namespace", namespace_file)
    namespace_file.write_text("ml-prod\n")
    assert resolve_namespace("", "kserve_namespace", namespace_file) == "ml-prod"


@pytest.mark.parametrize(
    ("artifact", "storage_uri"),
    [
        ("minio://mlpipeline/v2/artifacts/run/bundle", "s3://mlpipeline/v2/artifacts/run/bundle"),
        ("s3://bucket/run/bundle", "s3://bucket/run/bundle"),
        ("gs://bucket/run/bundle", "gs://bucket/run/bundle"),
    ],
)
def test_artifact_uris_become_storage_uris(artifact: str, storage_uri: str) -> None:
    assert storage_uri_for(artifact) == storage_uri


@pytest.mark.parametrize(
    ("artifact", "message"),
    [
        ("/work/.textops/runs/r/export-model/bundle", "use deploy_target 'local'"),
        ("ftp://h/b", "ftp"),
    ],
)
def test_artifacts_kserve_cannot_fetch_are_config_errors(artifact: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        storage_uri_for(artifact)


def test_the_deploy_step_rolls_the_bundle_artifact_out(
    client: Any, fake: FakeInferenceServices, tiny_bundle_dir: Path, tmp_path: Path
) -> None:
    url = deploy_bundle(
        bundle_path=tiny_bundle_dir,
        bundle_uri="minio://mlpipeline/v2/artifacts/run-1/bundle",
        model_repository=tmp_path / "models",
        model_name=NAME,
        deploy_target="kserve",
        settings=DeploySettings(
            canary_traffic_percent=10, rollout_timeout_seconds=60, canary_analysis_seconds=0
        ),
        kserve_namespace=NAMESPACE,
        client=client,
    )

    assert url == f"http://{NAME}.{NAMESPACE}.example.com"
    assert fake.serving() == {"s3://mlpipeline/v2/artifacts/run-1/bundle": 100}
    assert not (tmp_path / "models").exists()  # the kserve target publishes nothing locally


def test_the_deploy_step_refuses_an_altered_bundle_before_any_api_call(
    client: Any, fake: FakeInferenceServices, tiny_bundle_dir: Path, tmp_path: Path
) -> None:
    import shutil

    bundle = Path(shutil.copytree(tiny_bundle_dir, tmp_path / "bundle"))
    with (bundle / "model.onnx").open("ab") as handle:
        handle.write(b"\0")

    with pytest.raises(PublishError, match=r"model\.onnx changed since export"):
        deploy_bundle(
            bundle_path=bundle,
            bundle_uri="s3://mlpipeline/run-1/bundle",
            model_repository=tmp_path / "models",
            model_name=NAME,
            deploy_target="kserve",
            settings=DeploySettings(canary_traffic_percent=0),
            kserve_namespace=NAMESPACE,
            client=client,
        )
    assert fake.writes == []


def test_an_unknown_deploy_target_is_a_config_error(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown deploy_target 'seldon'"):
        deploy_bundle(
            bundle_path=tiny_bundle_dir,
            bundle_uri=str(tiny_bundle_dir),
            model_repository=tmp_path / "models",
            model_name=NAME,
            deploy_target="seldon",
            settings=DeploySettings(),
        )


def status_of(generation: int, observed: int, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation},
        "status": {"observedGeneration": observed, **status},
    }


READY = [{"type": "Ready", "status": "True"}]


@pytest.mark.parametrize(
    ("isvc", "ready", "failed", "message"),
    [
        (status_of(3, 2, conditions=READY), False, False, "not reconciled generation 3"),
        (status_of(3, 3, conditions=READY), True, False, "Ready"),  # RawDeployment: no revisions
        (
            status_of(
                3,
                3,
                conditions=READY,
                components={
                    "predictor": {"latestCreatedRevision": "r2", "latestReadyRevision": "r1"}
                },
            ),
            False,
            False,
            "revision r2 is not ready yet (r1 is)",
        ),
        (
            status_of(
                3,
                3,
                conditions=[
                    {
                        "type": "Ready",
                        "status": "False",
                        "reason": "ProgressDeadlineExceeded",
                        "message": "Initial scale was never achieved",
                    },
                ],
            ),
            False,
            True,
            "Ready=False ProgressDeadlineExceeded: Initial scale was never achieved",
        ),
        (
            status_of(
                3,
                3,
                modelStatus={
                    "transitionStatus": "InvalidSpec",
                    "lastFailureInfo": {"reason": "NoSupportingRuntime"},
                },
            ),
            False,
            True,
            "InvalidSpec: NoSupportingRuntime",
        ),
        (
            status_of(
                3,
                3,
                conditions=[{"type": "Ready", "status": "Unknown", "reason": "RevisionMissing"}],
            ),
            False,
            False,
            "Ready=Unknown RevisionMissing",
        ),
    ],
    ids=["stale", "raw-deployment", "revision-pending", "deadline", "invalid-spec", "creating"],
)
def test_readiness_reads_generation_conditions_revisions_and_model_status(
    isvc: dict[str, Any], ready: bool, failed: bool, message: str
) -> None:
    from textops.components.deploy.isvc import readiness

    judged = readiness(isvc, isvc["metadata"]["generation"])

    assert (judged.ready, judged.failed) == (ready, failed)
    assert message in judged.message
