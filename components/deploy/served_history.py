"""When each model version served: the record `textops models list` shows and `rollback` reads.

The record is a list of serving periods, oldest first: version N (at a storageUri, on an
InferenceService) took traffic from `from` until `to` (None while it still does). `via` says
which change started a period and `ended_by` which change ended it: `publish` and `rollout` (a
deploy), `promote`, `rollback`, `restore` (a failed rollout put back what served before it),
`unknown` (served before the record began); a period also ends by `restart` when a rollback
makes the bundle that was serving beside a canary its target, and a new period begins.

- Local model repository: `history.jsonl` beside `current.json`, one event per line
  (`{"version": 3, "at": "...", "via": "rollback"}`: version 3 became current; a publish
  adds `"replaced": [2]`, the version current before it), rewritten
  atomically under the publish lock before `current.json` changes (`deploy.publish`). A period
  runs from one event to the next.
- InferenceService: the annotation `textops.dev/history`, a JSON list of the last
  `MAX_PERIODS` periods (`{"version", "storageUri", "from", "to", "via", "endedBy"}`, and
  `"replaced"`: the versions serving when a rollout started it), written
  by the same patch that changes the spec (`isvc.inference_service`). A period is open while
  the spec sends its storageUri a share of the traffic, so a canary and the model it runs
  beside are both open; times are those of the writes, not of the revisions becoming Ready.

Either record may be missing (a repository or an InferenceService from before it existed, a
hand edit): the readers then say "unknown" rather than guess.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from textops.components.common.model_repository import CURRENT_FILE

logger = logging.getLogger(__name__)

#: The local repository's record, beside current.json.
HISTORY_FILE = "history.jsonl"
#: The InferenceService's record.
HISTORY_ANNOTATION = "textops.dev/history"
#: Periods kept on an InferenceService (an annotation is small; about 150 bytes each).
MAX_PERIODS = 25
#: How a period ends when its bundle goes on serving as the target of a rollback.
RESTART = "restart"


def utc_now() -> str:
    """Now, as the record writes times: ISO 8601, UTC, whole seconds."""
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class ServedPeriod:
    """One stretch of time during which a version took traffic."""

    version: int
    #: When it began (ISO 8601); None: before the record began.
    started: str | None
    #: When it ended; None while it is open (or when the record lost track of it).
    ended: str | None = None
    via: str = "unknown"
    ended_by: str | None = None
    #: Where the bundle is (InferenceService); None in the local repository.
    storage_uri: str | None = None
    #: The versions that served when a rollout started this period: those it replaced.
    replaced: tuple[int, ...] = ()

    @property
    def is_open(self) -> bool:
        return self.ended is None

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"version": self.version}
        if self.storage_uri is not None:
            document["storageUri"] = self.storage_uri
        document.update({"from": self.started, "to": self.ended, "via": self.via})
        if self.ended_by is not None:
            document["endedBy"] = self.ended_by
        if self.replaced:
            document["replaced"] = list(self.replaced)
        return document

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> ServedPeriod:
        """Raises: ValueError, KeyError, TypeError: not a period."""
        return cls(
            version=int(document["version"]),
            started=_optional_text(document.get("from")),
            ended=_optional_text(document.get("to")),
            via=str(document.get("via") or "unknown"),
            ended_by=_optional_text(document.get("endedBy")),
            storage_uri=_optional_text(document.get("storageUri")),
            replaced=tuple(int(v) for v in document.get("replaced") or ()),
        )


def _optional_text(value: Any) -> str | None:
    return None if value is None else str(value)


# --- the InferenceService's record --------------------------------------------------------


def parse_periods(
    text: str | None, where: str = "the history annotation"
) -> tuple[ServedPeriod, ...]:
    """The periods an annotation holds; empty (and a warning) when it is missing or damaged."""
    if not text:
        return ()
    try:
        documents = json.loads(text)
        if not isinstance(documents, list):
            raise TypeError(f"a JSON list was expected, not {type(documents).__name__}")
        return tuple(ServedPeriod.from_json(d) for d in documents)
    except (ValueError, KeyError, TypeError) as e:
        logger.warning("ignoring unreadable history where=%s error=%s", where, e)
        return ()


def format_periods(periods: Iterable[ServedPeriod]) -> str:
    """The annotation's value: compact JSON."""
    return json.dumps([p.to_json() for p in periods], separators=(",", ":"))


