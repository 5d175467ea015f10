"""`textops models` on a KServe InferenceService: list, promote a canary, roll back.

No cluster runs here: the client is a real `kserve.KServeClient` over the fake API server and
controller of test_deploy_kserve (`FakeInferenceServices`), and the bundles are copies of the
tiny bundle, with their own scores, in the in-memory object store that stands for S3.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.s3_server import S3Bucket
from tests.unit.test_deploy_kserve import (
    NAME,
    NAMESPACE,
    FakeClock,
    FakeInferenceServices,
    kserve_client_over,
)
from textops.components.common.errors import ConfigError, DeployError, ModelNotFoundError
from textops.components.deploy.isvc import ModelRollout, inference_service, read_state
from textops.components.deploy.kserve_rollout import InferenceServiceRollout
from textops.components.deploy.service_versions import ServiceVersions
from textops.pipelines.cli import main

HISTORY = "textops.dev/history"
SCORES = {1: (0.71, 0.70), 2: (0.82, 0.81), 3: (0.79, 0.77)}
TIMEOUT = 60.0


@pytest.fixture
def bundles(
    tiny_bundle_dir: Path, tmp_path: Path, in_object_store: Callable[[Path], str]
) -> dict[int, str]:
    """Three bundles in the object store, by the version they will be rolled out as."""
    uris = {}
    for version, (accuracy, f1) in SCORES.items():
        bundle = Path(shutil.copytree(tiny_bundle_dir, tmp_path / f"bundle-{version}"))
        metadata = json.loads((bundle / "metadata.json").read_text())
        metadata["metrics"] = {"accuracy": accuracy, "macro_f1": f1}
        (bundle / "metadata.json").write_text(json.dumps(metadata))
        uris[version] = in_object_store(bundle)
    return uris


@pytest.fixture
def fake() -> FakeInferenceServices:
    return FakeInferenceServices()


@pytest.fixture
def client(fake: FakeInferenceServices) -> Iterator[Any]:
    """A real KServeClient whose CustomObjectsApi is an autospec driven by `fake`."""
    with kserve_client_over(fake) as kserve:
        yield kserve


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def service(client: Any, clock: FakeClock) -> ServiceVersions:
    return ServiceVersions(
        client,
        NAME,
        NAMESPACE,
        timeout_seconds=TIMEOUT,
        sleep=clock.sleep,
        monotonic=clock.monotonic,
    )


@pytest.fixture
def deploy(client: Any, clock: FakeClock) -> Callable[..., Any]:
    """The deploy step's rollout of a bundle (with a canary share when given)."""
    rollout = InferenceServiceRollout(
        client,
        NAME,
        NAMESPACE,
        timeout_seconds=TIMEOUT,
        sleep=clock.sleep,
        monotonic=clock.monotonic,
    )
    return rollout.roll_out


def start_canary(client: Any, fake: FakeInferenceServices, uri: str, percent: int) -> None:
    """What the deploy step writes first for a canary, as if it then stopped; the controller
    makes the canary's revision Ready."""
    state = read_state(fake.spec(), NAMESPACE)
    canary = ModelRollout(uri, state.next_version, percent, state.storage_uri)
    body = inference_service(NAME, NAMESPACE, canary, for_patch=True, history=state.history)
    client.patch(NAME, body, namespace=NAMESPACE)
    for _ in range(2):  # the fake controller reconciles on the second read
        client.get(NAME, namespace=NAMESPACE)


def spec(fake: FakeInferenceServices) -> tuple[str, str, int | None]:
    """The storageUri, version annotation and canary share the spec names."""
    document = fake.spec()
    predictor = document["spec"]["predictor"]
    annotations = document["metadata"]["annotations"]
    version = annotations["textops.dev/model-version"]
    return predictor["model"]["storageUri"], version, predictor.get("canaryTrafficPercent")


