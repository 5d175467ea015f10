"""The read side of the local model repository: which versions exist, which one is served.

The layout is the one KServe and Triton model repositories use:

    <repository>/<model_name>/1/            a complete bundle, never modified once written
    <repository>/<model_name>/2/
    <repository>/<model_name>/current.json  {"version": 2, "path": ..., "since": ..., "via": ...}
    <repository>/<model_name>/history.jsonl when each version became current

The deploy step writes it (a publish, a promotion, a rollback, and the history beside the
pointer); `production_model` reads the pointer to tell the steps which model is in production.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from textops.components.common.errors import PublishError

#: The pointer to the version being served, beside the version directories.
CURRENT_FILE = "current.json"

# One path component that cannot climb out of the repository or hide as a dotfile.
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_VERSION = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class PublishedVersion:
    """One version of a model in the repository."""

    name: str
    version: int
    path: Path


def model_root(repository: str | Path, model_name: str) -> Path:
    """The directory that holds every version of `model_name`.

    Raises:
        PublishError: The repository is a URI (it is a local directory), or the model name is
            not one plain directory name.
    """
    if "://" in str(repository):
        raise PublishError(
            f"model repository {repository} is a URI, but the model repository is a local "
            "directory (a volume on a cluster); to serve from an object store, deploy with "
            "deploy_target 'kserve', which rolls the bundle out from the pipeline root"
        )
    if not _MODEL_NAME.fullmatch(model_name):
        raise PublishError(
            f"model name {model_name!r} cannot name a repository directory: use letters, "
            "digits, '.', '_' and '-', starting with a letter or digit"
        )
    return Path(repository) / model_name


def version_numbers(root: Path) -> list[int]:
    """The version numbers under a model's directory, ascending; empty when it is missing."""
    if not root.is_dir():
        return []
    # Only plain integer names: a publish in progress writes to a dot-prefixed scratch dir.
    return sorted(int(p.name) for p in root.iterdir() if p.is_dir() and _VERSION.fullmatch(p.name))


def current_version(repository: str | Path, model_name: str) -> PublishedVersion | None:
    """The version `current.json` points to, or None when nothing was published yet.

    Raises:
        PublishError: The model name is unusable or current.json cannot be read.
    """
    root = model_root(repository, model_name)
    pointer = root / CURRENT_FILE
    try:
        document = json.loads(pointer.read_text(encoding="utf-8"))
        version = int(document["version"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PublishError(
            f"{pointer} is unreadable ({e}); point it at an existing version directory"
        ) from e
    # Built from the repository, not the recorded path, so a moved repository still resolves.
    return PublishedVersion(model_name, version, root / str(version))


def list_versions(repository: str | Path, model_name: str) -> list[PublishedVersion]:
    """Every published version of `model_name`, oldest first; empty when there is none.

    Raises:
        PublishError: The model name is unusable.
    """
    root = model_root(repository, model_name)
    return [PublishedVersion(model_name, v, root / str(v)) for v in version_numbers(root)]
