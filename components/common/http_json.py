"""JSON over HTTP to a model server, with the standard library and errors that say what failed.

The deploy step (hot-loading a local predictor) and the evaluate step (scoring the model in
production through its V2 route) both talk to a textops predictor this way.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from textops.components.common.errors import RemoteModelError


def request_json(
    url: str,
    body: Any | None,
    timeout_seconds: float,
    *,
    headers: Mapping[str, str] | None = None,
) -> Any:
    """GET (`body` None) or POST `body` as JSON; return the parsed answer ({} when empty).

    Raises:
        RemoteModelError: No answer, an HTTP error status, or a body that is not JSON.
    """
    data = json.dumps(body).encode("utf-8") if body is not None else None
    method = "POST" if body is not None else "GET"
    request = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_seconds) as response:
            raw = response.read()
    except urllib.error.HTTPError as e:
        detail = e.read().decode("utf-8", "replace").strip()[:300]
        raise RemoteModelError(
            f"{method} {url} answered HTTP {e.code}: {detail or e.reason}"
        ) from e
    except (urllib.error.URLError, OSError) as e:
        raise RemoteModelError(f"no answer from {method} {url}: {getattr(e, 'reason', e)}") from e
    try:
        return json.loads(raw) if raw.strip() else {}
    except ValueError as e:
        raise RemoteModelError(f"{method} {url} answered something that is not JSON") from e
