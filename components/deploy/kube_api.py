"""Talking to the Kubernetes API through the KServe SDK: credentials and errors.

`KServeClient` turns every `ApiException` into a bare `RuntimeError` whose text is the whole
HTTP response; `call_api` recovers the status and the API server's own message from the
exception's context, so the rollout can tell 404 from 409 from 403 and say what to do.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from textops.components.common.errors import ConfigError

if TYPE_CHECKING:
    from kserve import KServeClient


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
    """Call a `KServeClient` method; an API error becomes an `ApiFailure` with its status.

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
