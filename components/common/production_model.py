"""The model in production: which bundle answers a model's traffic, its labels, and its files.

Every step that compares with production asks here: validate (its labels), evaluate (the
champion to score) and the drift check (the reference sample). Production is one of two
targets, as the pipeline's `deploy_target` says:

- the local model repository (`RepositoryTarget`): the version its `current.json` points to
  (`model_repository.current_version`);
- a KServe InferenceService (`InferenceServiceTarget`): the bundle answering most of its
  traffic, the latest one or the previous one while a canary runs, as the deploy step records
  them in the spec and its annotations. On a cluster there is no local model repository to
  read: the bundle is in the object store (the pipeline root), and a step copies, through
  fsspec with the artifact store's credentials, only the files it reads (validate the labels;
  the drift check the reference sample, the labels and the metadata, about 150 KB) rather than
  the whole bundle (about 150 MB of models).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textops.components.common import kubernetes_api
from textops.components.common.bundle import LABELS_FILE, REQUIRED_FILES
from textops.components.common.dataio import is_uri, missing_backend_message
from textops.components.common.errors import ConfigError, ModelNotFoundError
from textops.components.common.labels import LabelMap
from textops.components.common.model_repository import CURRENT_FILE, current_version

if TYPE_CHECKING:
    from kubernetes.client import CustomObjectsApi

#: The InferenceService annotation that counts the models rolled out to it: 1, 2, ...
MODEL_VERSION_ANNOTATION = "textops.dev/model-version"
#: Set while a canary runs: the storageUri that serves the rest of the traffic, and that a
#: failed canary is rolled back to.
PREVIOUS_STORAGE_URI_ANNOTATION = "textops.dev/previous-storage-uri"

_GROUP, _VERSION, _PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"


@dataclass(frozen=True)
class RepositoryTarget:
    """Production is the local model repository at `path`."""

    path: str | Path

    def __str__(self) -> str:
        return f"repository={self.path}"


@dataclass(frozen=True)
class InferenceServiceTarget:
    """Production is the InferenceService named after the model in `namespace`."""

    namespace: str
    #: The client to read it with; None: `kubernetes_api.custom_objects_api()` when it is read.
    api: CustomObjectsApi | None = dataclasses.field(default=None, compare=False)

    def __str__(self) -> str:
        return f"inferenceservice={self.namespace}"


ProductionTarget = RepositoryTarget | InferenceServiceTarget


def production_target(
    deploy_target: str, model_repository: str | Path, kserve_namespace: str
) -> ProductionTarget:
    """Where the pipeline's settings put the model in production.

    Args:
        deploy_target: 'kserve' for an InferenceService; anything else the local repository.
        model_repository: The local model repository.
        kserve_namespace: The InferenceService's namespace; empty: this pod's own.

    Raises:
        ConfigError: `kserve_namespace` is empty outside a Kubernetes pod.
    """
    if deploy_target == "kserve":
        namespace = kubernetes_api.resolve_namespace(kserve_namespace, "kserve_namespace")
        return InferenceServiceTarget(namespace)
    return RepositoryTarget(model_repository)


@dataclass(frozen=True)
class ServedModel:
    """The model an InferenceService's spec serves, as the deploy step wrote it."""

    storage_uri: str | None
    #: The deploy step's count of models rolled out to it; 0 when the annotation is missing.
    version: int
    canary_traffic_percent: int | None
    previous_storage_uri: str | None

    @property
    def canary_running(self) -> bool:
        """Whether part of the traffic still goes to the revision before the latest."""
        return self.canary_traffic_percent is not None and self.canary_traffic_percent < 100


def read_served_model(isvc: Mapping[str, Any]) -> ServedModel:
    """The model part of an InferenceService, as the Kubernetes API returns it."""
    annotations = (isvc.get("metadata") or {}).get("annotations") or {}
    predictor = (isvc.get("spec") or {}).get("predictor") or {}
    canary = predictor.get("canaryTrafficPercent")
    try:
        version = int(annotations.get(MODEL_VERSION_ANNOTATION) or 0)
    except (TypeError, ValueError):  # not a number: as if it were missing
        version = 0
    return ServedModel(
        storage_uri=(predictor.get("model") or {}).get("storageUri"),
        version=version,
        canary_traffic_percent=int(canary) if canary is not None else None,
        previous_storage_uri=annotations.get(PREVIOUS_STORAGE_URI_ANNOTATION) or None,
    )


