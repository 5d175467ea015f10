"""A run on a cluster never reports success with its output left on a pod's disk.

The checked-in compiled pipelines keep `textops run`'s one-machine defaults (`deploy_target:
local`, the model repository `.textops/models`, the payload store from a Secret or nothing).
Uploaded to Kubeflow and run with those defaults, the first step must stop with the parameter
to set; `textops submit` and `textops schedule` must refuse such arguments before sending them.

The first steps run here as Kubeflow runs them: the container command and arguments of the
compiled executor, with an executor input whose output artifacts lie in the pipeline root's
object store (`minio://...`), the parameters being the compiled defaults and the arguments a run
is given.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from textops.components.common.cluster_run import (
    check_cluster_arguments,
    check_payload_store,
    on_a_cluster,
)
from textops.components.common.errors import ConfigError
from textops.pipelines.cli import main
from textops.pipelines.kubeflow import PIPELINE_PACKAGES

#: Where Kubeflow's launcher puts a run's artifacts with the default MinIO pipeline root.
PIPELINE_ROOT = "minio://mlpipeline/v2/artifacts"


#: Inputs a task takes from an earlier task, as that task hands them over with the defaults:
#: collect_feedback's snapshots, with no payload store and no feedback_snapshots, are none.
UPSTREAM_OUTPUTS: dict[str, Any] = {"feedback": []}


def run_first_step_as_kubeflow(
    pipeline: str, task: str, arguments: dict[str, Any], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    """Run the compiled pipeline's root task `task` as a Kubeflow pod would, with `arguments`."""
    spec = next(yaml.safe_load_all(PIPELINE_PACKAGES[pipeline].read_text()))
    defaults = {
        name: definition["defaultValue"]
        for name, definition in spec["root"]["inputDefinitions"]["parameters"].items()
        if "defaultValue" in definition
    }
    values = {**defaults, **arguments}
    task_spec = spec["root"]["dag"]["tasks"][task]
    component = spec["components"][task_spec["componentRef"]["name"]]
    parameters: dict[str, Any] = {}
    for name, source in task_spec["inputs"].get("parameters", {}).items():
        if "componentInputParameter" in source:
            parameters[name] = values[source["componentInputParameter"]]
        elif "taskOutputParameter" in source:
            # An earlier task's output: what it hands over when a run has nothing for it.
            parameters[name] = UPSTREAM_OUTPUTS[name]
        else:
            parameters[name] = source["runtimeValue"]["constant"]
    outputs = component.get("outputDefinitions", {})
    executor_input = {
        "inputs": {"parameterValues": parameters},
        "outputs": {
            "artifacts": {
                name: {
                    "artifacts": [
                        {
                            "name": name,
                            "type": {"schemaTitle": d["artifactType"]["schemaTitle"]},
                            "uri": f"{PIPELINE_ROOT}/{spec['pipelineInfo']['name']}/run-1/"
                            f"{task}/{name}",
                            "metadata": {},
                        }
                    ]
                }
                for name, d in outputs.get("artifacts", {}).items()
            },
            "parameters": {
                name: {"outputFile": str(tmp_path / f"{name}.out")}
                for name in outputs.get("parameters", {})
            },
            "outputFile": str(tmp_path / "executor_output.json"),
        },
    }
    container = spec["deploymentSpec"]["executors"][component["executorLabel"]]["container"]
    argv = [*container["command"]]
    argv += [json.dumps(executor_input) if a == "{{$}}" else a for a in container["args"]]
    # The image's `python3` is this environment's; the pod has no payload store URL set.
    env = {k: v for k, v in os.environ.items() if k != "TEXTOPS_STORE_URL"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)


@pytest.mark.parametrize(
    ("uri", "cluster"),
    [
        ("minio://mlpipeline/v2/artifacts/x/report", True),
        ("s3://bucket/root/x/report", True),
        ("gs://bucket/x", True),
        ("/work/.textops/runs/x/report", False),
        (".textops/runs/x/report", False),
        ("file:///work/.textops/x", False),
    ],
)
def test_a_step_knows_a_cluster_by_its_artifacts_uri(uri: str, cluster: bool) -> None:
    assert on_a_cluster(uri) is cluster


