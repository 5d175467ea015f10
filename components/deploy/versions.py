"""A model's versions, and moving between them: list, promote, roll back (local repository).

`textops models` drives this module for the local model repository and `service_versions` for
an InferenceService; both answer with the same `ModelVersion` and `VersionChange`, and choose
"the previous version" by the same rule (`previous_version`).

In the local repository every version is published whole and `current.json` names the one in
service; publishing makes the new version current at once, so no version waits "published but
not serving" the way a canary does. Promoting therefore means making a version that exists
current again: by default the newest, which is how a rollback is undone. Rolling back makes the
version that served before the current one current (or a named one). Both check the version's
files against its metadata.json first, record the change in `history.jsonl`, and with a
server URL hot-load it (`hot_load`), as the deploy step does after a publish.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from textops.components.common import model_repository
from textops.components.common.bundle import METADATA_FILE, ModelBundle
from textops.components.common.errors import ModelNotFoundError, PublishError
from textops.components.deploy.served_history import (
    HISTORY_FILE,
    ServedPeriod,
    pointer_since,
    read_local_periods,
    served_before,
    serving_period,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelVersion:
    """One version of a model: its scores, where it is, and when it served."""

    #: None when the record does not say (a canary's stable from before the history).
    version: int | None
    #: A directory of the local repository, or a storageUri.
    location: str
    accuracy: float | None
    macro_f1: float | None
    created_at: str | None
    #: Share of traffic it gets now, 0..100.
    traffic_percent: int
    periods: tuple[ServedPeriod, ...]
    #: Why the scores are missing (metadata.json unreadable), else None.
    problem: str | None = None
    #: False when no served history is recorded (a repository from before it): no periods
    #: then means "unknown", not "never served".
    history_known: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "location": self.location,
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "created_at": self.created_at,
            "traffic_percent": self.traffic_percent,
            "served": [p.to_json() for p in self.periods],
            "problem": self.problem,
            "history_known": self.history_known,
        }


@dataclass(frozen=True)
class VersionChange:
    """What a promotion or rollback did."""

    changed: bool
    #: The version serving all traffic afterwards (or the canary's, after a promotion).
    version: int
    #: The version that served before (None: unknown).
    previous: int | None
    #: One sentence for the operator.
    message: str


def scores_from_metadata(metadata: Any) -> tuple[float | None, float | None, str | None]:
    """Accuracy, macro-F1 and created-at from a bundle's metadata.json document."""
    metrics = metadata.get("metrics") if isinstance(metadata, dict) else None
    metrics = metrics if isinstance(metrics, dict) else {}

    def number(name: str) -> float | None:
        value = metrics.get(name)
        return float(value) if isinstance(value, int | float) else None

    created = metadata.get("created_at") if isinstance(metadata, dict) else None
    return number("accuracy"), number("macro_f1"), str(created) if created else None


# --- which version is "the previous one" ----------------------------------------------------


@dataclass(frozen=True)
class PreviousVersion:
    """The answer to "what served before?": a period, or why there is none to go back to."""

    period: ServedPeriod | None
    #: Set when the current version was itself reached by a rollback (nothing to do).
    already_from: ServedPeriod | None = None
    #: Why there is no previous version, when `period` and `already_from` are both None.
    reason: str = ""


def previous_version(
    periods: Sequence[ServedPeriod], is_current: Callable[[ServedPeriod], bool]
) -> PreviousVersion:
    """The version that served before the current one, from the served history.

    A current version that a rollback put in place is not rolled back again: running
    `rollback` twice goes back once (and the answer names where the rollback came from),
    rather than flipping between two versions or walking further back unasked.
    """
    current = serving_period(periods, is_current)
    if current is None:
        return PreviousVersion(None, reason="the served history does not record it")
    if periods[current].via == "rollback":
        return PreviousVersion(None, already_from=served_before(periods, current))
    before = served_before(periods, current)
    if before is None:
        return PreviousVersion(None, reason="no other version served before it")
    return PreviousVersion(before)


# --- the local repository -------------------------------------------------------------------


def local_versions(repository: str | Path, model_name: str) -> list[ModelVersion]:
    """Every published version of `model_name`, newest first, with scores and served history.

    Raises:
        PublishError: The repository is a URI, the model name is unusable, or current.json
            cannot be read.
    """
    root = model_repository.model_root(repository, model_name)
    current = model_repository.current_version(repository, model_name)
    serving = current.version if current else None
    periods = read_local_periods(root, serving, pointer_since(root))
    history_known = (root / HISTORY_FILE).is_file()
    found = []
    for published in reversed(model_repository.list_versions(repository, model_name)):
        accuracy = macro_f1 = created = problem = None
        try:
            metadata = json.loads((published.path / METADATA_FILE).read_text(encoding="utf-8"))
            accuracy, macro_f1, created = scores_from_metadata(metadata)
        except (OSError, ValueError) as e:
            problem = f"{METADATA_FILE} unreadable: {e}"
        found.append(
            ModelVersion(
                version=published.version,
                location=str(published.path),
                accuracy=accuracy,
                macro_f1=macro_f1,
                created_at=created,
                traffic_percent=100 if published.version == serving else 0,
                periods=tuple(p for p in periods if p.version == published.version),
                problem=problem,
                history_known=history_known,
            )
        )
    return found


