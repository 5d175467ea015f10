"""Reading the local model repository: versions, the served version and its labels (as
`production_model` reads them when production is the local repository)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from textops.components.common import model_repository
from textops.components.common.errors import ModelNotFoundError, PublishError
from textops.components.common.labels import LabelMap
from textops.components.common.model_repository import (
    PublishedVersion,
    current_version,
    list_versions,
)
from textops.components.common.production_model import RepositoryTarget, production_labels
from textops.components.deploy import publish

MODEL = "sentiment"


def _layout(root: Path, versions: dict[int, LabelMap], current: int | None) -> Path:
    """A repository as `publish_bundle` lays it out (only the files the read side looks at)."""
    model_dir = root / MODEL
    for number, labels in versions.items():
        (model_dir / str(number)).mkdir(parents=True)
        labels.save(model_dir / str(number) / "labels.json")
    if current is not None:
        (model_dir / "current.json").write_text(json.dumps({"version": current}))
    return root


def current_labels(repository: Path, model_name: str) -> LabelMap | None:
    """The labels in production, production being the repository (which needs no scratch)."""
    return production_labels(model_name, RepositoryTarget(repository), repository / "unused")


def test_nothing_published_means_no_labels(tmp_path: Path) -> None:
    assert current_labels(tmp_path / "missing", MODEL) is None
    (tmp_path / "empty" / MODEL).mkdir(parents=True)
    assert current_labels(tmp_path / "empty", MODEL) is None
    assert list_versions(tmp_path / "empty", MODEL) == []


def test_labels_are_those_of_the_served_version(tmp_path: Path) -> None:
    repository = _layout(
        tmp_path,
        {1: LabelMap(("neg", "pos")), 2: LabelMap(("0", "1", "2"), "int")},
        current=1,  # rolled back to version 1
    )
    (repository / MODEL / ".3.partial-x").mkdir()  # a publish in progress is no version

    assert current_version(repository, MODEL) == PublishedVersion(
        MODEL, 1, repository / MODEL / "1"
    )
    assert current_labels(repository, MODEL) == LabelMap(("neg", "pos"))
    assert [v.version for v in list_versions(repository, MODEL)] == [1, 2]


def test_integer_labels_keep_their_kind(tmp_path: Path) -> None:
    repository = _layout(tmp_path, {4: LabelMap(("1", "2", "10"), "int")}, current=4)

    assert current_labels(repository, MODEL) == LabelMap(("1", "2", "10"), "int")


def test_a_served_version_without_labels_is_a_damaged_repository(tmp_path: Path) -> None:
    repository = _layout(tmp_path, {1: LabelMap(("a", "b"))}, current=2)

    with pytest.raises(ModelNotFoundError, match="served version 2 of 'sentiment' has no readable"):
        current_labels(repository, MODEL)


def test_an_unreadable_pointer_is_an_error(tmp_path: Path) -> None:
    (tmp_path / MODEL).mkdir()
    (tmp_path / MODEL / "current.json").write_text("{not json")

    with pytest.raises(PublishError, match=r"current\.json is unreadable"):
        current_labels(tmp_path, MODEL)


def test_a_model_name_that_is_not_one_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PublishError, match="cannot name a repository directory"):
        current_labels(tmp_path, "../elsewhere")


def test_labels_of_a_published_bundle(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    publish.publish_bundle(tiny_bundle_dir, tmp_path, MODEL)

    assert current_labels(tmp_path, MODEL) == LabelMap.load(tiny_bundle_dir / "labels.json")


def test_a_uri_is_refused_as_a_model_repository() -> None:
    # Path("s3://b/m") would quietly become the local directory "s3:/b/m".
    with pytest.raises(PublishError, match="is a URI, but the model repository is a local"):
        model_repository.model_root("s3://bucket/models", "textops-classifier")
