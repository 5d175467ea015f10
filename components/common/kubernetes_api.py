"""The Kubernetes API as a pipeline step sees it: its own namespace, configured clients, the
API's errors with their status, and the permissions its calls need (`PIPELINE_PERMISSIONS`).

`KServeClient` turns every `ApiException` into a bare `RuntimeError` whose text is the whole
HTTP response; `call_api` recovers the status and the API server's own message from the
exception's context, so a caller can tell 404 from 409 from 403 and say what to do.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from textops.components.common.errors import ConfigError

if TYPE_CHECKING:
    from kserve import KServeClient
    from kubernetes.client import CustomObjectsApi

#: Where Kubernetes tells a pod its namespace.
NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

#: The namespaces a pipeline step acts in: "kserve_namespace" is the one that setting names
#: (the InferenceService's; empty: the pipeline's own), "pipeline" the one the step's pod runs in.
Scope = Literal["kserve_namespace", "pipeline"]


@dataclass(frozen=True)
class ApiPermission:
    """One verb a pipeline step uses on one kind of Kubernetes object, and in which namespace."""

    group: str
    #: The resource as RBAC names it: the plural, with "/status" or "/scale" for a subresource.
    resource: str
    verb: str
    scope: Scope
    #: Which steps need it and why, for whoever reviews the Role.
    used_by: str


#: Every Kubernetes API call the pipeline's steps make, as RBAC permissions; nothing more.
#:
#: manifests/pipeline-rbac grants exactly these, one Role per scope in its namespace, bound to
#: the service account the pipeline runs as (tests/unit/manifests/test_manifests_pipeline_rbac.py
#: checks it). tests/unit/test_kubernetes_permissions.py runs every API call site in components/
#: against a recording API and fails on a call that is not listed here, on a row no call uses,
#: and on a call site none of its scenarios reaches.
#:
#: A step that makes a new call (another verb, resource or namespace): add its row here, its
#: verb to the Role of that scope in manifests/pipeline-rbac/, and a scenario that reaches the
#: call to tests/unit/test_kubernetes_permissions.py.
PIPELINE_PERMISSIONS: tuple[ApiPermission, ...] = (
    ApiPermission(
        "serving.kserve.io",
        "inferenceservices",
        "get",
        "kserve_namespace",
        "deploy reads the InferenceService it rolls out to and polls it until Ready; "
        "validate, evaluate and the drift check read which bundle it serves",
    ),
    ApiPermission(
        "serving.kserve.io",
        "inferenceservices",
        "create",
        "kserve_namespace",
        "deploy: the first rollout creates the InferenceService",
    ),
    ApiPermission(
        "serving.kserve.io",
        "inferenceservices",
        "patch",
        "kserve_namespace",
        "deploy: a new model, the canary's promotion, a rollback",
    ),
    ApiPermission(
        "trainer.kubeflow.org",
        "trainjobs",
        "create",
        "pipeline",
        "train with train_nodes > 1 submits a TrainJob",
    ),
    ApiPermission(
        "trainer.kubeflow.org",
        "trainjobs",
        "get",
        "pipeline",
        "train polls its TrainJob until it ends, and finds the one a retried step submitted",
    ),
)


def resolve_namespace(
    configured: str, setting: str = "namespace", namespace_file: Path = NAMESPACE_FILE
) -> str:
    """The configured namespace, else the namespace of the pod this runs in.

    Args:
        configured: The namespace a setting names; empty or blank for "the pod's own".
        setting: The setting's name, for the error message.
        namespace_file: Where Kubernetes tells a pod its namespace.

    Raises:
        ConfigError: Nothing is configured and this is not running in a pod.
    """
    if configured.strip():
        return configured.strip()
    try:
        namespace = namespace_file.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise ConfigError(
            f"{setting} is empty and {namespace_file} cannot be read ({e.strerror}): outside "
            f"a Kubernetes pod, set {setting}"
        ) from e
    if not namespace:
        raise ConfigError(f"{setting} is empty and {namespace_file} is empty too: set {setting}")
    return namespace


def custom_objects_api() -> CustomObjectsApi:
    """A client for custom resources: in-cluster credentials in a pod, else ~/.kube/config."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except (config.ConfigException, OSError) as e:
            raise ConfigError(
                f"cannot reach a Kubernetes cluster: not in a pod, and no usable kubeconfig ({e})"
            ) from e
    return client.CustomObjectsApi()


def kserve_client() -> KServeClient:
    """A KServe client with the pod's service account, or ~/.kube/config outside a cluster.

    Raises:
        ConfigError: There are no Kubernetes credentials to use.
    """
    from kserve import KServeClient
    from kubernetes.config import ConfigException

    try:
        return KServeClient()
    except (ConfigException, OSError) as e:
        raise ConfigError(
            f"no Kubernetes credentials for the kserve deploy target ({e}): run in the cluster "
            "with a service account, or point KUBECONFIG at a kubeconfig file"
        ) from e


class ApiFailure(Exception):
    """A Kubernetes API call failed; `status` is its HTTP status (None: no answer at all)."""

    def __init__(self, verb: str, status: int | None, detail: str) -> None:
        """Record the verb tried (get, create, patch), the status and the server's words."""
        super().__init__(f"{verb}: {detail}")
        self.verb = verb
        self.status = status
        self.detail = detail


def call_api(verb: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a `KServeClient` or `CustomObjectsApi` method; an API error becomes an `ApiFailure`
    with its status.

    Raises:
        ApiFailure: The API server refused the call, or could not be reached.
    """
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        return method(*args, **kwargs)
    except ApiException as e:
        raise api_failure(verb, e) from e
    except RuntimeError as e:
        # KServeClient raises RuntimeError inside its `except ApiException`, so the original
        # is the context.
        cause = e.__cause__ or e.__context__
        if isinstance(cause, ApiException):
            raise api_failure(verb, cause) from e
        raise
    except HTTPError as e:
        raise ApiFailure(verb, None, f"cannot reach the Kubernetes API server ({e})") from e


def api_failure(verb: str, error: Any) -> ApiFailure:
    """The status and the API server's own message (its Status body), from an ApiException."""
    status = getattr(error, "status", None)
    reason = getattr(error, "reason", None) or ""
    message = ""
    body = getattr(error, "body", None)
    if body:
        try:
            document = json.loads(body)
        except (TypeError, ValueError):
            message = str(body)[:500]
        else:
            if isinstance(document, dict):
                message = str(document.get("message") or "")
    detail = f"{status} {reason}".strip() if status else reason or "no answer"
    if message:
        detail = f"{detail}: {message}"
    return ApiFailure(verb, status, detail)
