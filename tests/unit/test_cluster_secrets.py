"""Credentials reach pipeline tasks only from Kubernetes Secrets, by name and key: no secret
value is in a compiled pipeline. The steps whose effects reach outside a run (deploy, drift)
are never answered from KFP's cache."""

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from textops.components.common.artifact_store import ARTIFACT_STORE_SECRET
from textops.pipelines.cluster import ARTIFACT_STORE_ENV, use_artifact_store_credentials
from textops.pipelines.kubeflow import PIPELINE_PACKAGES

#: Secrets a compiled pipeline may name: the object store's, and the payload store's (the
#: collector's, manifests/overlays/production).
KNOWN_SECRETS = {ARTIFACT_STORE_SECRET, "textops-collector-store"}
#: Tasks that read or write the data or the model repository, by compiled file.
STORE_TASKS = {
    "training.yaml": {"validate-data", "train-model", "evaluate-model", "deploy-model"},
    "monitoring.yaml": {
        "detect-drift",
        "validate-data",
        "train-model",
        "evaluate-model",
        "deploy-model",
    },
}
#: What a credential looks like in text.
SECRET_PATTERNS = {
    "AWS access key id": r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b",
    "private key": r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    "password in a URL": r"\b[a-z][a-z0-9+.-]*://[^\s/:@'\"]+:[^\s/@'\"]+@",
    "bearer token": r"\bBearer\s+[A-Za-z0-9._~+/-]{16,}",
    "JSON web token": r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.",
    "GitHub token": r"\bgh[pousr]_[A-Za-z0-9]{30,}",
    # A name like secret/password/token given a value with lower case and digits (key
    # names and environment variable names, in capitals or words, are not values).
    "secret assignment": r"(?i)\b[\w-]*(?:secret|password|passwd|token|access_key)[\w-]*['\"]?"
    r"\s*[:=]\s*['\"]?(?=[A-Za-z0-9/+=_-]*[a-z])(?=[A-Za-z0-9/+=_-]*[0-9])[A-Za-z0-9/+=_-]{16,}",
}
SECRET_ENV = re.compile(r"^AWS_|SECRET|TOKEN|PASSWORD|PASSWD|_KEY$|DATABASE_URL|STORE_URL")


def find_secrets(text: str) -> list[str]:
    """Each credential-looking string in `text`, as 'kind: text'."""
    return [f"{kind}: {m[0]}" for kind, p in SECRET_PATTERNS.items() for m in re.finditer(p, text)]


def compiled(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The pipeline spec and the platform spec of the checked-in compiled pipeline `name`."""
    path = PIPELINE_PACKAGES[Path(name).stem]
    assert path.exists(), f"{path} is missing: compile that pipeline and check it in"
    documents = list(yaml.safe_load_all(path.read_text()))
    return documents[0], documents[1] if len(documents) > 1 else {}


def tasks(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every task in the pipeline, nested DAGs included, by name."""
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    return {name: task for dag in dags for name, task in dag["tasks"].items()}


def secrets_by_task(spec: dict[str, Any], platform: dict[str, Any]) -> dict[str, list[Any]]:
    executors = platform.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {})
    by_executor = {k: v.get("secretAsEnv", []) for k, v in executors.get("executors", {}).items()}
    found = {}
    for name, task in tasks(spec).items():
        component = spec["components"][task["componentRef"]["name"]]
        if "executorLabel" in component:
            found[name] = by_executor.get(component["executorLabel"], [])
    return found


def test_the_secret_is_named_never_copied(tmp_path: Path) -> None:
    from kfp import compiler, dsl

    @dsl.container_component
    def read_store(uri: str) -> dsl.ContainerSpec:
        return dsl.ContainerSpec(image="textops-test:1", command=["ls"], args=[uri])

    @dsl.pipeline(name="store-reader")
    def store_reader(uri: str = "s3://bucket/data.csv") -> None:
        use_artifact_store_credentials(read_store(uri=uri))

    path = tmp_path / "p.yaml"
    compiler.Compiler().compile(store_reader, str(path))
    spec, platform = yaml.safe_load_all(path.read_text())
    (reference,) = secrets_by_task(spec, platform)["read-store"]
    assert reference["secretName"] == ARTIFACT_STORE_SECRET
    assert reference["optional"] is True
    assert {e["secretKey"]: e["envVar"] for e in reference["keyToEnv"]} == ARTIFACT_STORE_ENV
    assert set(ARTIFACT_STORE_ENV.values()) >= {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ENDPOINT_URL",
    }
    container = next(iter(spec["deploymentSpec"]["executors"].values()))["container"]
    assert "env" not in container


@pytest.mark.parametrize("name", sorted(STORE_TASKS))
def test_tasks_that_touch_the_stores_get_the_credentials(name: str) -> None:
    spec, platform = compiled(name)
    found = secrets_by_task(spec, platform)
    for task in sorted(STORE_TASKS[name]):
        assert task in found, f"{name} has no task {task}"
        names = {reference["secretName"] for reference in found[task]}
        assert ARTIFACT_STORE_SECRET in names, (
            f"{name}: {task} does not get {ARTIFACT_STORE_SECRET}; call "
            "textops.pipelines.cluster.use_artifact_store_credentials on it"
        )
    for task, references in found.items():
        for reference in references:
            assert reference["secretName"] in KNOWN_SECRETS, (name, task, reference)
            # By name only: never a value, and the name itself a constant, not a parameter.
            assert set(reference) <= {"secretName", "keyToEnv", "optional", "secretNameParameter"}


@pytest.mark.parametrize("name", sorted(STORE_TASKS))
def test_no_secret_value_in_a_compiled_pipeline(name: str) -> None:
    spec, _ = compiled(name)
    assert find_secrets(PIPELINE_PACKAGES[Path(name).stem].read_text()) == []
    for label, executor in spec["deploymentSpec"]["executors"].items():
        for variable in executor.get("container", {}).get("env", []):
            assert not SECRET_ENV.search(variable["name"]), (label, variable["name"])
    parameters = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    for parameter, definition in parameters.items():
        if re.search(r"secret|password|token|access_key", parameter, re.I):
            assert not definition.get("defaultValue"), f"{name}: default of {parameter}"


def test_the_secret_scan_sees_secrets() -> None:
    leaks = """
    env:
    - name: AWS_ACCESS_KEY_ID
      value: AKIAIOSFODNN7EXAMPLE
    store_url: postgresql://textops:hunter2@db:5432/textops
    aws_secret_access_key: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY1
    headers: {Authorization: Bearer abcdefghijklmnop1234}
    """
    kinds = {found.split(":")[0] for found in find_secrets(leaks)}
    assert kinds == {"AWS access key id", "password in a URL", "secret assignment", "bearer token"}
    assert find_secrets("secretKey: AWS_SECRET_ACCESS_KEY\nsecretName: textops-store\n") == []


@pytest.mark.parametrize("name", sorted(STORE_TASKS))
def test_deploy_and_drift_are_never_answered_from_the_cache(name: str) -> None:
    spec, _ = compiled(name)
    effects = {k: v for k, v in tasks(spec).items() if re.search(r"deploy|drift", k)}
    assert effects, f"{name} has no deploy or drift task"
    for task, definition in effects.items():
        assert not definition.get("cachingOptions", {}).get("enableCache"), f"{name}: {task}"
