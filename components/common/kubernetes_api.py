"""The Kubernetes API as a pipeline step sees it: its own namespace, a configured client, and
the permissions its calls need (`PIPELINE_PERMISSIONS`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from textops.components.common.errors import ConfigError

if TYPE_CHECKING:
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
