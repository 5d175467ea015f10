"""`textops models lineage`: the data each version was trained on and the versions it replaced.

Local: a real repository filled by the deploy step's own `publish_bundle`. KServe: a real
`kserve.KServeClient` over the fake API server of test_deploy_kserve, the bundles in the
in-memory object store that stands for S3. The bundles are copies of the tiny bundle whose
metadata.json records the lineage export writes (metadata.json does not hash itself).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.s3_server import S3Bucket
from tests.unit.test_deploy_kserve import NAME, NAMESPACE, FakeInferenceServices, kserve_client_over
from textops.components.common.bundle import METADATA_FILE
from textops.components.deploy.kserve_rollout import InferenceServiceRollout
from textops.components.deploy.publish import publish_bundle
from textops.components.deploy.versions import LocalVersions
from textops.pipelines.cli import main

MODEL = "textops-classifier"


def lineage_of(version: int) -> dict[str, Any]:
    """What export records for the bundle published as `version`: version 1 trained on the
    base data alone, the later ones with one feedback snapshot each."""
    feedback = [
        {
            "uri": f"/feedback/{MODEL}/snap{version}",
            "fingerprint": f"snap{version}",
            "window": {"since": f"2026-1{version}-01T00:00:00+00:00", "until": ""},
            "rows_used": 100 * version,
            "rows_held_out": 25 * version,
        }
    ]
    return {
        "base": {"data": "data/reviews.csv", "fingerprint": "ba5e"},
        "feedback": feedback if version > 1 else [],
        "data_fingerprint": f"split{version}",
    }


def bundle_with(tiny_bundle_dir: Path, directory: Path, lineage: dict[str, Any] | None) -> Path:
    """A copy of the tiny bundle recording `lineage` (None: none, as before it was recorded)."""
    bundle = Path(shutil.copytree(tiny_bundle_dir, directory))
    metadata = json.loads((bundle / METADATA_FILE).read_text())
    metadata.pop("lineage", None)
    if lineage is not None:
        metadata["lineage"] = lineage
    (bundle / METADATA_FILE).write_text(json.dumps(metadata))
    return bundle


def textops(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["models", "lineage", "--model-name", MODEL, *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def chain(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, Any]]:
    code, out, err = textops(capsys, *argv, "--json")
    assert code == 0, err
    records: list[dict[str, Any]] = json.loads(out)
    return records


# --- the local repository -------------------------------------------------------------------


@pytest.fixture
def repository(tiny_bundle_dir: Path, tmp_path: Path) -> Path:
    """Versions 1, 2 and 3 published in turn: 3 serves."""
    repository = tmp_path / "models"
    for version in (1, 2, 3):
        bundle = bundle_with(tiny_bundle_dir, tmp_path / f"bundle-{version}", lineage_of(version))
        publish_bundle(bundle, repository, MODEL)
    return repository


def test_the_current_version_is_traced_back_through_the_versions_it_replaced(
    repository: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = chain(capsys, "--model-repository", str(repository))

    assert [(r["version"], r["replaced"]) for r in records] == [(3, [2]), (2, [1]), (1, [])]
    assert [r["lineage"] for r in records] == [lineage_of(3), lineage_of(2), lineage_of(1)]
    assert records[0]["location"] == str(repository / MODEL / "3")
    assert all(r["problem"] is None for r in records)


def test_the_text_names_the_data_snapshots_and_replaced_versions(
    repository: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = textops(capsys, "--model-repository", str(repository), "--version", "2")

    assert code == 0
    lines = out.splitlines()
    assert lines[0] == (
        f"textops: lineage of {MODEL} version 2 in the local model repository {repository}"
    )
    assert lines[1] == f"version 2 ({repository / MODEL / '2'})"
    assert lines[2:6] == [
        "  base data: data/reviews.csv (fingerprint ba5e)",
        "  trained on: fingerprint split2 (the data as split)",
        f"  feedback: /feedback/{MODEL}/snap2 (fingerprint snap2, window "
        "2026-12-01T00:00:00+00:00 → now, rows used 200, held out 50)",
        "  replaced: version 1",
    ]
    assert "  feedback: none" in lines and "  replaced: none recorded" in lines
    assert not any(line.startswith("version 3") for line in lines)


def test_a_publish_after_a_rollback_replaced_the_version_it_was_rolled_back_to(
    repository: Path, tiny_bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    LocalVersions(repository, MODEL).roll_back_to(1)
    publish_bundle(
        bundle_with(tiny_bundle_dir, tmp_path / "bundle-4", lineage_of(4)), repository, MODEL
    )

    records = chain(capsys, "--model-repository", str(repository))

    assert [(r["version"], r["replaced"]) for r in records] == [(4, [1]), (1, [])]


def test_a_bundle_published_before_lineage_says_no_lineage_recorded(
    tiny_bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repository = tmp_path / "models"
    publish_bundle(bundle_with(tiny_bundle_dir, tmp_path / "old", None), repository, MODEL)
    publish_bundle(bundle_with(tiny_bundle_dir, tmp_path / "new", lineage_of(2)), repository, MODEL)
    # As a repository from before this change holds it: no lineage in version 1's metadata.json.
    metadata_path = repository / MODEL / "1" / METADATA_FILE
    metadata = json.loads(metadata_path.read_text())
    del metadata["lineage"]
    metadata_path.write_text(json.dumps(metadata))

    code, out, _ = textops(capsys, "--model-repository", str(repository))

    assert code == 0
    assert out.splitlines()[-3:] == [
        f"version 1 ({repository / MODEL / '1'})",
        "  no lineage recorded (exported before textops recorded it)",
        "  replaced: none recorded",
    ]
    assert "  replaced: version 1" in out.splitlines()


def test_an_unknown_version_and_an_empty_repository_are_bad_input(
    repository: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = textops(capsys, "--model-repository", str(repository), "--version", "9")
    assert code == 2 and f"{MODEL} has no version 9" in err and "versions: 1, 2, 3" in err

    code, _, err = textops(capsys, "--model-repository", str(tmp_path / "empty"))
    assert code == 2 and f"no version of {MODEL} is current" in err


# --- KServe ---------------------------------------------------------------------------------


@pytest.fixture
def client() -> Iterator[tuple[Any, FakeInferenceServices]]:
    """A real KServeClient whose CustomObjectsApi is an autospec driven by a fake API server."""
    fake = FakeInferenceServices()
    with kserve_client_over(fake) as kserve:
        yield kserve, fake


@pytest.fixture
def deploy(
    client: tuple[Any, FakeInferenceServices], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Any]:
    """The deploy step's rollout; `textops models` reaches the same fake API server."""
    kserve, _ = client
    monkeypatch.setattr("textops.components.common.kubernetes_api.kserve_client", lambda: kserve)
    rollout = InferenceServiceRollout(
        kserve, NAME, NAMESPACE, timeout_seconds=60.0, sleep=lambda _: None
    )
    return rollout.roll_out


