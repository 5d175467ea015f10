"""The Kubernetes API calls the pipeline's steps make are exactly `PIPELINE_PERMISSIONS`.

The calls are read from the code, two ways, and never typed here:

- Statically, every call site in components/ (with `ast`): a call of `call_api` (common's
  wrapper around API methods), of a `CustomObjectsApi` method, or of a `KServeClient` method
  on a client. Any other Kubernetes API (CoreV1Api, a watch, KServe's
  `core_api`) fails `test_no_other_kubernetes_api_is_used` until this test learns it.
- Dynamically, the steps' own functions run against `RecordingCluster`: an autospec of the real
  `CustomObjectsApi` (under a real `KServeClient` for deploy) that serves an in-memory cluster
  and records, for every call, the group, resource, verb and namespace, and the call site in
  components/ it came from.

Then every recorded call must be a row of `PIPELINE_PERMISSIONS` (verb, resource and the
namespace it was made in), every row must be used by some call, and every call site must be
reached by a scenario. A new call site therefore fails here until a scenario below runs it
and its permission is listed; manifests/pipeline-rbac grants the table
(tests/unit/manifests/test_manifests_pipeline_rbac.py).
"""

from __future__ import annotations

import ast
import copy
import functools
import inspect
import itertools
import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from kubernetes.client import ApiClient, Configuration, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from tests.s3_server import open_bucket, remove_bucket
from textops.components.common import kubernetes_api
from textops.components.common.errors import TrainingError
from textops.components.common.kubernetes_api import PIPELINE_PERMISSIONS
from textops.components.common.settings import DeploySettings

ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = ROOT / "components"
#: The namespace the scenarios give as kserve_namespace, and the one their pod runs in.
SERVING_NAMESPACE = "serving-ns"
PIPELINE_NAMESPACE = "pipeline-ns"
SCOPES = {SERVING_NAMESPACE: "kserve_namespace", PIPELINE_NAMESPACE: "pipeline"}
MODEL = "textops-classifier"

#: The methods of the client classes, from the installed clients.
CUSTOM_OBJECT_METHODS = frozenset(
    name
    for name, _ in inspect.getmembers(CustomObjectsApi, inspect.isfunction)
    if not name.startswith("_")
)
#: KServeClient's methods named like a dict's or a list's; called on a client they are API calls.
GENERIC_CLIENT_METHODS = frozenset({"get", "create", "patch", "replace", "delete"})


def _kserve_methods() -> frozenset[str]:
    from kserve import KServeClient

    return frozenset(
        name
        for name, _ in inspect.getmembers(KServeClient, inspect.isfunction)
        if not name.startswith("_")
    )


# --- call sites, from the source ---------------------------------------------------------------


@dataclass(frozen=True)
class CallSite:
    """A call in components/ that reaches the Kubernetes API: its file and lines."""

    path: str
    first_line: int
    last_line: int
    call: str

    def __str__(self) -> str:
        return f"{self.path}:{self.first_line} ({self.call})"


def _called_name(node: ast.Call) -> str:
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return node.func.id if isinstance(node.func, ast.Name) else ""


def _reaches_the_api(node: ast.Call, kserve_methods: frozenset[str]) -> bool:
    name = _called_name(node)
    if name == "call_api" or name in CUSTOM_OBJECT_METHODS:
        return True
    if not isinstance(node.func, ast.Attribute) or name not in kserve_methods:
        return False
    if name not in GENERIC_CLIENT_METHODS:
        return True
    # `self.client.patch(...)`, `client.get(...)`: not `settings.get(...)`.
    return ast.unparse(node.func.value).lower().endswith("client")


def _contains(outer: ast.AST, inner: ast.AST) -> bool:
    return outer is not inner and any(node is inner for node in ast.walk(outer))


