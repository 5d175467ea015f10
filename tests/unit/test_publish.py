"""Publishing bundles to the local model repository: versions, the pointer, refusals."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from textops.components.common.bundle import METADATA_FILE, ModelBundle, sha256_of
from textops.components.common.errors import PublishError
from textops.components.common.model_repository import (
    PublishedVersion,
    current_version,
    list_versions,
)
from textops.components.deploy.publish import publish_bundle

MODEL = "sentiment"


def _snapshot(root: Path) -> dict[str, bytes]:
    """Every file and directory under `root`, with the bytes of each file."""
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"<dir>"
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture
def bundle_copy(tiny_bundle_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny bundle that a test may damage."""
    return Path(shutil.copytree(tiny_bundle_dir, tmp_path / "bundle"))


@pytest.fixture
def repository_with_v1(tiny_bundle_dir: Path, tmp_path: Path) -> Path:
    repository = tmp_path / "models"
    publish_bundle(tiny_bundle_dir, repository, MODEL)
    return repository


def test_versions_count_up_and_current_points_to_the_latest(
    tiny_bundle_dir: Path, tmp_path: Path
) -> None:
    repository = tmp_path / "models"
    assert current_version(repository, MODEL) is None
    assert list_versions(repository, MODEL) == []

    first = publish_bundle(tiny_bundle_dir, repository, MODEL)
    second = publish_bundle(str(tiny_bundle_dir), str(repository), MODEL)

    assert first == PublishedVersion(MODEL, 1, repository / MODEL / "1")
    assert second == PublishedVersion(MODEL, 2, repository / MODEL / "2")
    pointer = json.loads((repository / MODEL / "current.json").read_text())
    assert pointer["version"] == 2
    assert Path(pointer["path"]) == (repository / MODEL / "2").resolve()
    assert pointer["published_at"].endswith("+00:00")
    assert current_version(repository, MODEL) == second
    assert list_versions(repository, MODEL) == [first, second]
    for version, replaced in ((first, []), (second, [1])):
        copy = ModelBundle.open(version.path)
        assert copy.verify_hashes() == []
        assert {
            p.name: sha256_of(p) for p in version.path.iterdir() if p.name != METADATA_FILE
        } == {p.name: sha256_of(p) for p in tiny_bundle_dir.iterdir() if p.name != METADATA_FILE}
        # The copy's metadata.json is the export's, plus the version it replaced.
        exported = json.loads((tiny_bundle_dir / METADATA_FILE).read_text())
        published = copy.metadata
        assert published.pop("lineage") == {**exported.pop("lineage"), "replaced": replaced}
        assert published == exported
    events = [json.loads(line) for line in (repository / MODEL / "history.jsonl").open()]
    assert [e.get("replaced") for e in events] == [None, [1]]


def test_concurrent_publishes_never_share_a_version(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    repository = tmp_path / "models"
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(
            pool.map(lambda _: publish_bundle(tiny_bundle_dir, repository, MODEL), range(4))
        )
    assert sorted(r.version for r in results) == [1, 2, 3, 4]
    current = current_version(repository, MODEL)
    assert current is not None and current.version == 4
    assert all(ModelBundle.open(r.path).verify_hashes() == [] for r in results)
    assert sorted(p.name for p in (repository / MODEL).iterdir() if not p.name.startswith(".")) == [
        "1",
        "2",
        "3",
        "4",
        "current.json",
        "history.jsonl",
    ]
    # The lock orders the record as it orders the versions.
    lines = (repository / MODEL / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["version"] for line in lines] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: (b / "reference.parquet").unlink(), "incomplete: missing reference.parquet"),
        (lambda b: (b / "labels.json").write_text('{"labels": ["spam", "ham"]}'), "labels.json"),
        (lambda b: (b / "model.onnx").open("ab").write(b"\0"), "model.onnx changed since export"),
        (
            lambda b: (b / "metadata.json").write_text('{"max_seq_length": 32}'),
            "records no file hashes",
        ),
        (lambda b: (b / "metadata.json").write_text("{not json"), "cannot verify"),
    ],
    ids=["incomplete", "tampered-labels", "tampered-model", "no-hashes", "bad-metadata"],
)
def test_a_damaged_bundle_is_refused_and_the_repository_is_unchanged(
    repository_with_v1: Path, bundle_copy: Path, damage: object, message: str
) -> None:
    before = _snapshot(repository_with_v1)
    damage(bundle_copy)  # type: ignore[operator]
    with pytest.raises(PublishError, match=message):
        publish_bundle(bundle_copy, repository_with_v1, MODEL)
    assert _snapshot(repository_with_v1) == before
    current = current_version(repository_with_v1, MODEL)
    assert current is not None and current.version == 1


def test_a_missing_bundle_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PublishError, match="not a directory"):
        publish_bundle(tmp_path / "nowhere", tmp_path / "models", MODEL)
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", ""])
def test_a_model_name_that_is_not_one_directory_is_refused(
    tiny_bundle_dir: Path, tmp_path: Path, name: str
) -> None:
    with pytest.raises(PublishError, match="cannot name a repository directory"):
        publish_bundle(tiny_bundle_dir, tmp_path / "models", name)
    assert not (tmp_path / "models").exists()


def test_only_files_vouched_for_by_metadata_are_published(
    bundle_copy: Path, tmp_path: Path
) -> None:
    (bundle_copy / "notes.txt").write_text("not part of the bundle")
    published = publish_bundle(bundle_copy, tmp_path / "models", MODEL)
    assert not (published.path / "notes.txt").exists()
    assert ModelBundle.open(published.path).verify_hashes() == []


def test_version_numbers_are_never_reused(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    repository = tmp_path / "models"
    publish_bundle(tiny_bundle_dir, repository, MODEL)
    second = publish_bundle(tiny_bundle_dir, repository, MODEL)
    shutil.rmtree(second.path)  # a version deleted by hand; current.json still names it
    assert publish_bundle(tiny_bundle_dir, repository, MODEL).version == 3