def periods(fake: FakeInferenceServices) -> list[tuple[int, str | None, str | None]]:
    """(version, via, endedBy) of each served period the annotation records."""
    recorded = json.loads(fake.spec()["metadata"]["annotations"][HISTORY])
    return [(p["version"], p["via"], p.get("endedBy")) for p in recorded]


def patches(fake: FakeInferenceServices) -> list[dict[str, Any]]:
    return [body for verb, body in fake.writes if verb == "patch"]


# --- list -----------------------------------------------------------------------------------


def test_every_rollout_is_recorded_and_listed_with_scores_from_the_store(
    service: ServiceVersions, deploy: Callable[..., Any], bundles: dict[int, str]
) -> None:
    deploy(bundles[1])
    deploy(bundles[2])
    deploy(bundles[3], canary_traffic_percent=10)

    versions = service.versions()

    assert [v.version for v in versions] == [3, 2, 1]
    assert [v.location for v in versions] == [bundles[3], bundles[2], bundles[1]]
    assert [(v.accuracy, v.macro_f1) for v in versions] == [SCORES[3], SCORES[2], SCORES[1]]
    assert [v.traffic_percent for v in versions] == [100, 0, 0]
    assert all(v.created_at and v.problem is None for v in versions)
    three, two, one = (v.periods for v in versions)
    assert [(p.via, p.ended) for p in three] == [("rollout", None)]
    assert one[0].ended_by == two[0].ended_by == "rollout"
    assert one[0].ended == two[0].started and two[0].ended is not None


def test_list_during_a_canary_shows_the_split(
    client: Any,
    fake: FakeInferenceServices,
    service: ServiceVersions,
    deploy: Callable[..., Any],
    bundles: dict[int, str],
) -> None:
    deploy(bundles[1])
    start_canary(client, fake, bundles[2], 10)

    two, one = service.versions()

    assert (two.version, two.traffic_percent, one.version, one.traffic_percent) == (2, 10, 1, 90)
    assert two.periods[0].is_open and one.periods[0].is_open


def test_a_bundle_that_cannot_be_read_is_listed_without_scores(
    service: ServiceVersions, deploy: Callable[..., Any], s3_bucket: S3Bucket
) -> None:
    nowhere = s3_bucket.url("nowhere/bundle")
    deploy(nowhere)

    [version] = service.versions()

    assert (version.version, version.accuracy, version.traffic_percent) == (1, None, 100)
    assert version.problem and f"nothing is at {nowhere}" in version.problem


# --- promote --------------------------------------------------------------------------------


def test_promote_gives_the_canary_all_traffic_and_a_second_run_changes_nothing(
    client: Any,
    fake: FakeInferenceServices,
    service: ServiceVersions,
    deploy: Callable[..., Any],
    bundles: dict[int, str],
) -> None:
    deploy(bundles[1])
    start_canary(client, fake, bundles[2], 10)

    change = service.promote()

    assert (change.changed, change.version, change.previous) == (True, 2, 1)
    assert fake.serving() == {bundles[2]: 100}
    assert spec(fake) == (bundles[2], "2", 100)
    assert "textops.dev/previous-storage-uri" not in fake.spec()["metadata"]["annotations"]
    assert periods(fake) == [(1, "rollout", "promote"), (2, "rollout", None)]
    writes = list(fake.writes)

    again = service.promote()

    assert not again.changed and "no canary runs" in again.message
    assert fake.writes == writes


def test_promote_refuses_a_version_that_is_not_the_canary(
    client: Any,
    fake: FakeInferenceServices,
    service: ServiceVersions,
    deploy: Callable[..., Any],
    bundles: dict[int, str],
) -> None:
    deploy(bundles[1])
    start_canary(client, fake, bundles[2], 10)
    writes = list(fake.writes)

    with pytest.raises(ConfigError, match=r"the canary on .* is version 2, not 3"):
        service.promote(3)

    assert fake.writes == writes


# --- rollback -------------------------------------------------------------------------------