@functools.cache
def call_sites() -> tuple[CallSite, ...]:
    """Every call in components/ that reaches the Kubernetes API; a method passed to
    `call_api` belongs to that call."""
    kserve_methods = _kserve_methods()
    sites = []
    for path in sorted(COMPONENTS.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        calls = [
            node
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and _reaches_the_api(node, kserve_methods)
        ]
        for node in calls:
            if not any(_contains(outer, node) for outer in calls):
                sites.append(
                    CallSite(
                        path.relative_to(ROOT).as_posix(),
                        node.lineno,
                        node.end_lineno or node.lineno,
                        ast.unparse(node.func),
                    )
                )
    return tuple(sites)


def _site_of(stack: traceback.StackSummary) -> CallSite | None:
    """The call site in components/ a call came through: the innermost frame in one."""
    for frame in reversed(stack):
        path = Path(frame.filename).resolve()
        if not path.is_relative_to(COMPONENTS) or frame.lineno is None:
            continue
        relative = path.relative_to(ROOT).as_posix()
        for site in call_sites():
            if site.path == relative and site.first_line <= frame.lineno <= site.last_line:
                return site
    return None


def test_the_scan_finds_the_known_call_sites() -> None:
    """A guard on the scan itself: it sees deploy's, the model in production's and train's
    calls."""
    found = {site.path for site in call_sites()}
    assert {
        "components/deploy/kserve_rollout.py",
        "components/common/production_model.py",
        "components/train/trainjob.py",
    } <= found


def _named(node: ast.AST) -> str | None:
    """The name a node uses: an attribute's, a name's, an import's, a keyword argument's
    (as `name=`)."""
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.alias):
        return node.asname or node.name.rsplit(".", 1)[-1]
    if isinstance(node, ast.keyword) and node.arg:
        return f"{node.arg}="
    return None


