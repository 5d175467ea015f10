"""The bundle in production on KServe, read back from the InferenceService and the store.

On a cluster, the deploy step rolls each bundle out to an InferenceService whose `storageUri`
points into the object store (the pipeline root), and there is no local model repository to
read. The steps that need to know what is in production read the InferenceService instead and
take the bundle that answers most of the traffic: the latest one, or the previous one while a
canary runs. They copy, through fsspec with the artifact store's credentials, only the files
they read (the validate step the labels; the drift check the reference sample, the labels and
the metadata, about 150 KB) rather than the whole bundle (about 150 MB of models).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from textops.components.common.bundle import LABELS_FILE, REQUIRED_FILES
from textops.components.common.dataio import is_uri, missing_backend_message
from textops.components.common.errors import ConfigError, ModelNotFoundError
from textops.components.common.labels import LabelMap
from textops.components.deploy.isvc import read_state
from textops.components.deploy.kube_api import ApiFailure, call_api

if TYPE_CHECKING:
    from kubernetes.client import CustomObjectsApi

_GROUP, _VERSION, _PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"


@dataclass(frozen=True)
class ServedBundle:
    """The bundle answering most of an InferenceService's traffic."""

    uri: str
    #: The version the deploy step recorded on the InferenceService; None when unknown (the
    #: InferenceService records only its latest version's number).
    version: int | None


def served_bundle(model_name: str, namespace: str, api: CustomObjectsApi) -> ServedBundle | None:
    """The bundle answering most of the InferenceService's traffic (the latest one, or the
    previous one while a canary runs); None when there is no InferenceService `model_name`
    (nothing deployed yet).

    Args:
        model_name: The InferenceService's name (the deploy step names it after the model).
        namespace: Its namespace.
        api: A Kubernetes client for custom resources.

    Raises:
        ModelNotFoundError: The InferenceService names no storageUri.
        ConfigError: The API refused the read (RBAC) or could not be reached.
    """
    try:
        isvc = call_api(
            "get",
            api.get_namespaced_custom_object,
            _GROUP,
            _VERSION,
            namespace,
            _PLURAL,
            model_name,
        )
    except ApiFailure as e:
        if e.status == 404:
            return None
        raise ConfigError(
            f"cannot read InferenceService {namespace}/{model_name} ({e.detail}); this step's "
            "service account needs get on inferenceservices.serving.kserve.io"
        ) from e
    state = read_state(isvc, namespace)
    if state.canary_running and state.previous_storage_uri:
        return ServedBundle(state.previous_storage_uri, None)
    if not state.storage_uri:
        raise ModelNotFoundError(
            f"InferenceService {namespace}/{model_name} names no storageUri: it was not "
            "deployed by textops"
        )
    return ServedBundle(state.storage_uri, state.version or None)


def fetch_bundle_files(uri: str, target: Path, files: tuple[str, ...] | None = None) -> Path:
    """Copy `files` of the bundle at `uri` (an fsspec URI: s3://, gs://, ...) into `target`.

    The bundle must be complete where it is (every required file present), as a bundle opened
    locally must be; only `files` are copied, or every file of it when `files` is None.

    Returns:
        `target`.

    Raises:
        ModelNotFoundError: Nothing, or an incomplete bundle, is at `uri`.
        ConfigError: `uri` is no URI fsspec can read here (a PVC, a missing backend, no
            credentials).
    """
    if uri.startswith("pvc://"):
        raise ConfigError(
            f"the bundle is on a PersistentVolumeClaim ({uri}), which a pipeline step cannot "
            "read by URI: mount the claim in the drift step and give bundle=<its local path>"
        )
    if not is_uri(uri):
        raise ConfigError(f"{uri} is not a URI (scheme://...) of a bundle to fetch")
    from fsspec.core import url_to_fs

    try:
        fs, root = url_to_fs(uri)
    except ImportError as e:
        raise ConfigError(missing_backend_message(uri, e)) from e
    except ValueError as e:  # an unknown scheme
        raise ConfigError(f"cannot read the bundle at {uri}: {e}") from e
    root = root.rstrip("/")
    try:
        present = {Path(path).name for path in fs.ls(root, detail=False)}
    except FileNotFoundError as e:
        raise ModelNotFoundError(f"model bundle not found: nothing is at {uri}") from e
    except OSError as e:
        raise ConfigError(
            f"cannot list the bundle at {uri} ({e}): check the artifact store's credentials "
            "(the textops-artifact-store Secret)"
        ) from e
    missing = [name for name in REQUIRED_FILES if name not in present]
    if missing:
        raise ModelNotFoundError(f"model bundle {uri} is incomplete: missing {', '.join(missing)}")
    target.mkdir(parents=True, exist_ok=True)
    for name in sorted(present) if files is None else files:
        try:
            fs.get_file(f"{root}/{name}", str(target / name))
        except OSError as e:
            raise ConfigError(f"cannot copy {uri}/{name}: {e}") from e
    return target


def served_labels(
    model_name: str, namespace: str, api: CustomObjectsApi, scratch: Path
) -> LabelMap | None:
    """The label map of the bundle in production, or None when no InferenceService serves
    `model_name` yet (the first deployment is free to choose its labels).

    Args:
        model_name: The InferenceService's name.
        namespace: Its namespace.
        api: A Kubernetes client for custom resources.
        scratch: A directory to copy labels.json into.

    Raises:
        ModelNotFoundError: The InferenceService names no storageUri, or its bundle is
            incomplete or has an unreadable labels.json.
        ConfigError: The InferenceService or its bundle cannot be read from here.
    """
    served = served_bundle(model_name, namespace, api)
    if served is None:
        return None
    path = fetch_bundle_files(served.uri, scratch, (LABELS_FILE,)) / LABELS_FILE
    try:
        return LabelMap.load(path)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelNotFoundError(
            f"the bundle in production ({served.uri}) has no readable {LABELS_FILE}: {e}"
        ) from e