@dataclass(frozen=True)
class ProductionBundle:
    """The bundle answering most of a model's traffic."""

    #: A version directory of the local repository, or the URI an InferenceService reads.
    location: str
    #: Its version; None when unknown (an InferenceService records only its latest version's
    #: number, so the bundle beside a canary has none).
    version: int | None


def production_bundle(model_name: str, target: ProductionTarget) -> ProductionBundle | None:
    """The bundle in production, or None when nothing is deployed to `target` yet.

    Raises:
        PublishError: The local repository's model name is unusable or its current.json
            cannot be read.
        ModelNotFoundError: The InferenceService names no storageUri.
        ConfigError: The InferenceService cannot be read (RBAC) or the API cannot be reached.
    """
    if isinstance(target, RepositoryTarget):
        published = current_version(target.path, model_name)
        if published is None:
            return None
        return ProductionBundle(str(published.path), published.version)
    return _served_bundle(model_name, target)


def _served_bundle(model_name: str, target: InferenceServiceTarget) -> ProductionBundle | None:
    """The bundle answering most of the InferenceService's traffic: the latest one, or the
    previous one while a canary runs; None when there is no InferenceService `model_name`."""
    api = target.api if target.api is not None else kubernetes_api.custom_objects_api()
    namespace = target.namespace
    try:
        isvc = kubernetes_api.call_api(
            "get",
            api.get_namespaced_custom_object,
            _GROUP,
            _VERSION,
            namespace,
            _PLURAL,
            model_name,
        )
    except kubernetes_api.ApiFailure as e:
        if e.status == 404:
            return None
        raise ConfigError(
            f"cannot read InferenceService {namespace}/{model_name} ({e.detail}); this step's "
            "service account needs get on inferenceservices.serving.kserve.io"
        ) from e
    served = read_served_model(isvc)
    if served.canary_running and served.previous_storage_uri:
        return ProductionBundle(served.previous_storage_uri, None)
    if not served.storage_uri:
        raise ModelNotFoundError(
            f"InferenceService {namespace}/{model_name} names no storageUri: it was not "
            "deployed by textops"
        )
    return ProductionBundle(served.storage_uri, served.version or None)


def open_production_bundle(
    model_name: str,
    target: ProductionTarget,
    scratch: Path,
    files: tuple[str, ...] | None = None,
) -> tuple[ProductionBundle, Path] | None:
    """The bundle in production and a directory that holds it: its own directory in the
    local repository, or `scratch` with a copy of its `files` (every file when None).

    Returns:
        None when nothing is deployed to `target` yet.

    Raises:
        PublishError: As `production_bundle`.
        ModelNotFoundError: As `production_bundle`, or the served bundle is incomplete.
        ConfigError: As `production_bundle`, or the served bundle cannot be copied from here.
    """
    found = production_bundle(model_name, target)
    if found is None:
        return None
    if isinstance(target, RepositoryTarget):
        return found, Path(found.location)
    return found, fetch_bundle_files(found.location, scratch, files)


def production_labels(model_name: str, target: ProductionTarget, scratch: Path) -> LabelMap | None:
    """The label map of the bundle in production, or None when nothing is deployed yet.

    A missing or empty repository, like a missing InferenceService, counts as nothing
    deployed: the first training run is free to choose its labels, and the next is held to them.

    Args:
        model_name: The model (and InferenceService) name.
        target: Where production is.
        scratch: A directory to copy a served bundle's labels.json into.

    Raises:
        PublishError: As `production_bundle`.
        ModelNotFoundError: The bundle in production is incomplete or has an unreadable
            labels.json (for the repository: current.json names a damaged version).
        ConfigError: As `open_production_bundle`.
    """
    opened = open_production_bundle(model_name, target, scratch, (LABELS_FILE,))
    if opened is None:
        return None
    found, directory = opened
    path = directory / LABELS_FILE
    try:
        return LabelMap.load(path)
    except (OSError, ValueError, KeyError, TypeError) as e:
        if isinstance(target, RepositoryTarget):
            raise ModelNotFoundError(
                f"the served version {found.version} of {model_name!r} has no readable "
                f"{LABELS_FILE} ({path}: {e}); restore it or point {CURRENT_FILE} at a "
                "complete version"
            ) from e
        raise ModelNotFoundError(
            f"the bundle in production ({found.location}) has no readable {LABELS_FILE}: {e}"
        ) from e


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
