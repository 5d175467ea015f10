"""The kustomize manifests: every overlay renders, every object is valid, the contracts hold.

Rendering runs the real `kubectl kustomize` (see conftest.py). KServe objects are checked
against the KServe CRDs' schemas in `tests/reference/kserve` (upstream copies), the core kinds
against the Kubernetes schemas `kubernetes_validate` ships. Both checks are strict: a field
the schema does not define is an error, as with `kubectl apply --validate=strict`. Security
properties: test_manifests_security.py.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
MANIFESTS = ROOT / "manifests"
KSERVE_REFERENCE = ROOT / "tests" / "reference" / "kserve"
OVERLAYS = sorted(p.name for p in (MANIFESTS / "overlays").iterdir() if p.is_dir())
#: Every kustomization a user may apply into the textops namespace, relative to manifests/
#: (pipeline-rbac, which reaches into the pipeline's namespace: test_manifests_pipeline_rbac.py).
KUSTOMIZATIONS = [f"overlays/{name}" for name in OVERLAYS] + ["observability"]

NAMESPACE = "textops"
ISVC = "textops-classifier"
COLLECTOR = "textops-collector"
COLLECTOR_PORT = 8088
IMAGE_REPOSITORY = "ghcr.io/textops/"

KSERVE_CRDS = {
    "InferenceService": ("serving.kserve.io_inferenceservices.yaml", "v1beta1"),
    "ServingRuntime": ("serving.kserve.io_servingruntimes.yaml", "v1alpha1"),
    "ClusterServingRuntime": ("serving.kserve.io_clusterservingruntimes.yaml", "v1alpha1"),
}
CORE_KINDS = {
    "Namespace",
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "ConfigMap",
    "Secret",
    "Service",
    "Deployment",
    "PersistentVolumeClaim",
    "NetworkPolicy",
    "PodDisruptionBudget",
}
#: Prometheus Operator kinds; test_manifests_observability.py checks them.
MONITORING_KINDS = {"PrometheusRule", "PodMonitor", "ServiceMonitor"}
CLUSTER_SCOPED = {"Namespace", "ClusterServingRuntime"}


# --- rendering and schemas -------------------------------------------------------------------


def test_every_overlay_is_tested() -> None:
    assert set(OVERLAYS) >= {"local", "gpu", "production", "triton"}


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_renders_into_the_textops_namespace(manifests: Any, kustomization: str) -> None:
    objects = manifests.render(kustomization)
    assert objects
    for obj in objects:
        assert {"apiVersion", "kind", "metadata"} <= obj.keys(), obj
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "textops", obj["kind"]
        if obj["kind"] not in CLUSTER_SCOPED:
            assert obj["metadata"].get("namespace") == NAMESPACE, obj["metadata"]["name"]


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_kind_is_one_a_test_validates(manifests: Any, kustomization: str) -> None:
    kinds = {obj["kind"] for obj in manifests.render(kustomization)}
    assert kinds <= CORE_KINDS | set(KSERVE_CRDS) | MONITORING_KINDS


def _strict(schema: Any) -> Any:
    """The schema with unknown fields refused wherever it lists an object's fields.

    CRD schemas leave `additionalProperties` out and let the API server prune unknown fields;
    closing them is how `--validate=strict` treats a misspelt field.
    """
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {key: _strict(value) for key, value in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        closed["additionalProperties"] = False
    return closed


@functools.cache
def _crd_validator(kind: str) -> Any:
    import jsonschema

    filename, version = KSERVE_CRDS[kind]
    # The InferenceService CRD is 2 MB of YAML: libyaml's loader reads it ten times faster.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load((KSERVE_REFERENCE / filename).read_text(), Loader=loader)
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema = _strict(served["schema"]["openAPIV3Schema"])
    return jsonschema.Draft4Validator(schema)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_kserve_objects_match_the_crd_schemas(manifests: Any, kustomization: str) -> None:
    checked = 0
    for obj in manifests.render(kustomization):
        if obj["kind"] not in KSERVE_CRDS:
            continue
        expected_version = f"serving.kserve.io/{KSERVE_CRDS[obj['kind']][1]}"
        assert obj["apiVersion"] == expected_version
        errors = [
            f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in _crd_validator(obj["kind"]).iter_errors(obj)
        ]
        assert not errors, f"{obj['kind']} {obj['metadata']['name']}: {errors}"
        checked += 1
    assert checked or kustomization == "observability"


def test_the_crd_check_refuses_a_misspelt_field(manifests: Any) -> None:
    isvc = manifests.only(manifests.render("overlays/local"), "InferenceService", ISVC)
    bad = {**isvc, "spec": {**isvc["spec"], "predictor": {**isvc["spec"]["predictor"]}}}
    bad["spec"]["predictor"]["minReplica"] = 1
    assert list(_crd_validator("InferenceService").iter_errors(bad))


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_core_objects_match_the_kubernetes_schemas(manifests: Any, kustomization: str) -> None:
    import kubernetes_validate.utils as kv

    version = kv.latest_version()
    for obj in manifests.render(kustomization):
        if obj["kind"] in CORE_KINDS:
            try:
                kv.validate(obj, version, strict=True)
            except kv.ValidationError as e:
                pytest.fail(f"{obj['kind']} {obj['metadata']['name']} (Kubernetes {version}): {e}")


def test_the_kubernetes_check_refuses_a_misspelt_field(manifests: Any) -> None:
    import kubernetes_validate.utils as kv

    service = manifests.only(manifests.render("overlays/local"), "Service", COLLECTOR)
    with pytest.raises(kv.ValidationError):
        bad = {**service, "spec": {**service["spec"], "selectr": {}}}
        kv.validate(bad, kv.latest_version(), strict=True)


# --- the serving contract --------------------------------------------------------------------


def test_the_runtime_runs_the_textops_predictor(manifests: Any) -> None:
    runtime = manifests.only(manifests.render("overlays/local"), "ServingRuntime", "textops-onnx")
    assert runtime["spec"]["supportedModelFormats"] == [
        {"name": "textops-bundle", "version": "1", "autoSelect": True}
    ]
    (container,) = runtime["spec"]["containers"]
    assert container["name"] == "kserve-container"
    command = container["command"] + container["args"]
    assert command == [
        "python",
        "-m",
        "textops.components.serve",
        "--bundle",
        "/mnt/models",
        "--model_name",
        "{{.Name}}",
        "--http_port",
        "8080",
    ]
    assert container["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == 8080


@pytest.mark.parametrize("overlay", ["local", "gpu", "production"])
def test_the_inference_service_uses_the_runtime(manifests: Any, overlay: str) -> None:
    isvc = manifests.only(manifests.render(f"overlays/{overlay}"), "InferenceService", ISVC)
    assert isvc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "textops"
    version = isvc["metadata"]["annotations"]["textops.dev/model-version"]
    assert version.isdigit()
    predictor = isvc["spec"]["predictor"]
    assert predictor["model"]["modelFormat"] == {"name": "textops-bundle"}
    assert predictor["model"]["runtime"] == "textops-onnx"
    # The one version, three times: what deploy patches must agree.
    assert predictor["model"]["storageUri"].endswith(f"/models/{ISVC}/{version}")
    assert _flag(predictor["model"]["args"], "--model-version") == version
    assert 1 <= predictor["minReplicas"] <= predictor["maxReplicas"]
    assert predictor["scaleMetric"] and predictor["scaleTarget"] > 0
    limits = predictor["model"]["resources"]["limits"]
    assert {"cpu", "memory"} <= limits.keys()


def _flag(args: list[str], flag: str) -> str:
    assert args.count(flag) == 1, f"{flag} given {args.count(flag)} times in {args}"
    return args[args.index(flag) + 1]


def test_canary_rollouts_where_knative_routes_traffic(manifests: Any) -> None:
    for overlay in OVERLAYS:
        isvc = manifests.only(manifests.render(f"overlays/{overlay}"), "InferenceService", ISVC)
        mode = isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"]
        canary = isvc["spec"]["predictor"].get("canaryTrafficPercent")
        if mode == "Knative":
            assert canary is not None and 0 < canary < 100, overlay
        else:
            assert mode == "Standard" and canary is None, overlay
            assert isvc["spec"]["predictor"]["scaleMetric"] in ("cpu", "memory")


def test_gpu_overlay_asks_for_a_gpu(manifests: Any) -> None:
    isvc = manifests.only(manifests.render("overlays/gpu"), "InferenceService", ISVC)
    model = isvc["spec"]["predictor"]["model"]
    assert model["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert _flag(model["args"], "--precision") == "fp16"
    assert _flag(model["args"], "--model-version").isdigit()
    assert "nvidia.com/gpu" not in str(manifests.render("overlays/local"))


def test_triton_overlay_tokenizes_in_a_transformer(manifests: Any) -> None:
    isvc = manifests.only(manifests.render("overlays/triton"), "InferenceService", ISVC)
    version = isvc["metadata"]["annotations"]["textops.dev/model-version"]
    spec = isvc["spec"]
    assert spec["predictor"]["model"]["runtime"] == "kserve-tritonserver"
    assert spec["predictor"]["model"]["modelFormat"] == {"name": "onnx"}
    # Triton reads a model repository whose model directory is the InferenceService's name.
    assert spec["predictor"]["model"]["storageUri"] == "pvc://textops-models/models"
    (transformer,) = spec["transformer"]["containers"]
    assert transformer["command"] == ["python", "-m", "textops.components.serve.transformer"]
    assert _flag(transformer["args"], "--predictor_protocol") == "v2"
    assert _flag(transformer["args"], "--model-version") == version
    assert {"name": "STORAGE_URI", "value": f"pvc://textops-models/models/{ISVC}/{version}"} in (
        transformer["env"]
    )
    # Triton's own arguments only: the textops predictor's flags would stop it.
    assert spec["predictor"]["model"]["args"] == ["--backend-config=default-max-batch-size=64"]
    assert "logger" not in spec["predictor"] and spec["transformer"]["logger"]["mode"] == "all"


# --- images ------------------------------------------------------------------------------------


def test_the_image_tag_is_set_once(manifests: Any) -> None:
    from textops.components.common.images import IMAGE_TAG

    for kustomization in KUSTOMIZATIONS:
        for obj in manifests.render(kustomization):
            for where, container in manifests.containers(obj):
                image = container.get("image", "")
                if image.startswith(IMAGE_REPOSITORY):
                    assert image.endswith(f":{IMAGE_TAG}"), f"{kustomization} {where}: {image}"
    # The tag is written in the base's `images:` and nowhere else under manifests/.
    writers = {
        path.relative_to(MANIFESTS).as_posix()
        for path in MANIFESTS.rglob("*")
        if path.is_file() and IMAGE_TAG in path.read_text()
    }
    assert writers == {"base/kustomization.yaml"}
    images = yaml.safe_load((MANIFESTS / "base/kustomization.yaml").read_text())["images"]
    assert {entry["name"]: entry["newTag"] for entry in images} == {
        "ghcr.io/textops/textops-serve": IMAGE_TAG,
        "ghcr.io/textops/textops-monitor": IMAGE_TAG,
    }
    for path in MANIFESTS.rglob("kustomization.yaml"):
        for entry in yaml.safe_load(path.read_text()).get("images", []):
            assert "newTag" not in entry or path.parent.name == "base", path


#: An image from outside the project, pinned: a release tag, and a digest when one is given.
_PINNED_IMAGE = re.compile(r"[a-z0-9.-]+(/[a-z0-9._-]+)+:v?\d+\.\d+\.\d+(@sha256:[0-9a-f]{64})?")


def test_the_serve_and_monitor_images_are_used(manifests: Any) -> None:
    images = {
        container["image"]
        for obj in manifests.render("overlays/production")
        for _, container in manifests.containers(obj)
        if "image" in container  # An InferenceService's model runs its runtime's image.
    }
    ours = {image for image in images if image.startswith(IMAGE_REPOSITORY)}
    assert {image.rsplit(":", 1)[0] for image in ours} == {
        "ghcr.io/textops/textops-serve",
        "ghcr.io/textops/textops-monitor",
    }
    # observability/'s Pushgateway is the one other image; it is pinned where it is used.
    for image in images - ours:
        assert _PINNED_IMAGE.fullmatch(image), f"{image} is not pinned to a release"


# --- the commands the containers run -----------------------------------------------------------


def _kserve_flags() -> set[str]:
    import importlib.util

    spec = importlib.util.find_spec("kserve")
    assert spec is not None and spec.origin is not None, "kserve is not installed"
    source = (Path(spec.origin).parent / "model_server.py").read_text()
    return set(re.findall(r"""["'](--[\w-]+)["']""", source))


def _module_path(module: str) -> Path | None:
    relative = module.removeprefix("textops.").split(".")
    base = ROOT.joinpath(*relative)
    for candidate in (base / "__main__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _commands(manifests: Any) -> dict[str, list[str]]:
    """The arguments given to each `python -m <module>` a container runs, all overlays together."""
    commands: dict[str, list[str]] = {}
    for kustomization in KUSTOMIZATIONS:
        for obj in manifests.render(kustomization):
            for _, container in manifests.containers(obj):
                command = container.get("command", [])
                if command[:2] == ["python", "-m"]:
                    commands.setdefault(command[2], []).extend(container.get("args", []))
    return commands


@pytest.mark.parametrize(
    "module",
    [
        "textops.components.serve",
        "textops.components.serve.transformer",
        "textops.components.monitor.collector",
    ],
)
def test_every_flag_passed_is_one_the_module_defines(manifests: Any, module: str) -> None:
    """Fails until the module exists and defines each flag the manifests pass it."""
    commands = _commands(manifests)
    assert module in commands
    path = _module_path(module)
    assert path is not None, f"{module} (run by the manifests) does not exist in components/"
    if path.name != "__main__.py":
        assert '__name__ == "__main__"' in path.read_text(), f"{path} does not run as a script"
    package = ROOT / "components" / module.split(".")[2]
    source = "\n".join(p.read_text() for p in package.rglob("*.py"))
    known = _kserve_flags() if module.startswith("textops.components.serve") else set()
    missing = [
        flag
        for flag in commands[module]
        if flag.startswith("--") and flag not in known and f'"{flag}"' not in source
    ]
    assert not missing, f"{module} does not define {missing}"
    if module == "textops.components.monitor.collector":
        assert "TEXTOPS_STORE_URL" in source, "the collector does not read TEXTOPS_STORE_URL"