def kserve_chain(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, Any]]:
    return chain(capsys, "--kserve", "--kserve-namespace", NAMESPACE, *argv)


def test_each_rollout_records_what_served_and_lineage_reads_the_bundles_from_the_store(
    deploy: Callable[..., Any],
    client: tuple[Any, FakeInferenceServices],
    tiny_bundle_dir: Path,
    tmp_path: Path,
    in_object_store: Callable[[Path], str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    uris = {
        version: in_object_store(
            bundle_with(tiny_bundle_dir, tmp_path / f"bundle-{version}", lineage_of(version))
        )
        for version in (1, 2, 3)
    }
    deploy(uris[1])
    deploy(uris[2])
    deploy(uris[3], canary_traffic_percent=10)

    _, fake = client
    recorded = json.loads(fake.spec()["metadata"]["annotations"]["textops.dev/history"])
    assert [(p["version"], p.get("replaced")) for p in recorded] == [(1, None), (2, [1]), (3, [2])]
    records = kserve_chain(capsys)
    assert [(r["version"], r["replaced"], r["location"]) for r in records] == [
        (3, [2], uris[3]),
        (2, [1], uris[2]),
        (1, [], uris[1]),
    ]
    assert [r["lineage"] for r in records] == [lineage_of(3), lineage_of(2), lineage_of(1)]

    code, out, _ = textops(capsys, "--kserve", "--kserve-namespace", NAMESPACE, "--version", "2")
    assert code == 0
    assert out.splitlines()[0] == (
        f"textops: lineage of {MODEL} version 2 on InferenceService {NAMESPACE}/{NAME}"
    )
    assert "  replaced: version 1" in out.splitlines()


def test_a_bundle_that_cannot_be_read_still_shows_what_it_replaced(
    deploy: Callable[..., Any],
    tiny_bundle_dir: Path,
    tmp_path: Path,
    in_object_store: Callable[[Path], str],
    s3_bucket: S3Bucket,
    capsys: pytest.CaptureFixture[str],
) -> None:
    deploy(in_object_store(bundle_with(tiny_bundle_dir, tmp_path / "old", None)))
    nowhere = s3_bucket.url("nowhere/bundle")
    deploy(nowhere)

    code, out, _ = textops(capsys, "--kserve", "--kserve-namespace", NAMESPACE)

    assert code == 0
    lines = out.splitlines()
    assert lines[1] == f"version 2 ({nowhere})"
    assert lines[2].startswith("  cannot read it: ") and nowhere in lines[2]
    assert lines[3:5] == [
        "  no lineage recorded (exported before textops recorded it)",
        "  replaced: version 1",
    ]
    assert lines[-2:] == [
        "  no lineage recorded (exported before textops recorded it)",
        "  replaced: none recorded",
    ]

    code, _, err = textops(capsys, "--kserve", "--kserve-namespace", NAMESPACE, "--version", "7")
    assert code == 2 and "has no record of a version 7 (versions: 1, 2)" in err