def test_rollback_during_a_canary_holds_traffic_on_the_stable_model_at_once(
    client: Any,
    fake: FakeInferenceServices,
    service: ServiceVersions,
    deploy: Callable[..., Any],
    bundles: dict[int, str],
) -> None:
    deploy(bundles[1])
    start_canary(client, fake, bundles[2], 10)
    seen = len(fake.traffic_history)

    change = service.roll_back_to()

    assert (change.changed, change.version, change.previous) == (True, 1, 1)
    hold, whole = patches(fake)[-2:]
    # First: the stable bundle with no share for the new revision, so KServe keeps all
    # traffic on the stable revision while the new one starts; then all traffic to it.
    assert hold["spec"]["predictor"]["canaryTrafficPercent"] == 0
    assert hold["spec"]["predictor"]["model"]["storageUri"] == bundles[1]
    assert whole["spec"]["predictor"]["canaryTrafficPercent"] == 100
    assert fake.traffic_history[seen:] == [{bundles[1]: 100}] * len(fake.traffic_history[seen:])
    assert fake.serving() == {bundles[1]: 100}
    assert spec(fake) == (bundles[1], "1", 100)
    assert periods(fake) == [
        (1, "rollout", "restart"),
        (2, "rollout", "rollback"),
        (1, "rollback", None),
    ]
    writes = list(fake.writes)

    again = service.roll_back_to()

    assert not again.changed
    assert "already rolled back to version 1 (from version 2); nothing changed" in again.message
    assert fake.writes == writes


def test_rollback_after_a_rollout_goes_to_the_version_before_and_numbers_stay_unique(
    fake: FakeInferenceServices,
    service: ServiceVersions,
    deploy: Callable[..., Any],
    bundles: dict[int, str],
) -> None:
    deploy(bundles[1])
    deploy(bundles[2])
    seen = len(fake.traffic_history)

    change = service.roll_back_to()

    assert (change.changed, change.version, change.previous) == (True, 1, 2)
    # Version 2 keeps all traffic until version 1's new revision is Ready.
    assert fake.traffic_history[seen:][0] == {bundles[2]: 100}
    assert fake.serving() == {bundles[1]: 100}
    assert spec(fake) == (bundles[1], "1", 100)
    assert fake.spec()["spec"]["predictor"]["model"]["args"] == ["--model-version", "1"]
    assert not service.roll_back_to().changed

    # The next deploy is numbered above every version served, not one above version 1.
    assert deploy(bundles[3]).version == 3
    assert [v.version for v in service.versions()] == [3, 2, 1]


def test_rollback_to_a_named_version_and_to_the_one_serving(
    fake: FakeInferenceServices,
    service: ServiceVersions,
    deploy: Callable[..., Any],
    bundles: dict[int, str],
) -> None:
    for version in (1, 2, 3):
        deploy(bundles[version])

    assert service.roll_back_to(1).version == 1
    assert spec(fake) == (bundles[1], "1", 100)
    writes = list(fake.writes)
    again = service.roll_back_to(1)
    assert not again.changed and "version 1 already serves all traffic" in again.message
    assert fake.writes == writes

    assert service.roll_back_to(3).changed  # back to the newest, by name
    assert fake.serving() == {bundles[3]: 100}


def test_an_unknown_version_and_no_previous_version_are_refused(
    fake: FakeInferenceServices,
    service: ServiceVersions,
    deploy: Callable[..., Any],
    bundles: dict[int, str],
) -> None:
    deploy(bundles[1])

    with pytest.raises(ModelNotFoundError, match=r"no record of a version 7 \(versions: 1\)"):
        service.roll_back_to(7)
    with pytest.raises(ModelNotFoundError, match="no previous version to roll back to"):
        service.roll_back_to()
    assert [verb for verb, _ in fake.writes] == ["create"]


