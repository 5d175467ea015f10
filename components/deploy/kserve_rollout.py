"""Roll a model bundle out to a KServe InferenceService: create or patch, canary, promote, undo.

One rollout, as `InferenceServiceRollout.roll_out` runs it:

1. No InferenceService yet: create it with the bundle's storageUri, wait for Ready.
2. It already serves this storageUri with all traffic, in textops's shape: change nothing
   (re-running a deploy is safe), only check that it is Ready.
3. A new bundle: patch storageUri and the version annotation. With a canary share
   (0 < canaryTrafficPercent < 100) KServe sends that share to the new revision and the rest
   to the one serving now; once the new revision is Ready, the canary analysis (when given)
   watches both for a window and compares their errors and latency in Prometheus
   (`canary_analysis`); a canary that passes is promoted (canaryTrafficPercent 100) and waited
   for again, one that does not is rolled back (4). Without a canary share, all traffic moves
   once the new revision is Ready.
4. Anything that fails after the write (the new revision fails or is not Ready in time, the
   API stops answering) puts the previous storageUri back with all traffic, waits for it, and
   raises a `DeployError` that says what failed and what serves now.

Every write carries the resourceVersion it was based on, so a concurrent change is refused
(409) rather than overwritten; a refusal is re-read and retried a few times.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NoReturn

from textops.components.common.errors import ConfigError, DeployError
from textops.components.common.kubernetes_api import ApiFailure, call_api
from textops.components.deploy.canary_analysis import CanaryAnalysis, CanaryAnalysisError
from textops.components.deploy.isvc import (
    ModelRollout,
    Readiness,
    ServiceState,
    inference_service,
    read_state,
    readiness,
    service_url,
)

if TYPE_CHECKING:
    from kserve import KServeClient

logger = logging.getLogger(__name__)

#: Writes refused with 409 Conflict (someone else wrote in between) are retried this often.
CONFLICT_RETRIES = 4
#: The first pause between status reads; it doubles up to `poll_seconds`.
FIRST_POLL_SECONDS = 0.5
# Statuses a poll may meet while the API server or its etcd is briefly unwell.
_TRANSIENT = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RolloutResult:
    """What a rollout did and where the model answers now."""

    action: Literal["created", "updated", "unchanged"]
    name: str
    namespace: str
    storage_uri: str
    version: int
    url: str | None
    previous_storage_uri: str | None = None


@dataclass(frozen=True)
class _Waited:
    """How a wait ended, with the last InferenceService seen."""

    readiness: Readiness
    isvc: dict[str, Any]
    timed_out: bool


@dataclass(frozen=True)
class _Undo:
    """What to put back if the rollout fails: a storageUri (None: none known), its version."""

    storage_uri: str | None
    version: int


class InferenceServiceRollout:
    """Rolls bundles out to one InferenceService through the KServe SDK."""

    def __init__(
        self,
        client: KServeClient,
        name: str,
        namespace: str,
        *,
        timeout_seconds: float,
        poll_seconds: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        canary_analysis: CanaryAnalysis | None = None,
    ) -> None:
        """Bind the client to one InferenceService; `sleep`/`monotonic` are the clock.

        `canary_analysis` judges a Ready canary before it is promoted; None promotes it as soon
        as it is Ready, and says so in a warning.
        """
        if timeout_seconds <= 0:
            raise ConfigError(f"rollout_timeout_seconds must be positive, got {timeout_seconds}")
        self.client = client
        self.name = name
        self.namespace = namespace
        self.timeout_seconds = timeout_seconds
        self.poll_seconds = poll_seconds
        self._sleep = sleep
        self._monotonic = monotonic
        self.canary_analysis = canary_analysis

    @property
    def _where(self) -> str:
        return f"InferenceService {self.namespace}/{self.name}"

    def roll_out(self, storage_uri: str, canary_traffic_percent: int = 0) -> RolloutResult:
        """Make the InferenceService serve `storage_uri`, with a canary step when asked.

        Args:
            storage_uri: Where KServe's storage initializer fetches the bundle (s3://, gs://...).
            canary_traffic_percent: Share of traffic the new model gets before promotion;
                0 or 100 moves all traffic at once.

        Returns:
            What was done, the version now serving and the service's URL.

        Raises:
            ConfigError: The canary share is outside 0..100.
            DeployError: The API refused a call, or the new model did not become Ready (the
                previous one is then put back, and the message says whether it serves).
        """
        if not 0 <= canary_traffic_percent <= 100:
            raise ConfigError(
                f"canary_traffic_percent must be between 0 and 100, got {canary_traffic_percent}"
            )
        canary = canary_traffic_percent if 0 < canary_traffic_percent < 100 else None
        try:
            current = self._get()
            created = self._create(storage_uri) if current is None else None
            if current is None and created is None:
                current = self._require()  # someone created it meanwhile: roll out onto it
        except ApiFailure as e:
            raise DeployError(f"{self._explain(e)}; nothing was changed") from e
        if created is not None:
            return self._finish_create(storage_uri, created)
        assert current is not None
        return self._update(read_state(current, self.namespace), current, storage_uri, canary)

    # --- the steps -------------------------------------------------------------------------

    def _finish_create(self, storage_uri: str, created: dict[str, Any]) -> RolloutResult:
        waited = self._wait_or_fail(read_state(created, self.namespace).generation)
        if not waited.readiness.ready:
            raise DeployError(
                f"{self._where} was created for {storage_uri} but {self._failure(waited)}. No "
                "model served before, so there is nothing to roll back to: see `kubectl "
                f"describe inferenceservice -n {self.namespace} {self.name}`"
            )
        logger.info("created %s storage_uri=%s version=1", self._where, storage_uri)
        return RolloutResult(
            "created", self.name, self.namespace, storage_uri, 1, service_url(waited.isvc)
        )

    def _update(
        self,
        state: ServiceState,
        current: dict[str, Any],
        storage_uri: str,
        canary: int | None,
    ) -> RolloutResult:
        if state.storage_uri == storage_uri and state.canary_running:
            # A rollout stopped half way (its step was killed): finish it.
            logger.info("resuming canary %s storage_uri=%s", self._where, storage_uri)
            undo = _Undo(state.previous_storage_uri, max(state.version - 1, 0))
            return self._settle(storage_uri, state.version, state.generation, undo, canary=True)
        if state.storage_uri == storage_uri and state.has_textops_shape:
            waited = self._wait_or_fail(state.generation, before=current)
            if not waited.readiness.ready:
                raise DeployError(
                    f"{self._where} already serves {storage_uri} (version {state.version}) but "
                    f"{self._failure(waited)}; nothing was changed"
                )
            logger.info("unchanged %s storage_uri=%s", self._where, storage_uri)
            return RolloutResult(
                "unchanged",
                self.name,
                self.namespace,
                storage_uri,
                state.version,
                service_url(waited.isvc),
            )
        if state.storage_uri == storage_uri:
            # Same model, but someone changed runtime, logger or labels: write them back.
            version, undo, canary = state.version, _Undo(None, state.version), None
        else:
            version, undo = state.next_version, _Undo(state.storage_uri, state.version)
        first = ModelRollout(storage_uri, version, canary, undo.storage_uri if canary else None)
        try:
            patched = self._patch_current(
                first, current, expect_uris={state.storage_uri, storage_uri}
            )
        except ApiFailure as e:
            raise DeployError(f"{self._explain(e)}; nothing was changed") from e
        logger.info(
            "patched %s storage_uri=%s version=%d canary=%s previous=%s",
            self._where,
            storage_uri,
            version,
            canary,
            undo.storage_uri,
        )
        generation = read_state(patched, self.namespace).generation
        return self._settle(storage_uri, version, generation, undo, canary=canary is not None)

    def _settle(
        self, storage_uri: str, version: int, generation: int, undo: _Undo, *, canary: bool
    ) -> RolloutResult:
        """Wait for the written model, promote a canary, or put the previous model back."""
        stage = "the canary" if canary else "the new model"
        canary_ready = False
        try:
            waited = self._wait(generation)
            if waited.readiness.ready and canary:
                canary_ready = True
                waited = self._judge_canary(storage_uri, generation, undo, waited)
                logger.info("canary ready %s: promoting", self._where)
                stage = "the promoted model"
                promote = ModelRollout(storage_uri, version)
                patched = self._patch_current(promote, waited.isvc, expect_uris={storage_uri})
                waited = self._wait(read_state(patched, self.namespace).generation)
        except ApiFailure as e:
            self._roll_back(
                storage_uri, undo, f"{stage}: {self._explain(e)}", canary_ready=canary_ready
            )
        if not waited.readiness.ready:
            self._roll_back(
                storage_uri, undo, f"{stage} {self._failure(waited)}", canary_ready=canary_ready
            )
        logger.info("rolled out %s storage_uri=%s version=%d", self._where, storage_uri, version)
        return RolloutResult(
            "updated",
            self.name,
            self.namespace,
            storage_uri,
            version,
            service_url(waited.isvc),
            undo.storage_uri,
        )

    def _judge_canary(
        self, storage_uri: str, generation: int, undo: _Undo, waited: _Waited
    ) -> _Waited:
        """The canary's state once it passed its analysis and is still Ready; else roll back.

        Raises:
            DeployError: The canary failed, or could not be judged; it was rolled back.
            ApiFailure: The InferenceService could not be read after the analysis.
        """
        if self.canary_analysis is None:
            logger.warning("canary ready %s: promoting it without analysis", self._where)
            return waited
        try:
            report = self.canary_analysis.observe(waited.isvc)
        except CanaryAnalysisError as e:
            self._roll_back(
                storage_uri,
                undo,
                f"the canary analysis could not be made: {e}",
                canary_ready=True,
            )
        if not report.verdict.promote:
            self._roll_back(
                storage_uri,
                undo,
                f"the canary did not pass its analysis: {'; '.join(report.verdict.reasons)}. "
                f"Analysis: {report.as_json()}",
                canary_ready=True,
            )
        waited = self._wait(generation)  # a fresh read to promote from
        if not waited.readiness.ready:
            self._roll_back(
                storage_uri,
                undo,
                f"the canary, after its analysis, {self._failure(waited)}",
                canary_ready=True,
            )
        return waited

    def _roll_back(
        self, storage_uri: str, undo: _Undo, failure: str, *, canary_ready: bool = False
    ) -> NoReturn:
        """Put the previous storageUri back with all traffic, then raise what happened.

        The previous storageUri comes back as a new revision, which is not Ready until its pod
        has started. With all traffic asked for, Knative meanwhile routes it to the latest
        Ready revision; after a canary that was Ready (it failed its analysis or its
        promotion), that is the canary. So then the previous model first comes back held at
        `canaryTrafficPercent: 0`, which keeps all traffic on the revision rolled out last
        (the stable model), and takes all traffic only once its new revision is Ready.
        """
        head = f"rolling out {storage_uri} to {self._where} failed: {failure}"
        if undo.storage_uri is None:
            raise DeployError(
                f"{head}. There is no earlier storageUri to put back: see `kubectl describe "
                f"inferenceservice -n {self.namespace} {self.name}`"
            )
        logger.warning("rolling back %s to %s: %s", self._where, undo.storage_uri, failure)
        restore = ModelRollout(undo.storage_uri, undo.version, via="restore")
        steps = [restore]
        if canary_ready:
            held = ModelRollout(undo.storage_uri, undo.version, 0, undo.storage_uri, via="restore")
            steps.insert(0, held)
        try:
            waited = None
            for step in steps:
                current = self._require() if waited is None else waited.isvc
                patched = self._patch_current(
                    step, current, expect_uris={storage_uri, undo.storage_uri}
                )
                waited = self._wait(read_state(patched, self.namespace).generation)
                if not waited.readiness.ready:
                    break
            assert waited is not None
        except ApiFailure as e:
            raise DeployError(
                f"{head}. Putting the previous model back failed too ({self._explain(e)}): "
                f"restore it with `{self._restore_command(undo.storage_uri)}`"
            ) from e
        if not waited.readiness.ready:
            raise DeployError(
                f"{head}. The previous model ({undo.storage_uri}) was put back but "
                f"{self._failure(waited)}: see `kubectl describe inferenceservice -n "
                f"{self.namespace} {self.name}`"
            )
        raise DeployError(
            f"{head}. Rolled back: the previous model ({undo.storage_uri}, version "
            f"{undo.version}) is still serving"
        )

    # --- API calls -------------------------------------------------------------------------

    def _get(self) -> dict[str, Any] | None:
        try:
            found = call_api("get", self.client.get, self.name, namespace=self.namespace)
        except ApiFailure as e:
            if e.status == 404:
                return None
            raise
        return dict(found)

    def _require(self) -> dict[str, Any]:
        found = self._get()
        if found is None:
            raise ApiFailure("read", 404, f"{self._where} was deleted during the rollout")
        return found

    def _create(self, storage_uri: str) -> dict[str, Any] | None:
        """Create the service; None when it already exists (409), for the caller to patch."""
        body = inference_service(
            self.name, self.namespace, ModelRollout(storage_uri, 1), history=()
        )
        try:
            return dict(call_api("create", self.client.create, body, namespace=self.namespace))
        except ApiFailure as e:
            if e.status == 409:
                logger.info("%s appeared meanwhile; patching it", self._where)
                return None
            raise

    def _patch_current(
        self, model: ModelRollout, current: Mapping[str, Any], *, expect_uris: set[str | None]
    ) -> dict[str, Any]:
        """Patch from `current`; on 409 re-read and retry while the spec is still ours."""
        for attempt in range(CONFLICT_RETRIES + 1):
            state = read_state(current, self.namespace)
            if state.storage_uri not in expect_uris:
                raise ApiFailure(
                    "patch",
                    409,
                    f"someone else changed {self._where} during the rollout (it now serves "
                    f"{state.storage_uri}); run deploy again once that change is done",
                )
            body = inference_service(
                self.name,
                self.namespace,
                model,
                resource_version=state.resource_version,
                for_patch=True,
                history=state.history,
            )
            try:
                patched = call_api(
                    "patch", self.client.patch, self.name, body, namespace=self.namespace
                )
                return dict(patched)
            except ApiFailure as e:
                if e.status != 409 or attempt == CONFLICT_RETRIES:
                    raise
                logger.info("conflict patching %s; reading it again", self._where)
                current = self._require()
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _wait(self, generation: int, before: Mapping[str, Any] | None = None) -> _Waited:
        """Poll until the spec at `generation` is Ready, has failed, or time is up.

        A poll the API server answers with a transient error (429, 5xx) is tried again until
        the deadline; `before` is what to report if no poll got through at all.
        """
        deadline = self._monotonic() + self.timeout_seconds
        isvc: dict[str, Any] = dict(before) if before is not None else {}
        # Quick changes (a traffic shift) show within a second; a new pod takes longer.
        interval = min(FIRST_POLL_SECONDS, self.poll_seconds)
        while True:
            try:
                isvc = self._require()
                judged = readiness(isvc, generation)
            except ApiFailure as e:
                if e.status not in _TRANSIENT or (not isvc and self._monotonic() >= deadline):
                    raise
                logger.warning("polling %s: %s; trying again", self._where, e)
                judged = Readiness(False, False, f"the Kubernetes API answered {e.detail}")
            if judged.ready or judged.failed:
                return _Waited(judged, isvc, timed_out=False)
            remaining = deadline - self._monotonic()
            if remaining <= 0:
                return _Waited(judged, isvc, timed_out=True)
            self._sleep(min(interval, remaining))
            interval = min(interval * 2, self.poll_seconds)

    def _wait_or_fail(self, generation: int, before: Mapping[str, Any] | None = None) -> _Waited:
        try:
            return self._wait(generation, before)
        except ApiFailure as e:
            raise DeployError(self._explain(e)) from e

    # --- messages --------------------------------------------------------------------------

    def _failure(self, waited: _Waited) -> str:
        if waited.timed_out:
            return (
                f"did not become Ready within {self.timeout_seconds:g} s "
                f"({waited.readiness.message})"
            )
        return f"failed: {waited.readiness.message}"

    def _explain(self, failure: ApiFailure) -> str:
        what = f"cannot {failure.verb} {self._where}"
        if failure.status in (401, 403):
            return (
                f"{what}: {failure.detail}. The service account this runs as needs get, "
                f"create and patch on inferenceservices.serving.kserve.io in {self.namespace}: "
                f"apply manifests/pipeline-rbac with kserveNamespace={self.namespace} in its "
                "pipeline.env"
            )
        if failure.status == 404 and failure.verb in ("create", "patch"):
            return (
                f"{what}: {failure.detail}. Is KServe installed (the InferenceService CRD) and "
                f"does the namespace {self.namespace} exist?"
            )
        if failure.status in (400, 422):
            return (
                f"{what}: the cluster rejected the InferenceService: {failure.detail}. Check "
                "that the ServingRuntime textops-onnx is installed in the namespace"
            )
        return f"{what}: {failure.detail}"

    def _restore_command(self, storage_uri: str) -> str:
        patch = (
            '{"spec":{"predictor":{"canaryTrafficPercent":100,'
            f'"model":{{"storageUri":"{storage_uri}"}}}}}}'
        )
        return (
            f"kubectl patch inferenceservice -n {self.namespace} {self.name} --type merge "
            f"-p '{patch}'"
        )
