"""Every setting is declared once, in its settings model; everything else matches it.

The KFP components write their parameters out (kfp reads them from the source), so this test
holds each component to its sections: every non-artifact parameter is a field of one of its
sections with the field's KFP type, and every field of those sections is a parameter. The
DAGs' parameters, the `textops run` flags and the config file's keys are held to
`TrainingConfig` (and the monitoring DAG's to the drift settings) by name, type and default.
A mismatch anywhere fails here, naming the setting.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from kfp.dsl.base_component import BaseComponent
from kfp.dsl.python_component import PythonComponent
from kfp.dsl.types.type_utils import is_parameter_type
from pydantic import BaseModel

from textops.components.common.config import TrainingConfig, load_config
from textops.components.common.settings import (
    DataSettings,
    DeploySettings,
    EvaluationSettings,
    FeedbackMergeSettings,
    FeedbackSettings,
    FeedbackSnapshotsSettings,
    GateSettings,
    LabelPolicySettings,
    OutputSettings,
    ProductionModelSettings,
    SplitSettings,
    TrainPlacementSettings,
    TrainResourceSettings,
    TrainSettings,
    ValidationSettings,
)
from textops.components.monitor.drift_settings import (
    DriftJobSettings,
    DriftSettings,
    load_drift_settings,
)
from textops.pipelines.cli import (
    COMPILED_MONITORING,
    COMPILED_PIPELINE,
    CONFIG_FILE_ONLY,
    build_parser,
)
from textops.pipelines.monitoring import monitoring_pipeline
from textops.pipelines.parameters import kfp_type
from textops.pipelines.training import training_pipeline

COMPONENTS_DIR = Path(__file__).resolve().parents[2] / "components"

#: Each component's settings: the sections whose fields it takes as parameters.
SECTIONS: dict[str, tuple[type[BaseModel], ...]] = {
    "validate_data": (
        DataSettings,
        ValidationSettings,
        LabelPolicySettings,
        ProductionModelSettings,
        FeedbackMergeSettings,
    ),
    "preprocess_data": (SplitSettings,),
    "train_model": (TrainSettings, TrainPlacementSettings),
    "evaluate_model": (GateSettings, EvaluationSettings, ProductionModelSettings),
    "export_model": (),
    "deploy_model": (ProductionModelSettings, DeploySettings),
    "detect_drift": (DriftJobSettings, DriftSettings, ProductionModelSettings),
    "collect_feedback": (
        FeedbackSettings,
        FeedbackSnapshotsSettings,
        DataSettings,
        ValidationSettings,
        ProductionModelSettings,
    ),
}
#: Parameters that are no setting: the model repository is derived from output_dir.
RUN_PARAMETERS: dict[str, type] = {"model_repository": str}
#: Parameter inputs a DAG gives from another task's output, per component: validate takes the
#: feedback snapshots to merge. Any other parameter must be a setting.
WIRED: dict[str, dict[str, type]] = {"validate_data": {"feedback": list}}
#: Fields that are not KFP parameters: drift tests are set in a drift settings file.
NOT_PARAMETERS: dict[type[BaseModel], frozenset[str]] = {DriftSettings: frozenset({"tests"})}
#: Sections that no component reads: the DAG reads train_gpus, a local run output_dir.
NOT_IN_COMPONENTS = (TrainResourceSettings, OutputSettings)
#: The KFP IR's name of each parameter type.
IR_TYPES = {
    str: "STRING",
    int: "NUMBER_INTEGER",
    float: "NUMBER_DOUBLE",
    bool: "BOOLEAN",
    list: "LIST",
}


def parameter_fields(section: type[BaseModel]) -> dict[str, type]:
    """A section's fields that are KFP parameters, with their KFP types."""
    skip = NOT_PARAMETERS.get(section, frozenset())
    return {
        name: kfp_type(field.annotation)
        for name, field in section.model_fields.items()
        if name not in skip
    }


def components() -> dict[str, PythonComponent]:
    """Every `@dsl.component` in components/*/component.py, by name."""
    found: dict[str, PythonComponent] = {}
    for path in sorted(COMPONENTS_DIR.glob("*/component.py")):
        module = importlib.import_module(f"textops.components.{path.parent.name}.component")
        for value in vars(module).values():
            if (
                isinstance(value, PythonComponent)
                and value.python_func.__module__ == module.__name__
            ):
                found[value.python_func.__name__] = value
    return found


def python_parameters(component: PythonComponent) -> dict[str, inspect.Parameter]:
    """The component function's parameters that are KFP parameters (not artifacts)."""
    inputs = component.component_spec.inputs or {}
    func = component.python_func
    return {
        name: parameter
        for name, parameter in inspect.signature(func).parameters.items()
        if name in inputs and is_parameter_type(inputs[name].type)
    }


