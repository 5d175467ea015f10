"""The training configuration: defaults, YAML, overrides and the errors a user meets."""

from pathlib import Path

import pytest

from textops.components.common.config import (
    TrainingConfig,
    load_config,
    resolve_base_model,
    resolve_data_path,
    sample_data_path,
)
from textops.components.common.errors import ConfigError, ModelNotFoundError
from textops.components.common.settings import DEFAULT_BASE_MODEL


def test_yaml_values_apply_and_flags_override_them(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("epochs: 5\ntext-column: review\nlearning_rate: 0.001\n")
    config = load_config(path, {"epochs": 2, "seed": None})
    assert config.epochs == 2  # the flag wins
    assert config.text_column == "review"  # dashes in YAML keys are accepted
    assert config.learning_rate == 0.001
    assert config.seed == TrainingConfig().seed  # a flag left unset changes nothing


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("epochz: 3\n", "epochz"),
        ("epochs: 0\n", "epochs"),
        ("batch_size: many\n", "batch_size"),
        ("- a list\n", "must hold a mapping"),
        ("epochs: [\n", "not valid YAML"),
        ("validation_fraction: 0.5\ntest_fraction: 0.45\n", "at least 10% of rows"),
        ("model_name: Not A DNS Label\n", "model_name"),
    ],
)
def test_bad_config_files_are_refused_by_name(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment):
        load_config(path)


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"absent\.yaml"):
        load_config(tmp_path / "absent.yaml")


def test_sample_keyword_resolves_to_the_bundled_csv() -> None:
    assert resolve_data_path("sample") == str(sample_data_path())
    assert sample_data_path().is_file()


def test_missing_data_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nowhere\.csv"):
        resolve_data_path(str(tmp_path / "nowhere.csv"))


def test_default_base_model_resolves_offline() -> None:
    path = Path(resolve_base_model(DEFAULT_BASE_MODEL))
    assert (path / "config.json").is_file()
    assert (path / "model.safetensors").is_file()


def test_base_model_path_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="not found"):
        resolve_base_model(str(tmp_path / "no-model"))


def test_base_model_directory_without_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"config\.json"):
        resolve_base_model(str(tmp_path))


def test_hub_ids_pass_through_unchanged() -> None:
    assert resolve_base_model("distilbert-base-uncased") == "distilbert-base-uncased"
