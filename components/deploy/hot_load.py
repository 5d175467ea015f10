"""Make a running local textops server serve the version just published, without a restart.

The server (`textops serve --model-repository DIR`) serves the version `current.json` names.
KServe's model repository route `POST /v2/repository/models/<name>/load` makes it read
`current.json` again and swap to that version; the model's V2 metadata (`GET
/v2/models/<name>`) then lists it in `versions`, which is how this module checks the swap.
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from textops.components.common.errors import DeployError, RemoteModelError
from textops.components.common.http_json import request_json

logger = logging.getLogger(__name__)

#: How often the metadata is read again while the server has not swapped yet.
POLL_SECONDS = 0.5


def hot_load(
    serve_url: str,
    model_name: str,
    version: int,
    *,
    timeout_seconds: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> None:
    """Ask the server at `serve_url` to load `model_name` again; check it serves `version`.

    Args:
        serve_url: The server's base URL, e.g. `http://127.0.0.1:8080`.
        model_name: The model's name on the server.
        version: The version just published, which the server must report after the load.
        timeout_seconds: Longest time for one request, and for the swap to show.
        sleep: The pause between metadata reads (tests pass a fake clock).
        monotonic: The clock the deadline is measured on.

    Raises:
        DeployError: The server could not be reached, refused the load, or still reports
            another version when the time is up. The bundle stays published either way.
    """
    base = serve_url.rstrip("/")
    quoted = urllib.parse.quote(model_name, safe="")
    load_url = f"{base}/v2/repository/models/{quoted}/load"
    metadata_url = f"{base}/v2/models/{quoted}"

    def failed(problem: str) -> DeployError:
        return DeployError(
            f"version {version} of {model_name} is published (current.json points to it), but "
            f"the server at {base} still serves the old one: {problem}. Load it with `curl -X "
            f"POST {load_url}` once the server is up, or restart the server"
        )

    try:
        request_json(load_url, {}, timeout_seconds)
    except RemoteModelError as e:
        raise failed(f"the load request failed ({e})") from e

    deadline = monotonic() + timeout_seconds
    while True:
        try:
            served = _served_versions(request_json(metadata_url, None, timeout_seconds))
        except RemoteModelError as e:
            raise failed(f"reading its model metadata failed ({e})") from e
        if str(version) in served:
            logger.info("hot-loaded %s version=%d server=%s", model_name, version, base)
            return
        if monotonic() >= deadline:
            reported = ", ".join(served) if served else "no version"
            raise failed(
                f"after the load it reports {reported} in its metadata's versions, not {version}"
            )
        sleep(POLL_SECONDS)


def _served_versions(metadata: Any) -> list[str]:
    """The `versions` of a V2 model metadata document (the Open Inference Protocol's field)."""
    versions = metadata.get("versions") if isinstance(metadata, dict) else None
    if not isinstance(versions, list):
        return []
    return [str(v) for v in versions]