def test_every_component_has_its_sections_listed() -> None:
    assert set(components()) == set(SECTIONS)


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_component_parameters_are_its_sections_fields(name: str) -> None:
    component = components()[name]
    expected: dict[str, type] = {}
    for section in SECTIONS[name]:
        expected.update(parameter_fields(section))
    parameters = python_parameters(component)
    given = {**RUN_PARAMETERS, **WIRED.get(name, {})}
    for parameter_name, parameter in parameters.items():
        kind = expected.get(parameter_name, given.get(parameter_name))
        assert kind is not None, (
            f"{name} takes {parameter_name}, which is no field of its sections "
            f"{[s.__name__ for s in SECTIONS[name]]}: declare the setting in its section"
        )
        assert parameter.annotation in (kind, kind.__name__), (
            f"{name}'s {parameter_name} is {parameter.annotation}, its setting is {kind.__name__}"
        )
        # A default in a component would be a second declaration of the setting's default.
        assert parameter.default is inspect.Parameter.empty, (
            f"{name}'s {parameter_name} has a default of its own; the config's is the default"
        )
    missing = sorted(set(expected) - set(parameters))
    assert not missing, f"{name} lacks parameters for the settings {missing}"


def test_every_config_field_reaches_a_component_or_the_dag() -> None:
    read = {field for sections in SECTIONS.values() for s in sections for field in s.model_fields}
    for section in NOT_IN_COMPONENTS:
        read |= set(section.model_fields)
    assert set(TrainingConfig.model_fields) <= read


def _ir_parameters(compiled: Path) -> dict[str, Any]:
    spec = next(yaml.safe_load_all(compiled.read_text(encoding="utf-8")))
    return spec["root"]["inputDefinitions"]["parameters"]


def expected_training_parameters() -> dict[str, tuple[type, Any]]:
    """(KFP type, default) of each training pipeline parameter: the config's fields."""
    defaults = TrainingConfig().model_dump()
    expected = {
        name: (kind, defaults[name])
        for name, kind in parameter_fields(TrainingConfig).items()
        if name not in OutputSettings.model_fields
    }
    expected["model_repository"] = (str, str(TrainingConfig().model_repository))
    return expected


def expected_monitoring_parameters() -> dict[str, tuple[type, Any]]:
    expected: dict[str, tuple[type, Any]] = {}
    for section in (DriftJobSettings, DriftSettings):
        defaults = section().model_dump()
        for name, kind in parameter_fields(section).items():
            expected[name] = (kind, defaults[name])
    return {**expected, **expected_training_parameters()}


@pytest.mark.parametrize(
    ("pipeline", "compiled", "expected"),
    [
        (training_pipeline, COMPILED_PIPELINE, expected_training_parameters),
        (monitoring_pipeline, COMPILED_MONITORING, expected_monitoring_parameters),
    ],
    ids=["training", "monitoring"],
)
def test_dag_parameters_are_the_settings(
    pipeline: BaseComponent, compiled: Path, expected: Any
) -> None:
    wanted: dict[str, tuple[type, Any]] = expected()
    signature = inspect.signature(pipeline.pipeline_func)
    got = {name: (p.annotation, p.default) for name, p in signature.parameters.items()}
    assert got == wanted
    # The checked-in YAML, too (test_compiled_pipeline holds it to a fresh compile).
    ir = _ir_parameters(compiled)
    assert set(ir) == set(wanted)
    for name, (kind, default) in wanted.items():
        assert ir[name]["parameterType"] == IR_TYPES[kind], name
        assert ir[name]["defaultValue"] == default, name


def _run_flags() -> dict[str, argparse.Action]:
    run = build_parser()._subparsers._group_actions[0].choices["run"]
    return {a.dest: a for a in run._actions if a.option_strings}


def test_run_flags_are_the_config_fields() -> None:
    flags = _run_flags()
    fields = TrainingConfig.model_fields
    assert set(flags) - {"help", "config"} == set(fields) - CONFIG_FILE_ONLY
    for name, action in flags.items():
        if name in ("help", "config"):
            continue
        field = fields[name]
        assert action.option_strings[0] == "--" + name.replace("_", "-"), name
        assert action.default is None, name  # unset flags leave the config file's value
        annotation = field.annotation
        if typing.get_origin(annotation) is typing.Literal:
            assert tuple(action.choices or ()) == typing.get_args(annotation), name
        elif annotation is bool:
            assert isinstance(action, argparse.BooleanOptionalAction), name
        elif annotation in (int, float):
            assert action.type is annotation, name
        elif kfp_type(annotation) is list:
            assert callable(action.type) and action.type("a, b") == ["a", "b"], name
        else:
            assert annotation is str and action.type is None, name
        if kfp_type(annotation) is not list:
            assert f"(default: {field.default})" in (action.help or ""), name


def test_flags_given_as_their_defaults_make_the_default_config() -> None:
    """Each flag's parsed value is accepted by the config, under the same name and type."""
    defaults = TrainingConfig().model_dump()
    argv = ["run"]
    for name, action in _run_flags().items():
        if name in ("help", "config"):
            continue
        value = defaults[name]
        flag = action.option_strings[0]
        if isinstance(action, argparse.BooleanOptionalAction):
            argv.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, list):
            argv += [flag, ",".join(value) or ","]
        else:
            argv += [flag, str(value)]
    args = vars(build_parser().parse_args(argv))
    overrides = {name: args[name] for name in TrainingConfig.model_fields if name in args}
    assert load_config(None, overrides) == TrainingConfig()