def next_periods(
    periods: Sequence[ServedPeriod],
    traffic: Mapping[str, int],
    version_of: Mapping[str, int],
    *,
    via: str,
    now: str,
    target: str | None = None,
) -> tuple[ServedPeriod, ...]:
    """The record after a write that sends `traffic` (storageUri -> percent) from `now` on.

    Open periods of storageUris that get no traffic end; a storageUri that gets traffic and has
    no open period starts one, numbered by `version_of` (left out when its number is not
    known). A rollback that sends all traffic to its `target` starts a new period for it even
    when the target was serving already (beside a canary), so that "the serving period began
    with a rollback" holds exactly when the last change was one. A period a rollout starts
    names the versions that served before the write: those the new bundle replaces.
    """
    serving = {uri for uri, share in traffic.items() if share > 0}
    served = sorted({p.version for p in periods if p.is_open})
    restarting = via == "rollback" and target is not None and traffic.get(target, 0) >= 100
    updated: list[ServedPeriod] = []
    for period in periods:
        if not period.is_open:
            pass
        elif restarting and period.storage_uri == target and period.via != "rollback":
            period = replace(period, ended=now, ended_by=RESTART)
        elif period.storage_uri not in serving:
            period = replace(period, ended=now, ended_by=via)
        updated.append(period)
    still_open = {p.storage_uri for p in updated if p.is_open}
    for uri in sorted(serving - still_open):
        if uri in version_of:
            version = version_of[uri]
            replaced = tuple(v for v in served if v != version) if via == "rollout" else ()
            updated.append(ServedPeriod(version, now, None, via, None, uri, replaced))
    # Forget the oldest ended periods first: an open one names a bundle that serves now.
    while len(updated) > MAX_PERIODS:
        oldest = next((i for i, p in enumerate(updated) if not p.is_open), 0)
        del updated[oldest]
    return tuple(updated)


def version_of_uri(periods: Sequence[ServedPeriod], storage_uri: str | None) -> int | None:
    """The version the most recent period of `storage_uri` gave it; None when none did."""
    for period in reversed(periods):
        if storage_uri is not None and period.storage_uri == storage_uri:
            return period.version
    return None


# --- the local repository's record --------------------------------------------------------


def history_event(version: int, via: str, at: str | None, replaced: Sequence[int] = ()) -> str:
    """One line of history.jsonl: `version` became current `at`, through `via`; a publish
    also names the versions it `replaced`."""
    event: dict[str, Any] = {"version": version, "at": at, "via": via}
    if replaced:
        event["replaced"] = list(replaced)
    return json.dumps(event) + "\n"


def pointer_since(model_root: Path) -> str | None:
    """When current.json was written, as it says (`since`, or `published_at` before that
    field existed); None when it does not say or cannot be read."""
    try:
        document = json.loads((model_root / CURRENT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict):
        return None
    since = document.get("since") or document.get("published_at")
    return str(since) if since else None


def read_local_periods(
    model_root: Path, current: int | None, current_since: str | None = None
) -> tuple[ServedPeriod, ...]:
    """The periods history.jsonl records, reconciled with the version current.json names.

    Args:
        model_root: The model's directory in the repository.
        current: The version current.json names now (None: nothing is current).
        current_since: When current.json was written, for a repository with no record of it
            (one published before history.jsonl existed).
    """
    periods = list(_local_events(model_root / HISTORY_FILE))
    if current is not None and (not periods or periods[-1].version != current):
        # The record is behind current.json (it predates the record, or was edited by hand):
        # what served last ended at an unknown time, and the current one began at one.
        if periods:
            periods[-1] = replace(periods[-1], ended_by="unknown")
        since = current_since if not periods else None
        periods.append(ServedPeriod(current, since, None, "unknown"))
    return tuple(periods)


def _local_events(path: Path) -> Iterable[ServedPeriod]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    events: list[tuple[int, str | None, str, tuple[int, ...]]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            document = json.loads(line)
            replaced = tuple(int(v) for v in document.get("replaced") or ())
            events.append(
                (int(document["version"]), document.get("at"), str(document["via"]), replaced)
            )
        except (ValueError, KeyError, TypeError) as e:
            logger.warning("ignoring history line path=%s line=%d error=%s", path, number, e)
    periods = []
    for index, (version, at, via, replaced) in enumerate(events):
        following = events[index + 1] if index + 1 < len(events) else None
        ended, ended_by = (following[1], following[2]) if following else (None, None)
        periods.append(ServedPeriod(version, at, ended, via, ended_by, replaced=replaced))
    return periods


# --- reading the record -------------------------------------------------------------------


def serving_period(
    periods: Sequence[ServedPeriod], is_current: Callable[[ServedPeriod], bool]
) -> int | None:
    """The index of the last period for which `is_current(period)` holds; None if none."""
    for index in range(len(periods) - 1, -1, -1):
        if is_current(periods[index]):
            return index
    return None


def served_before(periods: Sequence[ServedPeriod], current: int) -> ServedPeriod | None:
    """The period that served before the current one (`periods[current]`), or None.

    The last earlier period of another version, skipping any ended by `restore`: a rollout
    that failed and was undone never really served.
    """
    serving_version = periods[current].version
    for period in reversed(periods[:current]):
        if period.version != serving_version and period.ended_by != "restore":
            return period
    return None
