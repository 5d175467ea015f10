"""Publish model bundles to a local model repository, one integer version per bundle.

The layout is the one KServe and Triton model repositories use:

    <repository>/<model_name>/1/            a complete bundle, never modified once written
    <repository>/<model_name>/2/
    <repository>/<model_name>/current.json  {"version": 2, "path": ..., "published_at": ...}

A version directory appears by one atomic rename once its copy is complete and verified, and
`current.json` is replaced atomically after that, so a reader (the predictor, a rollback)
sees either the old version or the new one, never a half-copied bundle.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from textops.components.common.bundle import (
    METADATA_FILE,
    REQUIRED_FILES,
    ModelBundle,
    atomic_directory,
)
from textops.components.common.errors import ModelNotFoundError, PublishError

logger = logging.getLogger(__name__)

#: The pointer to the version being served, beside the version directories.
CURRENT_FILE = "current.json"
#: Held with flock while a version number is taken and filled.
LOCK_FILE = ".publish.lock"

# One path component that cannot climb out of the repository or hide as a dotfile.
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_VERSION = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class PublishedVersion:
    """One version of a model in the repository."""

    name: str
    version: int
    path: Path


def publish_bundle(
    bundle_dir: str | Path, repository: str | Path, model_name: str
) -> PublishedVersion:
    """Copy a verified bundle into the repository as the next version and make it current.

    Args:
        bundle_dir: The bundle written by the export step.
        repository: The model repository's root directory (created when missing).
        model_name: The model's name in the repository and in KServe.

    Returns:
        The version published.

    Raises:
        PublishError: The model name is unusable, or the bundle is incomplete or its files
            do not match the hashes in its metadata.json. Nothing in the repository changes.
    """
    model_root = _model_root(repository, model_name)
    bundle, files = _verified_bundle(bundle_dir)

    model_root.mkdir(parents=True, exist_ok=True)
    with _publish_lock(model_root):
        version = _next_version(model_root)
        target = model_root / str(version)
        with atomic_directory(target) as scratch:
            for name in files:
                shutil.copy2(bundle.path / name, scratch / name)
            # Checked on the copy too: the source could change, or a disk fail, mid-copy.
            corrupted = ModelBundle(scratch).verify_hashes()
            if corrupted:
                raise PublishError(
                    f"copying {bundle.path} to {target} corrupted {', '.join(corrupted)}; "
                    "check the disk and publish again"
                )
        published_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        _write_json_atomically(
            model_root / CURRENT_FILE,
            {"version": version, "path": str(target.resolve()), "published_at": published_at},
        )

    logger.info("published %s version=%d path=%s", model_name, version, target)
    return PublishedVersion(model_name, version, target)


def current_version(repository: str | Path, model_name: str) -> PublishedVersion | None:
    """The version `current.json` points to, or None when nothing was published yet.

    Raises:
        PublishError: The model name is unusable or current.json cannot be read.
    """
    model_root = _model_root(repository, model_name)
    pointer = model_root / CURRENT_FILE
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
    return PublishedVersion(model_name, version, model_root / str(version))


def list_versions(repository: str | Path, model_name: str) -> list[PublishedVersion]:
    """Every published version of `model_name`, oldest first; empty when there is none.

    Raises:
        PublishError: The model name is unusable.
    """
    model_root = _model_root(repository, model_name)
    return [PublishedVersion(model_name, v, model_root / str(v)) for v in _versions(model_root)]


def _model_root(repository: str | Path, model_name: str) -> Path:
    if not _MODEL_NAME.fullmatch(model_name):
        raise PublishError(
            f"model name {model_name!r} cannot name a repository directory: use letters, "
            "digits, '.', '_' and '-', starting with a letter or digit"
        )
    return Path(repository) / model_name


def _verified_bundle(bundle_dir: str | Path) -> tuple[ModelBundle, list[str]]:
    """Open the bundle and check every file against its recorded hash.

    Returns:
        The bundle and the files to copy: those metadata.json vouches for, plus itself.
    """
    try:
        bundle = ModelBundle.open(bundle_dir)
        files = _recorded_files(bundle)
        mismatched = bundle.verify_hashes()
    except ModelNotFoundError as e:
        raise PublishError(f"refusing to publish: {e}") from e
    except (OSError, ValueError) as e:  # a recorded file gone, or metadata.json not JSON
        raise PublishError(f"refusing to publish {bundle_dir}: cannot verify it ({e})") from e
    if mismatched:
        raise PublishError(
            f"refusing to publish {bundle_dir}: {', '.join(mismatched)} changed since export "
            "(SHA-256 differs from metadata.json); export the model again"
        )
    return bundle, files


def _recorded_files(bundle: ModelBundle) -> list[str]:
    metadata = bundle.metadata
    recorded = metadata.get("files") if isinstance(metadata, dict) else None
    if not isinstance(recorded, dict):
        raise PublishError(
            f"refusing to publish {bundle.path}: metadata.json records no file hashes; "
            "export the model again"
        )
    unvouched = [n for n in REQUIRED_FILES if n != METADATA_FILE and n not in recorded]
    if unvouched:
        raise PublishError(
            f"refusing to publish {bundle.path}: metadata.json has no hash for "
            f"{', '.join(unvouched)}; export the model again"
        )
    names = sorted(recorded)
    # The names come from a file anyone could edit: keep every copy inside the bundle.
    escaping = [n for n in names if Path(n).name != n or n in {"", ".", ".."}]
    if escaping:
        raise PublishError(f"refusing to publish {bundle.path}: bad file names {escaping}")
    return [*names, METADATA_FILE]


@contextlib.contextmanager
def _publish_lock(model_root: Path) -> Iterator[None]:
    """Hold an exclusive flock on the model's lock file (released when the file closes).

    flock locks belong to the open file, so this excludes other processes and other threads
    of this one alike, as long as each opens the file itself.
    """
    with (model_root / LOCK_FILE).open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield


def _versions(model_root: Path) -> list[int]:
    if not model_root.is_dir():
        return []
    # Only plain integer names: atomic_directory's scratch dirs start with a dot.
    return sorted(
        int(p.name) for p in model_root.iterdir() if p.is_dir() and _VERSION.fullmatch(p.name)
    )


def _next_version(model_root: Path) -> int:
    """One past the highest version ever seen, so a number is never reused."""
    highest = max(_versions(model_root), default=0)
    pointed = current_version(model_root.parent, model_root.name)
    return max(highest, pointed.version if pointed else 0) + 1


def _write_json_atomically(path: Path, document: dict[str, Any]) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=2)
            handle.write("\n")
            handle.flush()
            # On disk before the rename, so a crash cannot leave an empty current.json.
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