def test_yaml_keys_are_the_config_fields(tmp_path: Path) -> None:
    everything = TrainingConfig().model_dump()
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(everything))
    assert load_config(path) == TrainingConfig()
    path.write_text(yaml.safe_dump({**everything, "not_a_setting": 1}))
    with pytest.raises(Exception, match="not_a_setting"):
        load_config(path)


def test_drift_yaml_keys_are_the_drift_settings(tmp_path: Path) -> None:
    everything = DriftSettings().model_dump()
    path = tmp_path / "drift.yaml"
    path.write_text(yaml.safe_dump(everything))
    assert load_drift_settings(path) == DriftSettings()
    path.write_text(yaml.safe_dump({**everything, "not_a_setting": 1}))
    with pytest.raises(Exception, match="not_a_setting"):
        load_drift_settings(path)


@pytest.mark.parametrize(
    ("name", "setting", "value"),
    [
        ("train_model", "learning_rate", 2.0),
        ("train_model", "train_nodes", 0),
        ("preprocess_data", "test_fraction", 1.0),
        ("evaluate_model", "min_macro_f1", 1.5),
        ("evaluate_model", "deploy_target", "somewhere"),
        ("deploy_model", "canary_traffic_percent", 101),
        ("validate_data", "min_rows", 0),
        ("validate_data", "model_name", "Not a DNS label"),
        ("detect_drift", "family_alpha", 1.5),
        ("collect_feedback", "feedback_test_fraction", 1.0),
        ("collect_feedback", "feedback_conflicts", "vote"),
    ],
)
def test_a_component_refuses_a_value_out_of_bounds_naming_the_setting(
    name: str, setting: str, value: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A value that crossed the KFP boundary is checked by the config's own model, first."""
    from textops.components.common import logs
    from textops.components.common.errors import ConfigError

    monkeypatch.setattr(logs, "configure_logging", lambda: None)
    component = components()[name]
    defaults = {
        **TrainingConfig().model_dump(),
        **DriftJobSettings().model_dump(),
        **DriftSettings().model_dump(),
        "model_repository": "unused",
        **{p: kind() for wired in WIRED.values() for p, kind in wired.items()},
    }
    arguments: dict[str, Any] = {
        parameter: None for parameter in inspect.signature(component.python_func).parameters
    }
    arguments.update({p: defaults[p] for p in python_parameters(component)})
    arguments[setting] = value
    with pytest.raises(ConfigError, match=f"{setting}: "):
        component.python_func(**arguments)


def _flags(*command: str) -> dict[str, argparse.Action]:
    """The flags of `textops COMMAND ...`, by destination."""
    parser: argparse.ArgumentParser = build_parser()
    for name in command:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return {a.dest: a for a in parser._actions if a.option_strings}


def _assert_flag_is_the_field(action: argparse.Action, name: str, field: Any) -> None:
    """`action` is `--name-with-dashes`, typed as the field, its help the field's description."""
    assert action.option_strings == ["--" + name.replace("_", "-")], name
    expected_type = None if field.annotation is str else field.annotation
    assert action.type is expected_type, f"--{name}: {action.type} is not {field.annotation}"
    assert (action.help or "").startswith(field.description), name


#: DriftJobSettings fields whose flag is the store's shared one, spelt as in collect and labels.
DRIFT_FLAG_NAMES = {"store_url": "store"}


def test_drift_flags_are_the_drift_settings_fields() -> None:
    """Each drift job setting and threshold with a flag: same name, same type, its help."""
    flags = _flags("drift")
    for name, field in DriftJobSettings.model_fields.items():
        dest = DRIFT_FLAG_NAMES.get(name, name)
        assert dest in flags, f"DriftJobSettings.{name} has no flag in textops drift"
        if name in ("since", "until", "last", "workspace", "pushgateway"):
            _assert_flag_is_the_field(flags[dest], name, field)
        else:  # --store and --bundle: spelt and described as in the other commands
            assert flags[dest].type is None and field.annotation is str, name
    for name, field in DriftSettings.model_fields.items():
        if name in flags:
            _assert_flag_is_the_field(flags[name], name, field)
            assert f"(default: {field.default})" in (flags[name].help or ""), name


@pytest.mark.parametrize("action", ["list", "promote", "rollback", "canary"])
def test_models_flags_that_are_settings_are_the_config_fields(action: str) -> None:
    """`textops models` spells a setting as `textops run` does, with its type and default."""
    flags = _flags("models", action)
    run = _run_flags()
    settings = [name for name in flags if name in TrainingConfig.model_fields]
    assert "kserve_namespace" in settings and "model_name" in settings
    if action != "list":
        assert "rollout_timeout_seconds" in settings
    for name in settings:
        field = TrainingConfig.model_fields[name]
        _assert_flag_is_the_field(flags[name], name, field)
        assert flags[name].option_strings == run[name].option_strings, name
        assert flags[name].default == field.default, name