@dataclass(frozen=True)
class LocalVersions:
    """Promote and roll back the versions of one model in the local model repository, and
    hot-load the one made current into the server at `serve_url` (empty: none) within
    `timeout_seconds`."""

    repository: str | Path
    model_name: str
    serve_url: str = ""
    timeout_seconds: float = 30.0

    def promote(self, version: int | None = None) -> VersionChange:
        """Make `version` (default: the newest) current, and load it into the server if given.

        Raises:
            ModelNotFoundError: Nothing is published, or there is no such version.
            PublishError: The version's files differ from its metadata.json.
            DeployError: The server did not load it (current.json names it nonetheless).
        """
        numbers = _published(self.repository, self.model_name)
        return self._switch(numbers[-1] if version is None else version, "promote")

    def roll_back_to(self, version: int | None = None) -> VersionChange:
        """Make the version that served before the current one (or `version`) current again.

        Raises:
            ModelNotFoundError: Nothing is published, there is no such version, or no previous
                version is recorded.
            PublishError: The version's files differ from its metadata.json.
            DeployError: The server did not load it (current.json names it nonetheless).
        """
        repository, model_name = self.repository, self.model_name
        _published(repository, model_name)
        if version is None:
            current = model_repository.current_version(repository, model_name)
            if current is None:
                raise ModelNotFoundError(f"no version of {model_name} is current in {repository}")
            root = model_repository.model_root(repository, model_name)
            periods = read_local_periods(root, current.version, pointer_since(root))
            found = previous_version(periods, lambda p: p.version == current.version)
            if found.period is None:
                already = _already_rolled_back(model_name, current.version, found)
                # Nothing to change; with a server URL, make sure it serves the current version.
                unchanged = self._switch(current.version, "rollback")
                return replace(already, changed=unchanged.changed)
            version = found.period.version
        return self._switch(version, "rollback")

    def _switch(self, version: int, via: str) -> VersionChange:
        """Make `version` current (`via` 'promote' or 'rollback', as history.jsonl records it)
        and hot-load it into the server, if there is one."""
        from textops.components.deploy.publish import make_current

        repository, model_name = self.repository, self.model_name
        serve_url = self.serve_url.strip()
        root = model_repository.model_root(repository, model_name)
        path = root / str(version)
        if not path.is_dir():
            known = ", ".join(str(n) for n in model_repository.version_numbers(root))
            raise ModelNotFoundError(
                f"{model_name} has no version {version} in {repository} (versions: {known})"
            )
        _check_files(model_name, version, path)
        before = model_repository.current_version(repository, model_name)
        changed = make_current(repository, model_name, version, via=via)
        if serve_url:
            # Also when nothing changed: a server that missed the last switch catches up.
            from textops.components.deploy.hot_load import hot_load

            hot_load(serve_url, model_name, version, timeout_seconds=self.timeout_seconds)
        previous = before.version if before else None
        verb = "promoted" if via == "promote" else "rolled back"
        if not changed:
            message = f"version {version} of {model_name} is current already; nothing changed"
        elif via == "promote":
            message = f"{verb} {model_name} to version {version} (was {previous})"
        else:
            message = f"{verb} {model_name} to version {version} (from {previous})"
        if serve_url:
            message += f"; {serve_url} serves version {version}"
        return VersionChange(changed, version, previous, message)


def _published(repository: str | Path, model_name: str) -> list[int]:
    root = model_repository.model_root(repository, model_name)
    numbers = model_repository.version_numbers(root)
    if not numbers:
        raise ModelNotFoundError(
            f"no version of {model_name} is published in {repository}: train one with "
            "`textops run`, or give the repository with --model-repository"
        )
    return numbers


def _already_rolled_back(model_name: str, serving: int, found: PreviousVersion) -> VersionChange:
    """The answer when a rollback has nothing to do; ModelNotFoundError when it cannot act."""
    if found.already_from is None:
        raise ModelNotFoundError(
            f"version {serving} of {model_name} serves and there is no previous version to "
            f"roll back to ({found.reason}); name one with --version N (`textops models list` "
            "shows them)"
        )
    return VersionChange(
        False,
        serving,
        found.already_from.version,
        f"{model_name} was already rolled back to version {serving} (from version "
        f"{found.already_from.version}); nothing changed. To go back further, name the "
        "version: --version N",
    )


def _check_files(model_name: str, version: int, path: Path) -> None:
    """Refuse a version whose files are missing or differ from its metadata.json."""
    try:
        damaged = ModelBundle.open(path).verify_hashes()
    except ModelNotFoundError as e:
        raise PublishError(f"version {version} of {model_name} cannot serve: {e}") from e
    except (OSError, ValueError) as e:
        raise PublishError(
            f"version {version} of {model_name} cannot serve: its files cannot be checked ({e})"
        ) from e
    if damaged:
        raise PublishError(
            f"version {version} of {model_name} cannot serve: {', '.join(damaged)} differ from "
            "the hashes in its metadata.json; pick another version"
        )
