"""A model's versions on a KServe InferenceService: list them, promote a canary, roll back.

The versions are those the served history records (the `textops.dev/history` annotation,
see `served_history`) plus what the spec names now; each one's scores come from the
metadata.json of its bundle, read from its storageUri through fsspec. Only `get` and `patch`
on the InferenceService are needed; Knative revisions are never read.

Switching to a version (`ServiceVersions.switch_to`: a rollback) is a rollout of its
storageUri under its own number, in two writes through the deploy step's machinery
(`InferenceServiceRollout`: resourceVersion preconditions, waits for Ready):

1. the target with `canaryTrafficPercent: 0`: KServe keeps all traffic on the revision rolled
   out last (`latestRolledoutRevision`). While a canary runs that is the stable model, so the
   canary is cut off within seconds, before any new pod starts; and the bad model never gets
   more traffic than it had while the target's revision is starting (a plain switch to 100
   would route everything to the latest *ready* revision, the canary, until then);
2. once the target's revision is Ready, `canaryTrafficPercent: 100`.

If the target is not Ready in time, or a write fails, the spec that served before is written
back (canary share included), and the command fails with what serves now.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any, NoReturn

from textops.components.common.bundle import METADATA_FILE
from textops.components.common.errors import (
    ConfigError,
    DeployError,
    ModelNotFoundError,
    TextopsError,
)
from textops.components.common.kubernetes_api import ApiFailure
from textops.components.common.production_model import fetch_bundle_files
from textops.components.deploy.isvc import ModelRollout, ServiceState, read_state
from textops.components.deploy.kserve_rollout import InferenceServiceRollout
from textops.components.deploy.served_history import ServedPeriod, version_of_uri
from textops.components.deploy.versions import (
    ModelVersion,
    VersionChange,
    previous_version,
    scores_from_metadata,
)

logger = logging.getLogger(__name__)


class ServiceVersions(InferenceServiceRollout):
    """List, promote and roll back the versions of one InferenceService."""

    # --- reading ---------------------------------------------------------------------------

    def state(self) -> ServiceState:
        """The InferenceService's spec, as textops reads it.

        Raises:
            ModelNotFoundError: There is no such InferenceService, or it names no storageUri.
            ConfigError: The API refused the read (RBAC) or did not answer.
        """
        try:
            current = self._get()
        except ApiFailure as e:
            raise ConfigError(self._explain(e)) from e
        if current is None:
            raise ModelNotFoundError(
                f"there is no {self._where}: nothing was deployed there yet (check --namespace "
                "and --model-name)"
            )
        state = read_state(current, self.namespace)
        if not state.storage_uri:
            raise ModelNotFoundError(
                f"{self._where} names no storageUri: textops did not deploy it"
            )
        return state

    def versions(self) -> list[ModelVersion]:
        """Every version the InferenceService served or serves, newest first, with scores."""
        state = self.state()
        traffic = _traffic(state)
        known: dict[tuple[int | None, str], list[ServedPeriod]] = {}
        for period in state.history:
            if period.storage_uri:
                known.setdefault((period.version, period.storage_uri), []).append(period)
        for uri in traffic:
            if not any(key[1] == uri for key in known):
                number = state.version if uri == state.storage_uri else None
                known[(number, uri)] = []
        with tempfile.TemporaryDirectory(prefix="textops-versions-") as scratch:
            found = [
                _version(number, uri, traffic.get(uri, 0), periods, Path(scratch) / str(index))
                for index, ((number, uri), periods) in enumerate(known.items())
            ]
        return sorted(found, key=lambda v: -1 if v.version is None else v.version, reverse=True)

    # --- promotion -------------------------------------------------------------------------

    def promote(self, version: int | None = None) -> VersionChange:
        """Send all traffic to the canary, once its revision is Ready.

        Raises:
            ConfigError: `version` is not the canary's.
            DeployError: The canary did not become Ready, or a write failed; the canary
                split that served before is put back.
        """
        state = self.state()
        if not state.canary_running:
            return VersionChange(
                False,
                state.version,
                state.version,
                f"no canary runs on {self._where}: version {state.version} serves all traffic; "
                "nothing changed",
            )
        if version is not None and version != state.version:
            raise ConfigError(
                f"the canary on {self._where} is version {state.version}, not {version}: "
                "nothing was changed"
            )
        stable = version_of_uri(state.history, state.previous_storage_uri)
        assert state.storage_uri is not None
        self._finish(state.storage_uri, state.version, state.generation, state, "promote")
        return VersionChange(
            True,
            state.version,
            stable,
            f"promoted version {state.version} on {self._where} to all traffic (from "
            f"{state.canary_traffic_percent}%)",
        )

    def start_canary(self, storage_uri: str, percent: int) -> VersionChange:
        """Give the bundle at `storage_uri`, as the next version, `percent` of the traffic.

        The bundle stays in canary until `promote` or `roll_back_to`; run again with another
        share to change it.

        Raises:
            ConfigError: `percent` is not within 1..99, or another canary runs.
            DeployError: The canary did not become Ready, or a write failed; what served
                before is put back.
        """
        if not 0 < percent < 100:
            raise ConfigError(f"a canary's share is 1 to 99 percent, not {percent}")
        before = self.state()
        if before.storage_uri == storage_uri and before.canary_traffic_percent == percent:
            return VersionChange(
                False,
                before.version,
                _serving_version(before),
                f"version {before.version} ({storage_uri}) is in canary at {percent}% on "
                f"{self._where} already; nothing changed",
            )
        if before.storage_uri == storage_uri and before.canary_running:
            version, stable = before.version, before.previous_storage_uri
        elif before.storage_uri == storage_uri:
            raise ConfigError(
                f"{storage_uri} is version {before.version}, which serves all traffic on "
                f"{self._where} already: nothing to try in canary"
            )
        elif before.canary_running:
            raise ConfigError(
                f"version {before.version} is in canary on {self._where} already: promote it "
                "(`textops models promote --kserve`) or roll it back first"
            )
        else:
            version, stable = before.next_version, before.storage_uri
        patched = self._first_patch(ModelRollout(storage_uri, version, percent, stable), before)
        try:
            waited = self._wait(read_state(patched, self.namespace).generation)
        except ApiFailure as e:
            self._put_back(storage_uri, version, before, self._explain(e))
        if not waited.readiness.ready:
            self._put_back(storage_uri, version, before, f"it {self._failure(waited)}")
        logger.info("canary %s version=%d percent=%d", self._where, version, percent)
        return VersionChange(
            True,
            version,
            _serving_version(before),
            f"version {version} ({storage_uri}) gets {percent}% of the traffic on {self._where}; "
            "promote it with `textops models promote --kserve`, or roll it back with "
            "`textops models rollback --kserve`",
        )

    # --- rollback --------------------------------------------------------------------------

    def roll_back_to(self, version: int | None = None) -> VersionChange:
        """Serve the version before the current one (or `version`) with all traffic.

        While a canary runs, the version before it is the stable model it runs beside.

        Raises:
            ModelNotFoundError: No such version is recorded, or no previous version is.
            DeployError: The target did not become Ready, or a write failed; what served
                before is put back.
        """
        state = self.state()
        if version is not None:
            uri = _uri_of(state, version)
            if uri is None:
                numbers = sorted({p.version for p in state.history} | {state.version})
                raise ModelNotFoundError(
                    f"{self._where} has no record of a version {version} (versions: "
                    f"{', '.join(map(str, numbers))}); `textops models list --kserve` shows them"
                )
            return self.switch_to(uri, version, state)
        if state.canary_traffic_percent == 0:
            # Traffic is held for a switch that was stopped half way: finish it.
            assert state.storage_uri is not None
            return self.switch_to(state.storage_uri, state.version, state)
        if state.canary_running and state.previous_storage_uri:
            stable = version_of_uri(state.history, state.previous_storage_uri)
            # A canary from before the history: the deploy step numbered it one above.
            number = stable if stable is not None else max(state.version - 1, 0)
            return self.switch_to(state.previous_storage_uri, number, state)
        found = previous_version(state.history, lambda p: p.storage_uri == state.storage_uri)
        if found.already_from is not None:
            return VersionChange(
                False,
                state.version,
                found.already_from.version,
                f"{self._where} was already rolled back to version {state.version} (from "
                f"version {found.already_from.version}); nothing changed. To go back further, "
                "name the version: --version N",
            )
        if found.period is None or found.period.storage_uri is None:
            raise ModelNotFoundError(
                f"version {state.version} serves on {self._where} and there is no previous "
                f"version to roll back to ({found.reason or 'its bundle is not recorded'}); "
                "name one with --version N (`textops models list --kserve` shows them)"
            )
        return self.switch_to(found.period.storage_uri, found.period.version, state)

    def switch_to(
        self, storage_uri: str, version: int, state: ServiceState | None = None
    ) -> VersionChange:
        """Serve `storage_uri`, numbered `version`, with all traffic (see the module's steps).

        Raises:
            DeployError: It did not become Ready, or a write failed; what served before is
                put back.
        """
        before = state if state is not None else self.state()
        if before.storage_uri == storage_uri and not before.canary_running:
            return VersionChange(
                False,
                before.version,
                before.version,
                f"version {before.version} already serves all traffic on {self._where}; "
                "nothing changed",
            )
        if before.storage_uri == storage_uri:
            # Held or in canary already (an earlier run was stopped half way): finish it.
            generation = before.generation
        else:
            held = before.previous_storage_uri if before.canary_running else before.storage_uri
            hold = ModelRollout(storage_uri, version, 0, held, via="rollback")
            generation = read_state(self._first_patch(hold, before), self.namespace).generation
            logger.info(
                "holding traffic %s target=%s version=%d", self._where, storage_uri, version
            )
        self._finish(storage_uri, version, generation, before, "rollback")
        return VersionChange(
            True,
            version,
            _serving_version(before),
            f"rolled back {self._where} to version {version} ({storage_uri}), which serves all "
            f"traffic; before: {_describe(before)}",
        )

    # --- the shared steps ------------------------------------------------------------------

    def _first_patch(self, model: ModelRollout, before: ServiceState) -> dict[str, Any]:
        """Write a change's first spec over the one that serves `before`'s bundle; on a
        failure the InferenceService is as it was.

        Raises:
            DeployError: It could not be read or patched (nothing was changed).
        """
        try:
            current = self._require()
            return self._patch_current(model, current, expect_uris={before.storage_uri})
        except ApiFailure as e:
            raise DeployError(f"{self._explain(e)}; nothing was changed") from e

    def _finish(
        self, storage_uri: str, version: int, generation: int, before: ServiceState, via: str
    ) -> None:
        """Wait for the spec at `generation`, then send all traffic to it; or put `before` back."""
        try:
            waited = self._wait(generation)
            if waited.readiness.ready:
                whole = ModelRollout(storage_uri, version, via=via)
                patched = self._patch_current(whole, waited.isvc, expect_uris={storage_uri})
                waited = self._wait(read_state(patched, self.namespace).generation)
        except ApiFailure as e:
            self._put_back(storage_uri, version, before, self._explain(e))
        if not waited.readiness.ready:
            self._put_back(storage_uri, version, before, f"it {self._failure(waited)}")
        logger.info("%s %s version=%d storage_uri=%s", via, self._where, version, storage_uri)

    def _put_back(self, storage_uri: str, version: int, before: ServiceState, why: str) -> NoReturn:
        """Write the spec that served before back (canary share included), then raise."""
        head = f"serving version {version} ({storage_uri}) on {self._where} failed: {why}"
        assert before.storage_uri is not None
        canary = before.canary_running
        restore = ModelRollout(
            before.storage_uri,
            before.version,
            before.canary_traffic_percent if canary else None,
            before.previous_storage_uri if canary else None,
            via="restore",
        )
        logger.warning("putting back %s storage_uri=%s: %s", self._where, before.storage_uri, why)
        try:
            current = self._require()
            patched = self._patch_current(
                restore, current, expect_uris={storage_uri, before.storage_uri}
            )
            waited = self._wait(read_state(patched, self.namespace).generation)
        except ApiFailure as e:
            raise DeployError(
                f"{head}. Putting back what served before failed too ({self._explain(e)}): "
                f"restore it with `{self._restore_command(before.storage_uri)}`"
            ) from e
        if not waited.readiness.ready:
            raise DeployError(
                f"{head}. What served before ({before.storage_uri}) was put back but "
                f"{self._failure(waited)}: see `kubectl describe inferenceservice -n "
                f"{self.namespace} {self.name}`"
            )
        raise DeployError(f"{head}. Put back what served before: {_describe(before)}")


def bundle_problem(storage_uri: str) -> str | None:
    """Check that a complete bundle is at `storage_uri` before a rollout names it.

    Returns:
        None when it is there; why it could not be checked from here otherwise (no
        credentials for the store, a PVC), which KServe's storage initializer may still read.

    Raises:
        ModelNotFoundError: Nothing, or an incomplete bundle, is at `storage_uri`.
    """
    with tempfile.TemporaryDirectory(prefix="textops-bundle-check-") as scratch:
        try:
            fetch_bundle_files(storage_uri, Path(scratch), (METADATA_FILE,))
        except ConfigError as e:
            return str(e)
    return None


def _traffic(state: ServiceState) -> dict[str, int]:
    """storageUri -> share of traffic the spec sends it."""
    if not state.storage_uri:
        return {}
    spec = ModelRollout(
        state.storage_uri,
        state.version,
        state.canary_traffic_percent,
        state.previous_storage_uri if state.canary_running else None,
    )
    return spec.traffic()


def _serving_version(state: ServiceState) -> int | None:
    """The version with most of the traffic: the stable one while a canary runs."""
    if state.canary_running and state.previous_storage_uri:
        return version_of_uri(state.history, state.previous_storage_uri)
    return state.version


def _uri_of(state: ServiceState, version: int) -> str | None:
    if version == state.version and state.storage_uri:
        return state.storage_uri
    for period in reversed(state.history):
        if period.version == version and period.storage_uri:
            return period.storage_uri
    return None


def _describe(state: ServiceState) -> str:
    """What a spec serves, in words: one version, or a canary beside its stable version."""
    if state.canary_running and state.previous_storage_uri:
        stable = version_of_uri(state.history, state.previous_storage_uri)
        return (
            f"version {'?' if stable is None else stable} ({state.previous_storage_uri}) at "
            f"{100 - (state.canary_traffic_percent or 0)}% beside the canary version "
            f"{state.version} ({state.storage_uri}) at {state.canary_traffic_percent}%"
        )
    return f"version {state.version} ({state.storage_uri}) with all traffic"


def _version(
    number: int | None,
    storage_uri: str,
    traffic_percent: int,
    periods: list[ServedPeriod],
    scratch: Path,
) -> ModelVersion:
    accuracy = macro_f1 = created = problem = None
    try:
        fetched = fetch_bundle_files(storage_uri, scratch, (METADATA_FILE,))
        metadata: Any = json.loads((fetched / METADATA_FILE).read_text(encoding="utf-8"))
        accuracy, macro_f1, created = scores_from_metadata(metadata)
    except (TextopsError, OSError, ValueError) as e:
        problem = f"cannot read its {METADATA_FILE}: {e}"
        logger.warning("no scores storage_uri=%s error=%s", storage_uri, e)
    return ModelVersion(
        version=number,
        location=storage_uri,
        accuracy=accuracy,
        macro_f1=macro_f1,
        created_at=created,
        traffic_percent=traffic_percent,
        periods=tuple(periods),
        problem=problem,
    )