def test_the_rules_name_the_parameter_to_set() -> None:
    with pytest.raises(ConfigError, match="Set the pipeline parameter deploy_target to 'kserve'"):
        check_cluster_arguments({"deploy_target": "local", "model_repository": ".textops/models"})
    with pytest.raises(ConfigError, match="set the pipeline parameter store_url"):
        check_payload_store("")
    with pytest.raises(ConfigError, match="store_url is a SQLite file"):
        check_cluster_arguments({"deploy_target": "kserve", "store_url": "sqlite:///p.db"})
    with pytest.raises(ConfigError, match="leave workspace empty on a cluster"):
        check_cluster_arguments({"workspace": ".textops/drift"})
    # What a cluster run needs passes; an empty store_url may come from the Secret.
    check_cluster_arguments(
        {"deploy_target": "kserve", "store_url": "", "workspace": "", "since": "1h"}
    )
    check_cluster_arguments({"store_url": "postgresql://drift@db:5432/payloads"})
    canary = {"deploy_target": "kserve", "canary_traffic_percent": 10, "prometheus_url": ""}
    with pytest.raises(ConfigError, match="prometheus_url is empty"):
        check_cluster_arguments({**canary, "canary_analysis_seconds": 300})
    check_cluster_arguments({**canary, "canary_analysis_seconds": 0})  # explicitly unjudged


def test_the_compiled_training_pipeline_run_with_its_defaults_stops_in_validate(
    tmp_path: Path,
) -> None:
    # An upload to the Kubeflow UI run with no argument changed.
    result = run_first_step_as_kubeflow("training", "validate-data", {}, tmp_path)
    assert result.returncode != 0
    assert "deploy_target is 'local'" in result.stderr
    assert "Set the pipeline parameter deploy_target to 'kserve'" in result.stderr
    # Stopped before anything was written or validated.
    assert "expectation" not in result.stderr.lower()


def test_the_compiled_monitoring_pipeline_stops_in_its_drift_step(tmp_path: Path) -> None:
    defaults = run_first_step_as_kubeflow("monitoring", "detect-drift", {}, tmp_path)
    assert defaults.returncode != 0
    assert "Set the pipeline parameter deploy_target to 'kserve'" in defaults.stderr

    # With the model in KServe but no store: no Secret, no store_url.
    no_store = run_first_step_as_kubeflow(
        "monitoring", "detect-drift", {"deploy_target": "kserve"}, tmp_path
    )
    assert no_store.returncode != 0
    assert "set the pipeline parameter store_url" in no_store.stderr
    assert "textops-collector-store" in no_store.stderr

    workspace = run_first_step_as_kubeflow(
        "monitoring",
        "detect-drift",
        {
            "deploy_target": "kserve",
            "store_url": "postgresql://drift@db:5432/payloads",
            "workspace": ".textops/drift",
        },
        tmp_path,
    )
    assert workspace.returncode != 0
    assert "leave workspace empty on a cluster" in workspace.stderr


def test_submit_and_schedule_refuse_the_one_machine_defaults_before_sending(
    kubeflow, capsys: pytest.CaptureFixture[str]
) -> None:
    host = ["--kubeflow-host", kubeflow.url]
    assert main(["submit", *host]) == 2
    assert "deploy_target is 'local'" in capsys.readouterr().err
    assert main(["schedule", "create", *host]) == 2
    assert "deploy_target is 'local'" in capsys.readouterr().err
    monitoring = ["submit", "--pipeline", "monitoring", *host, "--param", "deploy_target=kserve"]
    assert main([*monitoring, "--param", "store_url=sqlite:///payloads.db"]) == 2
    assert "store_url is a SQLite file" in capsys.readouterr().err
    assert kubeflow.requests == []

    # The same pipelines, given what a cluster needs, are sent.
    assert main(["submit", *host, "--param", "deploy_target=kserve"]) == 0
    assert main(monitoring) == 0
    assert len(kubeflow.runs) == 2