@pytest.mark.parametrize("behaviour", ["fail", "hang"])
def test_a_failed_rollback_puts_back_what_served(
    fake: FakeInferenceServices,
    service: ServiceVersions,
    deploy: Callable[..., Any],
    bundles: dict[int, str],
    clock: FakeClock,
    behaviour: str,
) -> None:
    deploy(bundles[1])
    deploy(bundles[2])
    fake.behaviour[bundles[1]] = behaviour  # its new revision never becomes Ready
    seen = len(fake.traffic_history)

    with pytest.raises(DeployError) as raised:
        service.roll_back_to()

    message = str(raised.value)
    assert (
        f"serving version 1 ({bundles[1]}) on InferenceService {NAMESPACE}/{NAME} failed" in message
    )
    assert f"Put back what served before: version 2 ({bundles[2]}) with all traffic" in message
    assert spec(fake) == (bundles[2], "2", 100)
    assert fake.serving() == {bundles[2]: 100}
    assert all(bundles[1] not in split for split in fake.traffic_history[seen:])
    assert periods(fake) == [(1, "rollout", "rollout"), (2, "rollout", None)]  # never left 2


def test_a_failed_rollback_during_a_canary_puts_the_split_back(
    client: Any,
    fake: FakeInferenceServices,
    service: ServiceVersions,
    deploy: Callable[..., Any],
    bundles: dict[int, str],
) -> None:
    deploy(bundles[1])
    start_canary(client, fake, bundles[2], 10)
    fake.behaviour[bundles[1]] = "fail"

    with pytest.raises(DeployError, match=r"at 90% beside the canary version 2 .* at 10%"):
        service.roll_back_to()

    assert spec(fake) == (bundles[2], "2", 10)
    assert fake.serving() == {bundles[1]: 90, bundles[2]: 10}


def test_a_service_deployed_before_the_history_lists_and_refuses_a_guess(
    fake: FakeInferenceServices, service: ServiceVersions, bundles: dict[int, str]
) -> None:
    fake.put(NAME, bundles[2], version=2)  # no history annotation

    [version] = service.versions()

    assert (version.version, version.traffic_percent, version.accuracy) == (2, 100, SCORES[2][0])
    assert [(p.started, p.via) for p in version.periods] == [(None, "unknown")]
    with pytest.raises(ModelNotFoundError, match="no previous version"):
        service.roll_back_to()
    with pytest.raises(ModelNotFoundError, match="no record of a version 1"):
        service.roll_back_to(1)


def test_nothing_deployed_is_bad_input(service: ServiceVersions) -> None:
    with pytest.raises(ModelNotFoundError, match="nothing was deployed there yet"):
        service.versions()


# --- the command ----------------------------------------------------------------------------


