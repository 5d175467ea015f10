"""Publish model bundles to a local model repository, one integer version per bundle.

The layout is the one KServe and Triton model repositories use:

    <repository>/<model_name>/1/            a complete bundle, never modified once written
    <repository>/<model_name>/2/
    <repository>/<model_name>/current.json  {"version": 2, "path": ..., "since": ..., "via": ...}
    <repository>/<model_name>/history.jsonl one line per change of current.json (served_history)

A version directory appears by one atomic rename once its copy is complete and verified, and
`current.json` is replaced atomically after that, so a reader (the predictor, a rollback)
sees either the old version or the new one, never a half-copied bundle. The copy's
metadata.json records, under `lineage.replaced`, the version that was current when it was
published (written in the scratch copy, before the rename). `current.json` is
written in one place, `_point_current_at`, which records the change in `history.jsonl` first:
publishing, promoting and rolling back all go through it, under the publish lock. Reading the
repository (the layout, its versions, the pointer) is `common.model_repository`'s job.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from textops.components.common import model_repository
from textops.components.common.bundle import (
    METADATA_FILE,
    REQUIRED_FILES,
    ModelBundle,
    atomic_directory,
    record_replaced,
    write_text_atomically,
)
from textops.components.common.errors import ModelNotFoundError, PublishError
from textops.components.common.model_repository import (
    CURRENT_FILE,
    PublishedVersion,
    current_version,
)
from textops.components.deploy.served_history import (
    HISTORY_FILE,
    history_event,
    pointer_since,
    utc_now,
)

logger = logging.getLogger(__name__)

#: Held with flock while a version number is taken and filled.
LOCK_FILE = ".publish.lock"


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
    model_root = model_repository.model_root(repository, model_name)
    bundle, files = verified_bundle(bundle_dir)

    model_root.mkdir(parents=True, exist_ok=True)
    with _publish_lock(model_root):
        version = _next_version(model_root)
        target = model_root / str(version)
        pointed = current_version(repository, model_name)
        # The version this one takes over from, for its lineage (`textops models lineage`).
        replaced = [pointed.version] if pointed else []
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
            # The copy, not the export's bundle: the version directory appears with it.
            record_replaced(scratch, replaced)
        _point_current_at(model_root, version, "publish", replaced)

    logger.info(
        "published %s version=%d path=%s replaced=%s", model_name, version, target, replaced
    )
    return PublishedVersion(model_name, version, target)


def make_current(repository: str | Path, model_name: str, version: int, *, via: str) -> bool:
    """Point current.json at an already published version (a promotion or a rollback).

    Args:
        repository: The model repository's root directory.
        model_name: The model's name in the repository.
        version: The version to serve; its directory must exist.
        via: The change, as history.jsonl records it: "promote" or "rollback".

    Returns:
        Whether anything changed: False when `version` was current already.

    Raises:
        PublishError: The model name is unusable or current.json cannot be read.
        ModelNotFoundError: No directory holds `version`.
    """
    model_root = model_repository.model_root(repository, model_name)
    if version not in model_repository.version_numbers(model_root):
        raise ModelNotFoundError(
            f"{model_name} has no version {version} in {repository}; `textops models list` "
            "shows the versions there are"
        )
    with _publish_lock(model_root):
        # Read under the lock: a publish or another switch may have moved it meanwhile.
        pointed = current_version(repository, model_name)
        if pointed is not None and pointed.version == version:
            return False
        _point_current_at(model_root, version, via)
    logger.info("made current %s version=%d via=%s", model_name, version, via)
    return True


def _point_current_at(
    model_root: Path, version: int, via: str, replaced: Sequence[int] = ()
) -> None:
    """Record the change in history.jsonl, then point current.json at `version`.

    `replaced`: the versions a publish took over from, which its event records.

    The caller holds the publish lock. The record is written first, so a failure leaves
    current.json as it was; a crash between the two leaves a record one change ahead, which
    its reader reconciles with current.json.
    """
    now = utc_now()
    history = model_root / HISTORY_FILE
    try:
        recorded = history.read_text(encoding="utf-8")
    except FileNotFoundError:
        # A repository from before the record: start it with what serves now, if anything.
        pointed = current_version(model_root.parent, model_root.name)
        since = pointer_since(model_root)
        recorded = history_event(pointed.version, "unknown", since) if pointed else ""
    if recorded and not recorded.endswith("\n"):
        recorded += "\n"
    write_text_atomically(history, recorded + history_event(version, via, now, replaced))
    document: dict[str, Any] = {
        "version": version,
        "path": str((model_root / str(version)).resolve()),
        "since": now,
        "via": via,
    }
    if via == "publish":
        document["published_at"] = now
    write_text_atomically(model_root / CURRENT_FILE, json.dumps(document, indent=2) + "\n")


def verified_bundle(bundle_dir: str | Path) -> tuple[ModelBundle, list[str]]:
    """Open the bundle and check every file against its recorded hash.

    Returns:
        The bundle and the files to copy: those metadata.json vouches for, plus itself.

    Raises:
        PublishError: The bundle is incomplete, or a file differs from its recorded hash.
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


def _next_version(model_root: Path) -> int:
    """One past the highest version ever seen, so a number is never reused."""
    highest = max(model_repository.version_numbers(model_root), default=0)
    pointed = current_version(model_root.parent, model_root.name)
    return max(highest, pointed.version if pointed else 0) + 1
