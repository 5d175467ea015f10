"""The deploy step: put a model that passed the gate where it serves.

Two targets:

- `local`: publish the bundle as the next version of the local model repository and, when a
  local server runs (`serve_url`), make it load that version.
- `kserve`: roll the bundle out to the InferenceService named after the model, from the
  bundle artifact's place in the pipeline root (KServe's storage initializer fetches it).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from textops.components.common.errors import ConfigError
from textops.components.common.settings import DeploySettings
from textops.components.deploy.publish import publish_bundle, verified_bundle

if TYPE_CHECKING:
    from kserve import KServeClient

logger = logging.getLogger(__name__)

DEPLOY_TARGETS = ("local", "kserve")
#: storageUri schemes KServe's storage initializer reads.
STORAGE_SCHEMES = ("s3", "gs", "pvc", "https", "http", "hdfs", "webhdfs", "oci", "hf")


def storage_uri_for(artifact_uri: str) -> str:
    """The storageUri under which KServe finds a pipeline artifact.

    KFP names artifacts in a MinIO pipeline root `minio://bucket/key`; MinIO speaks S3, and
    KServe reads it as `s3://bucket/key` (with the S3 endpoint in the service account's
    secret).

    Raises:
        ConfigError: The artifact is a local path (a `kfp.local` run), which no cluster can
            fetch, or has a scheme KServe does not read.
    """
    scheme, separator, rest = artifact_uri.partition("://")
    if not separator:
        raise ConfigError(
            f"the bundle is at the local path {artifact_uri}, which an InferenceService cannot "
            "fetch: deploy_target 'kserve' needs the pipeline to run on Kubeflow with an object "
            "store as its pipeline root; on this machine use deploy_target 'local'"
        )
    if scheme == "minio":
        return f"s3://{rest}"
    if scheme not in STORAGE_SCHEMES:
        raise ConfigError(
            f"KServe cannot fetch the bundle from {artifact_uri}: its storage initializer reads "
            f"{', '.join(s + '://' for s in STORAGE_SCHEMES)} (and minio:// as s3://)"
        )
    return artifact_uri


def deploy_bundle(
    *,
    bundle_path: str | Path,
    bundle_uri: str,
    model_repository: str | Path,
    model_name: str,
    deploy_target: str,
    settings: DeploySettings,
    kserve_namespace: str = "",
    client: KServeClient | None = None,
) -> str:
    """Deploy a bundle to the configured target; return where it now serves from.

    Args:
        bundle_path: The bundle on this machine (the export step's artifact).
        bundle_uri: The same artifact's URI in the pipeline root (the kserve target uses it).
        model_repository: The local model repository (the local target publishes there).
        model_name: The model's name in the repository and in KServe.
        deploy_target: 'local' or 'kserve'.
        settings: The deploy step's settings: the local server to hot-load into
            (`serve_url`), the canary share, how long each wait for Ready (kserve) or for the
            local server's swap (local) may take, and how the canary is judged against the
            stable model before it is promoted (a window of 0 promotes a Ready canary without
            analysis, with a warning).
        kserve_namespace: The InferenceService's namespace; empty: this pod's namespace.
        client: A KServe client to use (tests); by default one with this pod's credentials.

    Returns:
        The local target: the published version's directory. The kserve target: the
        InferenceService's URL (or `namespace/name` while KServe has not published one).

    Raises:
        ConfigError: An unknown target, or a canary analysis without an http(s)
            prometheus_url.
        PublishError: The bundle is incomplete or altered.
        DeployError: The rollout or the hot-load failed, or the canary did not pass its
            analysis; the message says what serves now (and the analysis's figures).
    """
    if deploy_target not in DEPLOY_TARGETS:
        raise ConfigError(
            f"unknown deploy_target {deploy_target!r}: use one of {', '.join(DEPLOY_TARGETS)}"
        )
    if deploy_target == "local":
        published = publish_bundle(bundle_path, model_repository, model_name)
        if settings.serve_url.strip():
            from textops.components.deploy.hot_load import hot_load

            hot_load(
                settings.serve_url.strip(),
                model_name,
                published.version,
                timeout_seconds=settings.rollout_timeout_seconds,
            )
        return str(published.path)

    from textops.components.common.kubernetes_api import kserve_client, resolve_namespace
    from textops.components.deploy.canary_analysis import canary_analysis_for
    from textops.components.deploy.kserve_rollout import InferenceServiceRollout

    storage_uri = storage_uri_for(bundle_uri)
    namespace = resolve_namespace(kserve_namespace, "kserve_namespace")
    share = settings.canary_traffic_percent
    # Made before any API call, so a canary without a Prometheus to judge it by changes nothing.
    analysis = canary_analysis_for(settings, namespace) if 0 < share < 100 else None
    # The same check publishing makes: never roll out a bundle whose files changed.
    verified_bundle(bundle_path)
    rollout = InferenceServiceRollout(
        client if client is not None else kserve_client(),
        model_name,
        namespace,
        timeout_seconds=settings.rollout_timeout_seconds,
        canary_analysis=analysis,
    )
    result = rollout.roll_out(storage_uri, share)
    logger.info(
        "deployed %s to kserve action=%s version=%d url=%s",
        model_name,
        result.action,
        result.version,
        result.url,
    )
    return result.url or f"{namespace}/{model_name}"