def test_no_other_kubernetes_api_is_used() -> None:
    """Only CustomObjectsApi (and KServeClient over it) are recorded by RecordingCluster; any
    other API class, a watch (KServe's `watch=True` opens a client of its own), or
    KServeClient's core_api must be taught to this test first."""
    import kubernetes.client

    unrecorded = {
        name
        for name in dir(kubernetes.client)
        if name.endswith("Api") and name not in ("CustomObjectsApi", "ApiClient")
    } | {"Watch", "core_api", "watch="}
    unknown = [
        f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')} {_named(node)}"
        for path in sorted(COMPONENTS.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if _named(node) in unrecorded
    ]
    assert not unknown, (
        f"Kubernetes APIs this test does not record: {unknown}. Record them in "
        "RecordingCluster and list their permissions in PIPELINE_PERMISSIONS"
    )


# --- the recording cluster ---------------------------------------------------------------------


@dataclass(frozen=True)
class ApiCall:
    """One call the cluster received, as RBAC sees it, and the call site it came from."""

    group: str
    resource: str
    verb: str
    namespace: str | None
    site: CallSite | None


def _verb(method: str, options: dict[str, Any]) -> str:
    action = method.split("_", 1)[0]
    if action == "list" and options.get("watch"):
        return "watch"
    if method.startswith("delete_collection"):
        return "deletecollection"
    return {"replace": "update"}.get(action, action)


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


class RecordingCluster:
    """An in-memory cluster behind an autospec of the real `CustomObjectsApi`.

    Every method of the real class records the call and is served: get, create and patch of
    any custom object. Controllers answer at once: an InferenceService is Ready at each
    generation written, a TrainJob has completed by the time it is read.
    """

    def __init__(self) -> None:
        self.calls: list[ApiCall] = []
        self.objects: dict[tuple[str, str | None, str], dict[str, Any]] = {}
        self._versions = itertools.count(100)
        self._serializer = ApiClient()
        self.api = mock.create_autospec(CustomObjectsApi, instance=True)
        for method in CUSTOM_OBJECT_METHODS:
            getattr(self.api, method).side_effect = functools.partial(self._call, method)

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        signature = inspect.signature(getattr(CustomObjectsApi, method))
        arguments = signature.bind(None, *args, **kwargs).arguments
        options = arguments.get("kwargs", {})
        plural = str(arguments.get("plural", ""))
        resource = plural + next(
            (f"/{sub}" for sub in ("status", "scale") if method.endswith(f"_{sub}")), ""
        )
        verb = _verb(method, options)
        namespace = arguments.get("namespace")
        site = _site_of(traceback.extract_stack())
        self.calls.append(ApiCall(str(arguments.get("group")), resource, verb, namespace, site))
        if verb == "get":
            return self._get(plural, namespace, arguments["name"])
        if verb == "create":
            return self._create(plural, namespace, arguments["body"])
        if verb == "patch":
            return self._patch(plural, namespace, arguments["name"], arguments["body"])
        raise NotImplementedError(f"RecordingCluster does not serve {method} yet: add it")

    def _get(self, plural: str, namespace: str | None, name: str) -> dict[str, Any]:
        try:
            found = self.objects[(plural, namespace, name)]
        except KeyError:
            raise ApiException(status=404, reason="Not Found") from None
        if plural == "trainjobs":
            found["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
        return copy.deepcopy(found)

    def _create(self, plural: str, namespace: str | None, body: Any) -> dict[str, Any]:
        document = self._serializer.sanitize_for_serialization(body)
        key = (plural, namespace, document["metadata"]["name"])
        if key in self.objects:
            raise ApiException(status=409, reason="Conflict")
        document["metadata"].update(generation=1, resourceVersion=str(next(self._versions)))
        self.objects[key] = self._reconciled(plural, document)
        return copy.deepcopy(document)

    def _patch(self, plural: str, namespace: str | None, name: str, body: Any) -> dict[str, Any]:
        found = self._get(plural, namespace, name)
        patch = self._serializer.sanitize_for_serialization(body)
        patch.get("metadata", {}).pop("resourceVersion", None)
        patched = merge_patch(found, patch)
        if patched.get("spec") != found.get("spec"):
            patched["metadata"]["generation"] += 1
        patched["metadata"]["resourceVersion"] = str(next(self._versions))
        self.objects[(plural, namespace, name)] = self._reconciled(plural, patched)
        return copy.deepcopy(patched)

    @staticmethod
    def _reconciled(plural: str, document: dict[str, Any]) -> dict[str, Any]:
        if plural == "inferenceservices":
            generation = document["metadata"]["generation"]
            revision = f"{document['metadata']['name']}-predictor-{generation:05d}"
            document["status"] = {
                "observedGeneration": generation,
                "conditions": [{"type": "Ready", "status": "True"}],
                "components": {
                    "predictor": {
                        "latestCreatedRevision": revision,
                        "latestReadyRevision": revision,
                    }
                },
                "url": f"http://{document['metadata']['name']}.example.com",
            }
        return document


# --- scenarios: the steps' own code against the recording cluster ------------------------------

#: Never contacted: KServeClient only needs a configuration to start.
KUBECONFIG = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [{"name": "test", "cluster": {"server": "https://127.0.0.1:9"}}],
    "users": [{"name": "test", "user": {"token": "test-token"}}],
    "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
    "current-context": "test",
}


def deploy_twice(
    cluster: RecordingCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """deploy (kserve target): the first rollout creates, the next one patches, with a canary."""
    from kserve import KServeClient

    from textops.components.deploy import deployment

    # The bundle's files are checked before any API call (test_deploy_kserve.py); an empty
    # directory stands in for it here.
    monkeypatch.setattr(deployment, "verified_bundle", lambda path: Path(path))
    saved = Configuration.get_default_copy()
    try:
        client = KServeClient(config_dict=KUBECONFIG)
    finally:
        Configuration.set_default(saved)  # loading the kubeconfig changes the process default
    client.api_instance = cluster.api
    for run in (1, 2):
        deployment.deploy_bundle(
            bundle_path=tmp_path,
            bundle_uri=f"s3://mlpipeline/v2/artifacts/run-{run}/bundle",
            model_repository=tmp_path / "models",
            model_name=MODEL,
            deploy_target="kserve",
            settings=DeploySettings(
                canary_traffic_percent=10, rollout_timeout_seconds=60, canary_analysis_seconds=0
            ),
            kserve_namespace=SERVING_NAMESPACE,
            client=client,
        )


def read_the_champion(
    cluster: RecordingCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """evaluate (and, through the same production_model, validate and the drift check): which
    bundle the InferenceService serves, before the first deployment."""
    from textops.components.evaluate.champion import score_champion

    monkeypatch.setattr(kubernetes_api, "custom_objects_api", lambda: cluster.api)
    result = score_champion(
        tmp_path / "models",
        MODEL,
        ["a text"],
        ["positive"],
        ("negative", "positive"),
        kserve_namespace=SERVING_NAMESPACE,
    )
    assert result.status == "none"


def train_on_two_nodes_twice(
    cluster: RecordingCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """train (train_nodes > 1): submit the TrainJob in the pod's namespace and wait; a retried
    step finds the job its first attempt submitted. The job writes no model here, so each run
    ends in the TrainingError that says so, after its API calls."""
    from textops.components.common.labels import LabelMap
    from textops.components.common.settings import TrainSettings
    from textops.components.train.launch import TrainingJob
    from textops.components.train.multinode import train_on_nodes

    pod_namespace = tmp_path / "namespace"
    pod_namespace.write_text(PIPELINE_NAMESPACE)
    # Where a pod reads its namespace (resolve_namespace's default), made this test's file.
    defaults = kubernetes_api.resolve_namespace.__defaults__
    assert defaults is not None
    monkeypatch.setattr(
        kubernetes_api.resolve_namespace, "__defaults__", (*defaults[:-1], pod_namespace)
    )
    for split in ("train", "validation"):
        (tmp_path / f"{split}.parquet").write_bytes(b"rows")
    for _ in range(2):
        with pytest.raises(TrainingError, match="completed without writing"):
            train_on_nodes(
                TrainingJob(
                    train_path=str(tmp_path / "train.parquet"),
                    validation_path=str(tmp_path / "validation.parquet"),
                    labels=LabelMap(("negative", "positive")),
                    settings=TrainSettings(base_model="base-model"),
                    output_dir=str(tmp_path / "model"),
                    data_fingerprint="sha256:permissions",
                ),
                nodes=2,
                gpus_per_node=1,
                shared_storage=f"s3://{SHARED_STORAGE_BUCKET}/jobs",
                image="ghcr.io/textops/textops-train:test",
                timeout_s=30,
                api=cluster.api,
                poll_s=0.001,
            )


#: The bucket multi-node training stages its job in, on the S3 server of tests/s3_server.py.
SHARED_STORAGE_BUCKET = "textops-permissions"

SCENARIOS: tuple[Callable[[RecordingCluster, Path, pytest.MonkeyPatch], None], ...] = (
    deploy_twice,
    read_the_champion,
    train_on_two_nodes_twice,
)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str) -> list[ApiCall]:
    """Every call the scenarios made, each scenario on a cluster of its own, with the artifact
    store (SHARED_STORAGE_BUCKET on the S3 server) its pods would have."""
    calls: list[ApiCall] = []
    for scenario in SCENARIOS:
        cluster = RecordingCluster()
        with pytest.MonkeyPatch.context() as monkeypatch:
            bucket = open_bucket(s3_endpoint, monkeypatch, name=SHARED_STORAGE_BUCKET)
            try:
                scenario(cluster, tmp_path_factory.mktemp(scenario.__name__), monkeypatch)
            finally:
                remove_bucket(bucket)
        assert cluster.calls, f"{scenario.__name__} made no API call"
        calls.extend(cluster.calls)
    return calls


# --- the checks ----------------------------------------------------------------------------------


def _listed() -> set[tuple[str, str, str, str]]:
    return {(p.group, p.resource, p.verb, p.scope) for p in PIPELINE_PERMISSIONS}


def _as_permission(call: ApiCall) -> tuple[str, str, str, str]:
    scope = SCOPES.get(call.namespace or "", f"namespace {call.namespace!r}")
    return (call.group, call.resource, call.verb, scope)


def test_the_table_is_well_formed() -> None:
    rows = [(p.group, p.resource, p.verb, p.scope) for p in PIPELINE_PERMISSIONS]
    assert len(set(rows)) == len(rows), "a permission is listed twice"
    for permission in PIPELINE_PERMISSIONS:
        assert permission.verb in {
            "get",
            "list",
            "watch",
            "create",
            "update",
            "patch",
            "delete",
            "deletecollection",
        }
        assert permission.scope in ("kserve_namespace", "pipeline")
        assert re.fullmatch(r"[a-z0-9.-]+", permission.group) and permission.used_by


def test_every_call_comes_from_a_known_call_site(recorded: list[ApiCall]) -> None:
    unplaced = [call for call in recorded if call.site is None]
    assert not unplaced, (
        f"calls made outside any call site the scan knows: {unplaced}; teach call_sites() "
        "the way they are made"
    )


def test_every_call_the_steps_make_is_a_listed_permission(recorded: list[ApiCall]) -> None:
    listed = _listed()
    missing = sorted(
        {
            (_as_permission(call), str(call.site))
            for call in recorded
            if _as_permission(call) not in listed
        }
    )
    assert not missing, (
        f"calls without a permission in PIPELINE_PERMISSIONS (group, resource, verb, scope; "
        f"call site): {missing}. Add them there and to the Role in manifests/pipeline-rbac/"
    )


def test_every_listed_permission_is_used(recorded: list[ApiCall]) -> None:
    unused = _listed() - {_as_permission(call) for call in recorded}
    assert not unused, f"PIPELINE_PERMISSIONS grants what no step uses: {sorted(unused)}"


def test_every_call_site_is_reached_by_a_scenario(recorded: list[ApiCall]) -> None:
    reached = {call.site for call in recorded}
    missed = [str(site) for site in call_sites() if site not in reached]
    assert not missed, (
        f"API calls no scenario runs: {missed}. Add a scenario to SCENARIOS that runs each "
        "against RecordingCluster, so that its permission is checked"
    )
