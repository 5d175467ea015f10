"""The Kubernetes API as a pipeline step sees it: its own namespace and a configured client."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from textops.components.common.errors import ConfigError

if TYPE_CHECKING:
    from kubernetes.client import CustomObjectsApi

#: Where Kubernetes tells a pod its namespace.
NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def pod_namespace(namespace: str = "", namespace_file: Path = NAMESPACE_FILE) -> str:
    """`namespace` when given, else the namespace of the pod this runs in.

    Raises:
        ConfigError: No namespace was given and this does not run in a pod.
    """
    if namespace:
        return namespace
    try:
        return namespace_file.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise ConfigError(
            f"no Kubernetes namespace given and {namespace_file} is unreadable ({e.strerror}): "
            "outside a pod, name the namespace explicitly"
        ) from e


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
