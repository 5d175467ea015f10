"""Where a model version comes from: the data that trained it and the versions it replaced.

A bundle's metadata.json records its `lineage` (`common.bundle.training_lineage`): the base
data and its fingerprint, and each feedback snapshot merged into it. Which versions it
replaced is known only once it is deployed: in the local repository the published copy's
metadata.json and history.jsonl say it (`publish`), on an InferenceService the served period
its rollout started (`served_history`). `textops models lineage` reads one version's record
and then, version by version, the records of those it replaced.

A bundle exported before lineage was recorded has none: its record says so rather than fail.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textops.components.common import model_repository
from textops.components.common.bundle import METADATA_FILE, recorded_lineage
from textops.components.common.errors import ModelNotFoundError, TextopsError
from textops.components.common.production_model import fetch_bundle_files
from textops.components.deploy.isvc import ServiceState
from textops.components.deploy.served_history import (
    ServedPeriod,
    pointer_since,
    read_local_periods,
)


@dataclass(frozen=True)
class VersionLineage:
    """One version's record: its bundle's lineage and the versions it replaced."""

    version: int
    #: A directory of the local repository, or a storageUri; None when no record names it.
    location: str | None
    #: The bundle's `lineage` (base data, feedback snapshots); None when it records none.
    lineage: dict[str, Any] | None
    replaced: tuple[int, ...] = ()
    #: Why the bundle's metadata.json could not be read, else None.
    problem: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "location": self.location,
            "lineage": self.lineage,
            "replaced": list(self.replaced),
            "problem": self.problem,
        }

    def lines(self) -> list[str]:
        """The lines `textops models lineage` prints for this version."""
        lines = [f"version {self.version} ({self.location or 'location unknown'})"]
        if self.problem:
            lines.append(f"  {self.problem}")
        if self.lineage is None:
            lines.append("  no lineage recorded (exported before textops recorded it)")
        else:
            lines += _data_lines(self.lineage)
        replaced = ", ".join(f"version {v}" for v in self.replaced)
        lines.append(f"  replaced: {replaced or 'none recorded'}")
        return lines


def _data_lines(lineage: dict[str, Any]) -> list[str]:
    """The base data, the data as split and each feedback snapshot, one line each."""
    base = lineage.get("base") or {}
    lines = [
        f"  base data: {base.get('data') or '?'} (fingerprint {base.get('fingerprint') or '?'})"
    ]
    trained_on = lineage.get("data_fingerprint")
    if trained_on and trained_on != base.get("fingerprint"):
        # Preprocess's fingerprint: the data once merged, cleaned and de-duplicated.
        lines.append(f"  trained on: fingerprint {trained_on} (the data as split)")
    snapshots = lineage.get("feedback") or []
    if not snapshots:
        lines.append("  feedback: none")
    for snapshot in snapshots:
        window = snapshot.get("window") or {}
        since, until = window.get("since") or "?", window.get("until") or "now"
        lines.append(
            f"  feedback: {snapshot.get('uri') or '?'} (fingerprint "
            f"{snapshot.get('fingerprint') or '?'}, window {since} → {until}, rows used "
            f"{snapshot.get('rows_used', '?')}, held out {snapshot.get('rows_held_out', '?')})"
        )
    return lines


def lineage_chain(first: int, read: Callable[[int], VersionLineage]) -> list[VersionLineage]:
    """`first`'s record, then those of the versions it replaced and theirs, newest first.

    Each version appears once, so a record that names a version twice (a rollback, then a
    new rollout over it) cannot loop.
    """
    chain: list[VersionLineage] = []
    waiting, seen = [first], {first}
    while waiting:
        record = read(waiting.pop(0))
        chain.append(record)
        for version in record.replaced:
            if version not in seen:
                seen.add(version)
                waiting.append(version)
    return sorted(chain, key=lambda record: record.version, reverse=True)


def local_lineage(
    repository: str | Path, model_name: str, version: int | None = None
) -> list[VersionLineage]:
    """The lineage of `version` (default: the current one) in the local model repository.

    Raises:
        ModelNotFoundError: Nothing is current, or there is no such version.
        PublishError: The repository is a URI or the model name is unusable.
    """
    root = model_repository.model_root(repository, model_name)
    current = model_repository.current_version(repository, model_name)
    periods = read_local_periods(root, current.version if current else None, pointer_since(root))
    published = set(model_repository.version_numbers(root))
    if version is None:
        if current is None:
            raise ModelNotFoundError(
                f"no version of {model_name} is current in {repository}: train one with "
                "`textops run`, or give the repository with --model-repository"
            )
        version = current.version
    if version not in published:
        raise ModelNotFoundError(_no_version(model_name, version, repository, published))

    def read(number: int) -> VersionLineage:
        if number not in published:
            return VersionLineage(number, None, None, problem="no longer in the repository")
        path = root / str(number)
        return _from_metadata(number, str(path), path / METADATA_FILE, periods)

    return lineage_chain(version, read)


def service_lineage(
    state: ServiceState, where: str, version: int | None = None
) -> list[VersionLineage]:
    """The lineage of `version` (default: the one the spec names) on the InferenceService
    whose spec is `state` (`where`: its name, for messages).

    Each bundle's metadata.json is read from its storageUri; the versions it replaced come
    from the served history its rollout wrote.

    Raises:
        ModelNotFoundError: The served history records no such version.
    """
    uris = {p.version: p.storage_uri for p in state.history if p.storage_uri}
    if state.storage_uri:
        uris[state.version] = state.storage_uri
    if version is None:
        version = state.version
    if version not in uris:
        raise ModelNotFoundError(
            f"{where} has no record of a version "
            f"{version} (versions: {', '.join(map(str, sorted(uris)))}); `textops models list "
            "--kserve` shows them"
        )

    with tempfile.TemporaryDirectory(prefix="textops-lineage-") as scratch:

        def read(number: int) -> VersionLineage:
            uri = uris.get(number)
            if uri is None:
                return VersionLineage(number, None, None, problem="no longer in the history")
            try:
                fetched = fetch_bundle_files(uri, Path(scratch) / str(number), (METADATA_FILE,))
            except TextopsError as e:
                record = VersionLineage(number, uri, None, problem=f"cannot read it: {e}")
                return _with_replaced(record, None, state.history)
            return _from_metadata(number, uri, fetched / METADATA_FILE, state.history)

        return lineage_chain(version, read)


def _from_metadata(
    version: int, location: str, path: Path, periods: Sequence[ServedPeriod]
) -> VersionLineage:
    """A version's record from its metadata.json, with what the served history adds."""
    try:
        metadata: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        record = VersionLineage(version, location, None, problem=f"{METADATA_FILE} unreadable: {e}")
        return _with_replaced(record, None, periods)
    lineage = recorded_lineage(metadata)
    # `replaced` is the deploy's fact, not the data's: it is shown on its own.
    data = {k: v for k, v in lineage.items() if k != "replaced"} if lineage else None
    return _with_replaced(VersionLineage(version, location, data or None), lineage, periods)


def _with_replaced(
    record: VersionLineage, lineage: dict[str, Any] | None, periods: Sequence[ServedPeriod]
) -> VersionLineage:
    """`record` with the versions it replaced: the bundle's own record, else the history's."""
    replaced: Sequence[Any] = (lineage or {}).get("replaced") or ()
    if not replaced:
        starts = [p for p in periods if p.version == record.version and p.replaced]
        replaced = starts[-1].replaced if starts else ()
    numbers = tuple(int(v) for v in replaced if isinstance(v, int | float))
    return VersionLineage(record.version, record.location, record.lineage, numbers, record.problem)


def _no_version(model_name: str, version: int, repository: str | Path, known: set[int]) -> str:
    listed = ", ".join(str(n) for n in sorted(known)) or "none"
    return (
        f"{model_name} has no version {version} in {repository} (versions: {listed}); "
        "`textops models list` shows them"
    )