def test_the_commands_print_and_exit_with_the_clis_statuses(
    client: Any,
    fake: FakeInferenceServices,
    deploy: Callable[..., Any],
    bundles: dict[int, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("textops.components.common.kubernetes_api.kserve_client", lambda: client)
    deploy(bundles[1])
    deploy(bundles[2])

    def textops(action: str, *flags: str) -> tuple[int, str, str]:
        code = main(["models", action, "--kserve", "--kserve-namespace", NAMESPACE, *flags])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    code, out, _ = textops("list")
    assert code == 0
    header, two, one = out.splitlines()[1:]
    assert header.split()[-1] == "BUNDLE"
    assert two.split()[:4] == ["2", "100%", "0.8200", "0.8100"] and two.endswith(bundles[2])
    assert one.split()[:2] == ["1", "-"]

    code, out, _ = textops("promote")
    assert code == 0 and "no canary runs" in out and "version 2 serves all traffic" in out
    code, out, _ = textops("rollback", "--rollout-timeout-seconds", "5")
    assert code == 0 and "to version 1 (" in out and "before: version 2 (" in out
    code, out, _ = textops("rollback")
    assert code == 0 and "already rolled back" in out
    code, _, err = textops("rollback", "--version", "9")
    assert code == 2 and "no record of a version 9" in err
    fake.behaviour[bundles[2]] = "fail"
    code, _, err = textops("rollback", "--version", "2", "--rollout-timeout-seconds", "5")
    assert code == 1 and "Put back what served before: version 1" in err
    assert fake.serving() == {bundles[1]: 100}


# --- canary ---------------------------------------------------------------------------------


def test_a_canary_by_hand_is_the_next_version_and_waits_for_promotion(
    fake: FakeInferenceServices,
    service: ServiceVersions,
    deploy: Callable[..., Any],
    bundles: dict[int, str],
) -> None:
    deploy(bundles[1])
    deploy(bundles[2])
    service.roll_back_to()  # version 1 serves; the next version is 3 all the same

    change = service.start_canary(bundles[3], 10)

    assert (change.changed, change.version, change.previous) == (True, 3, 1)
    assert spec(fake) == (bundles[3], "3", 10)
    assert fake.serving() == {bundles[1]: 90, bundles[3]: 10}
    writes = list(fake.writes)
    assert not service.start_canary(bundles[3], 10).changed
    assert fake.writes == writes

    assert service.start_canary(bundles[3], 50).changed  # a bigger share, the same version
    assert fake.serving() == {bundles[1]: 50, bundles[3]: 50}
    with pytest.raises(ConfigError, match=r"version 3 is in canary .* already"):
        service.start_canary(bundles[2], 10)

    assert service.promote().version == 3
    assert fake.serving() == {bundles[3]: 100}


def test_a_canary_that_does_not_become_ready_is_undone(
    fake: FakeInferenceServices,
    service: ServiceVersions,
    deploy: Callable[..., Any],
    bundles: dict[int, str],
) -> None:
    deploy(bundles[1])
    fake.behaviour[bundles[2]] = "fail"

    with pytest.raises(DeployError, match="Put back what served before: version 1"):
        service.start_canary(bundles[2], 10)

    assert spec(fake) == (bundles[1], "1", 100)
    assert fake.serving() == {bundles[1]: 100}


def test_the_canary_command_checks_the_bundle_first(
    client: Any,
    fake: FakeInferenceServices,
    deploy: Callable[..., Any],
    bundles: dict[int, str],
    s3_bucket: S3Bucket,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("textops.components.common.kubernetes_api.kserve_client", lambda: client)
    deploy(bundles[1])
    flags = ["--kserve", "--kserve-namespace", NAMESPACE, "--rollout-timeout-seconds", "5"]
    nowhere = s3_bucket.url("nowhere/bundle")

    assert main(["models", "canary", "--storage-uri", nowhere, *flags]) == 2
    assert f"nothing is at {nowhere}" in capsys.readouterr().err
    assert (
        main(
            [
                "models",
                "canary",
                "--storage-uri",
                bundles[2],
                "--canary-traffic-percent",
                "20",
                *flags,
            ]
        )
        == 0
    )
    assert "version 2" in capsys.readouterr().out
    assert fake.serving() == {bundles[1]: 80, bundles[2]: 20}
    assert main(["models", "canary", "--storage-uri", bundles[2]]) == 2  # not --kserve
    assert "add --kserve" in capsys.readouterr().err


# --- the record itself ----------------------------------------------------------------------


def test_the_record_is_bounded_and_a_damaged_one_is_ignored(
    fake: FakeInferenceServices,
    service: ServiceVersions,
    deploy: Callable[..., Any],
    s3_bucket: S3Bucket,
) -> None:
    from textops.components.deploy.served_history import MAX_PERIODS

    for run in range(MAX_PERIODS + 5):
        deploy(s3_bucket.url(f"runs/{run}/bundle"))

    recorded = json.loads(fake.spec()["metadata"]["annotations"][HISTORY])
    assert len(recorded) == MAX_PERIODS
    assert recorded[-1]["version"] == MAX_PERIODS + 5 and recorded[-1]["to"] is None

    fake.spec()["metadata"]["annotations"][HISTORY] = "{not json"
    [current] = service.versions()  # only what the spec says
    assert (current.version, current.traffic_percent, current.periods) == (MAX_PERIODS + 5, 100, ())
    with pytest.raises(ModelNotFoundError, match="no previous version"):
        service.roll_back_to()
