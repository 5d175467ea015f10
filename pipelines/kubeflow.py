"""Run the compiled pipelines on Kubeflow Pipelines, through the real `kfp.Client`.

A pipeline is uploaded once; each later upload is a new version of it, named by the package's
content hash, so an unchanged package reuses its version and a changed one adds the next.
The client's errors become `KubeflowError`s that say what was refused and how to fix it.
`textops submit` and `textops schedule` (kubeflow_cli.py) are the command line over this and
schedules.py.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import hashlib
import io
import json
import logging
import os
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from textops.components.common.cluster_run import check_cluster_arguments
from textops.components.common.errors import ConfigError, KubeflowError

if TYPE_CHECKING:
    import kfp

logger = logging.getLogger(__name__)

#: Environment variables: the API's address (kfp's own name) and a bearer token for it.
ENDPOINT_ENV = "KF_PIPELINES_ENDPOINT"
TOKEN_ENV = "KF_PIPELINES_TOKEN"
DEFAULT_EXPERIMENT = "textops"
#: The flag that names the Kubeflow Pipelines API in every command (`--host` is a bind address).
HOST_FLAG = "--kubeflow-host"
#: The name the training pipeline is compiled under (pipelines/training.py's PIPELINE_NAME).
TRAINING_PIPELINE = "textops-training"
#: The checked-in compiled pipelines, by the name `--pipeline` takes.
COMPILED_DIR = Path(__file__).resolve().parent / "compiled"
PIPELINE_PACKAGES: dict[str, Path] = {
    "training": COMPILED_DIR / "training.yaml",
    "monitoring": COMPILED_DIR / "monitoring.yaml",
}
#: Items asked for per page when listing; the server may answer fewer.
PAGE_SIZE = 100

_HINTS = {
    401: f"set {TOKEN_ENV} to a token this endpoint accepts (docs/operations.md, 'Connect')",
    403: "the credentials may not do this here: give --namespace the Kubeflow profile "
    "namespace you belong to",
    404: f"check that {HOST_FLAG} is the Kubeflow Pipelines address (the ml-pipeline-ui "
    "service or the Kubeflow gateway) and that the object still exists",
}


@dataclass(frozen=True)
class PipelinePackage:
    """A compiled pipeline file: its pipeline name, parameters, their defaults, content hash."""

    path: Path
    name: str
    parameters: frozenset[str]
    digest: str
    #: The parameters' compiled default values, by name (those that have one).
    defaults: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def read(cls, path: str | Path) -> PipelinePackage:
        """Read a compiled pipeline's IR YAML.

        Raises:
            ConfigError: The file is missing, or is not a compiled pipeline.
        """
        path = Path(path)
        try:
            content = path.read_bytes()
        except OSError as e:
            raise ConfigError(
                f"cannot read the compiled pipeline {path}: {e.strerror}; compile it first "
                "(`textops compile` writes the training pipeline)"
            ) from e
        try:
            spec = next(yaml.safe_load_all(content), None)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not YAML: {e}") from e
        name = spec.get("pipelineInfo", {}).get("name") if isinstance(spec, dict) else None
        if not isinstance(spec, dict) or not name:
            raise ConfigError(f"{path} is not a compiled pipeline (no pipelineInfo.name)")
        inputs = spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
        defaults = {
            parameter: definition["defaultValue"]
            for parameter, definition in inputs.items()
            if isinstance(definition, dict) and "defaultValue" in definition
        }
        return cls(path, name, frozenset(inputs), hashlib.sha256(content).hexdigest(), defaults)

    @property
    def version_name(self) -> str:
        """The pipeline version this content is uploaded as."""
        return f"{self.name}-{self.digest[:12]}"

    def check_arguments(self, arguments: Mapping[str, Any]) -> None:
        """Refuse arguments this pipeline cannot run with on a cluster, before anything is sent.

        Raises:
            ConfigError: An argument that is not a parameter of this pipeline, or values
                (given or compiled defaults) whose outputs would stay inside a pod, naming
                the parameter to set (`cluster_run.check_cluster_arguments`).
        """
        unknown = sorted(set(arguments) - self.parameters)
        if unknown:
            named = []
            for name in unknown:
                close = difflib.get_close_matches(name, self.parameters, n=1)
                named.append(f"{name} (did you mean {close[0]}?)" if close else name)
            raise ConfigError(
                f"{', '.join(named)}: not a parameter of the compiled pipeline {self.path} "
                f"({len(self.parameters)} parameters); recompile it if the code has changed"
            )
        try:
            check_cluster_arguments({**self.defaults, **arguments})
        except ConfigError as e:
            raise ConfigError(
                f"{e}. On Kubeflow Pipelines the run would fail in its first step: give the "
                "value in --config or with --param NAME=VALUE"
            ) from e


@dataclass(frozen=True)
class PipelineVersionRef:
    """A pipeline version on the server, and whether this call uploaded it."""

    pipeline_id: str
    version_id: str
    version_name: str
    uploaded: bool


@contextlib.contextmanager
def api_call(what: str, host: str) -> Iterator[None]:
    """Turn the kfp client's errors while doing `what` into KubeflowError.

    kfp prints links to the UI as it goes; they go to the debug log instead of stdout.
    """
    import kfp_server_api
    import urllib3

    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter):
            yield
    except kfp_server_api.ApiException as e:
        raise KubeflowError(_describe_refusal(e, what, host)) from e
    except urllib3.exceptions.HTTPError as e:
        raise KubeflowError(
            f"cannot reach Kubeflow Pipelines at {host} to {what}: {e}; check {HOST_FLAG}, "
            "and that the port-forward or gateway in front of it is up"
        ) from e
    finally:
        for line in chatter.getvalue().splitlines():
            logger.debug("kfp: %s", line)


def _describe_refusal(error: Any, what: str, host: str) -> str:
    body = error.body.decode(errors="replace") if isinstance(error.body, bytes) else error.body
    detail = (body or "").strip()
    with contextlib.suppress(ValueError, AttributeError):
        payload = json.loads(detail)
        detail = str(payload.get("message") or payload.get("error") or detail)
    message = f"Kubeflow Pipelines at {host} answered {error.status} {error.reason} to {what}"
    if detail:
        message += f": {detail[:500]}"
    hint = _HINTS.get(error.status)
    return f"{message}; {hint}" if hint else message


@functools.cache
def _client_class() -> type[kfp.Client]:
    import kfp

    class Client(kfp.Client):
        """kfp.Client whose health probe asks once.

        The stock probe retries five times, five seconds apart; one answer already tells a
        wrong address or a refused token, and the error should say so at once.
        """

        def get_kfp_healthz(self, sleep_duration: int = 5) -> Any:
            raw = self._healthz_api.healthz_service_get_healthz(_preload_content=False)
            return _read_healthz(raw, self._existing_config.host)

    return Client


def _read_healthz(response: Any, host: str) -> Any:
    """The health answer, checked to come from the API: a gateway that wants a browser login
    answers with a redirect to a web page, which the client would otherwise read as empty."""
    import kfp_server_api

    try:
        payload = json.loads(response.data)
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        kind = response.headers.get("Content-Type") or "no content type"
        raise KubeflowError(
            f"{host} answered the health check with {kind}, not the Kubeflow Pipelines API "
            f"(a login page?): give {HOST_FLAG} the API's address, and a token in {TOKEN_ENV} if "
            "the gateway asks for one"
        )
    return kfp_server_api.V2beta1GetHealthzResponse(
        multi_user=payload.get("multi_user"), pipeline_store=payload.get("pipeline_store")
    )


def resolve_host(host: str | None) -> str:
    """`host`, else $KF_PIPELINES_ENDPOINT; ConfigError if neither is an http(s) URL."""
    host = host or os.environ.get(ENDPOINT_ENV)
    if not host:
        raise ConfigError(
            f"no Kubeflow Pipelines address: give {HOST_FLAG} URL or set {ENDPOINT_ENV} (e.g. "
            "http://localhost:8080 while `kubectl port-forward -n kubeflow svc/ml-pipeline-ui "
            "8080:80` runs)"
        )
    if not host.startswith(("http://", "https://")):
        raise ConfigError(f"{HOST_FLAG} must be an http:// or https:// URL, not {host!r}")
    return host


def connect(
    host: str | None = None, *, namespace: str | None = None, token: str | None = None
) -> kfp.Client:
    """A `kfp.Client` for the Kubeflow Pipelines API at `host`.

    Args:
        host: The API's base URL; default: $KF_PIPELINES_ENDPOINT.
        namespace: The Kubeflow profile namespace (multi-user Kubeflow); None: the
            single-user default.
        token: A bearer token; default: $KF_PIPELINES_TOKEN, if set.

    Raises:
        ConfigError: No address, or one that is not an http(s) URL.
        KubeflowError: The API cannot be reached or refuses the credentials.
    """
    host = resolve_host(host)
    token = token if token is not None else os.environ.get(TOKEN_ENV) or None
    with api_call("check its health", host), warnings.catch_warnings():
        # kfp warns on every construction that it needs a v2 backend; textops does too.
        warnings.simplefilter("ignore", FutureWarning)
        client = _client_class()(host=host, namespace=namespace or "kubeflow", existing_token=token)
        if namespace:
            # kfp probes the API only to guess a namespace; given one, probe it here, so that a
            # wrong address or a refused token fails now rather than halfway through.
            client.get_kfp_healthz()
    logger.info("connected to Kubeflow Pipelines host=%s namespace=%s", host, namespace or "-")
    return client


def _find_version(client: kfp.Client, pipeline_id: str, name: str, host: str) -> Any | None:
    token = ""
    while True:
        with api_call(f"list the versions of pipeline {pipeline_id}", host):
            page = client.list_pipeline_versions(pipeline_id, page_token=token, page_size=PAGE_SIZE)
        for version in page.pipeline_versions or []:
            if name in (version.display_name, version.name):
                return version
        token = page.next_page_token or ""
        if not token:
            return None


def ensure_pipeline_version(
    client: kfp.Client, package: PipelinePackage, *, pipeline_name: str, host: str
) -> PipelineVersionRef:
    """The server's version of `package` under `pipeline_name`, uploading it if it is new.

    Creates the pipeline when it does not exist yet; uploads the package as the version
    `package.version_name` when the pipeline has no version of that content.

    Raises:
        KubeflowError: The server refused a call, or holds several pipelines of that name.
    """
    name = package.version_name
    with api_call(f"look up pipeline {pipeline_name}", host):
        try:
            pipeline_id = client.get_pipeline_id(pipeline_name)
        except ValueError as e:  # more than one pipeline of that name
            raise KubeflowError(f"{e} Delete the extra ones in the Kubeflow UI.") from e
    if pipeline_id is None:
        import kfp_server_api

        with api_call(f"create pipeline {pipeline_name}", host):
            created = client.pipelines.pipeline_service_create_pipeline(
                pipeline=kfp_server_api.V2beta1Pipeline(
                    name=pipeline_name,
                    display_name=pipeline_name,
                    description="textops: uploaded by `textops submit` / `textops schedule`",
                )
            )
        pipeline_id = created.pipeline_id
        logger.info("created pipeline name=%s id=%s", pipeline_name, pipeline_id)
    else:
        existing = _find_version(client, pipeline_id, name, host)
        if existing is not None:
            logger.info("pipeline version unchanged name=%s", name)
            return PipelineVersionRef(pipeline_id, existing.pipeline_version_id, name, False)
    with api_call(f"upload {package.path.name} as version {name} of {pipeline_name}", host):
        uploaded = client.upload_pipeline_version(
            str(package.path),
            pipeline_version_name=name,
            pipeline_id=pipeline_id,
            description=f"{package.path.name} sha256:{package.digest}",
        )
    logger.info("uploaded pipeline version name=%s id=%s", name, uploaded.pipeline_version_id)
    return PipelineVersionRef(pipeline_id, uploaded.pipeline_version_id, name, True)


def ensure_experiment(client: kfp.Client, name: str, *, host: str) -> str:
    """The id of the experiment `name`, created if it does not exist yet."""
    with api_call(f"get or create experiment {name}", host):
        return str(client.create_experiment(name).experiment_id)


@dataclass(frozen=True)
class SubmittedRun:
    """A started run and the pipeline version it runs."""

    run_id: str
    version: PipelineVersionRef


def prepare_pipeline(
    client: kfp.Client,
    package: PipelinePackage,
    *,
    arguments: Mapping[str, Any],
    experiment: str,
    host: str,
) -> tuple[PipelineVersionRef, str]:
    """What a run or a recurring run of `package` needs first: `arguments` checked against
    its parameters, its version on the server (uploaded if it changed, under the pipeline's
    own name) and the id of the experiment (created if missing).

    Raises:
        ConfigError: An argument the pipeline does not take.
        KubeflowError: The server refused a request.
    """
    package.check_arguments(arguments)
    version = ensure_pipeline_version(client, package, pipeline_name=package.name, host=host)
    return version, ensure_experiment(client, experiment, host=host)


def submit_pipeline_run(
    host: str,
    package: PipelinePackage,
    *,
    arguments: Mapping[str, Any],
    experiment: str = DEFAULT_EXPERIMENT,
    client: kfp.Client | None = None,
    namespace: str | None = None,
    service_account: str | None = None,
) -> SubmittedRun:
    """Upload the compiled pipeline `package` (a new version when it changed) and start a run.

    Args:
        host: The Kubeflow Pipelines API's base URL.
        package: The compiled pipeline; it runs under its own name on the server.
        arguments: The run's parameter values, by name.
        experiment: The experiment the run goes in; created if absent.
        client: A connected client; default: `connect(host, namespace=namespace)`.
        namespace: The Kubeflow profile namespace, when `client` is not given.
        service_account: The Kubernetes service account the run's pods use; None: the
            Kubeflow Pipelines default.

    Returns:
        The run's id and the pipeline version it runs.

    Raises:
        ConfigError: An argument is not one of the package's parameters.
        KubeflowError: The API cannot be reached or refused a request.
    """
    # A wrong argument fails before the server is asked anything.
    package.check_arguments(arguments)
    client = client or connect(host, namespace=namespace)
    version, experiment_id = prepare_pipeline(
        client, package, arguments=arguments, experiment=experiment, host=host
    )
    run_name = f"{package.name} {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC"
    with api_call(f"start a run of {package.name}", host):
        run = client.run_pipeline(
            experiment_id=experiment_id,
            job_name=run_name,
            pipeline_id=version.pipeline_id,
            version_id=version.version_id,
            params=dict(arguments),
            service_account=service_account,
        )
    logger.info("started run id=%s pipeline=%s version=%s", run.run_id, package.name, version)
    return SubmittedRun(str(run.run_id), version)
