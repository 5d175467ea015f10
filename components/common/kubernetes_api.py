"""The Kubernetes API as a pipeline step sees it: its own namespace and a configured client."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from textops.components.common.errors import ConfigError

if TYPE_CHECKING:
    from kubernetes.client import CustomObjectsApi

#: Where Kubernetes tells a pod its namespace.
NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


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
