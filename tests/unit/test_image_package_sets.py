"""Each image's package set imports that image's entry points, and nothing from outside it.

An image installs `textops[<extras>]` (the extras its Dockerfile target names). Here, the
distributions that requirement pulls in are worked out from the installed metadata, and the
image's entry points are imported in a fresh interpreter whose import hook refuses any module
whose file belongs to an installed distribution outside that set, as if it were not installed.
So the serve image provably needs no torch, and each pipeline image can run every one of its
components' bodies and `python -m kfp.dsl.executor_main`.

The entry points: the kfp executor and the `textops` command in every image; each component
(found by its `base_image`), its module and the imports its body makes when the step runs;
serve: `python -m textops.components.serve --help`; monitor: the collector and the drift job.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
#: Every base image has these, whatever the extras.
BASE_DISTRIBUTIONS = frozenset({"pip", "setuptools", "wheel"})
#: The module names components use for their base image, by Dockerfile target.
IMAGE_CONSTANTS = {
    "DATA_IMAGE": "data",
    "TRAIN_IMAGE": "train",
    "SERVE_IMAGE": "serve",
    "MONITOR_IMAGE": "monitor",
}
#: Modules each image runs beyond its components (`python -m X` runs are in RUN_MODULES).
ENTRY_MODULES = {
    "data": ["kfp.dsl.executor_main"],
    "train": ["kfp.dsl.executor_main", "textops.components.train.launch"],
    "serve": ["textops.components.serve.__main__"],
    "serve-gpu": ["textops.components.serve.__main__"],
    "monitor": [
        "kfp.dsl.executor_main",
        "textops.components.monitor.collector",
        "textops.components.monitor.drift",
    ],
}
#: Service packages that run whole in one image: every module, and every import any of their
#: functions makes when called, must resolve there.
SERVICE_PACKAGES = {
    "serve": "components/serve",
    "serve-gpu": "components/serve",
    "monitor": "components/monitor",
}
#: `python -m MODULE ARGS` each image must be able to start (run to the end of its --help).
RUN_MODULES = {
    "data": [("textops.pipelines", ["--help"])],
    "train": [("textops.pipelines", ["--help"])],
    "serve": [("textops.components.serve", ["--help"]), ("textops.pipelines", ["--help"])],
    "serve-gpu": [("textops.components.serve", ["--help"]), ("textops.pipelines", ["--help"])],
    "monitor": [("textops.pipelines", ["--help"])],
}


def image_extras() -> dict[str, set[str]]:
    """Target -> the extras its Dockerfile installs textops with."""
    text = (ROOT / "Dockerfile").read_text()
    extras: dict[str, set[str]] = {}
    for block in re.split(r"^FROM ", text, flags=re.M)[1:]:
        name = re.match(r"\S+\s+AS\s+(\S+)", block, re.I)
        found = re.search(r'-r "/wheels/textops\[([a-z,]+)\]\.txt"', block)
        if name and found:
            extras[name[1]] = set(found[1].split(","))
    return extras


@cache
def installed() -> dict[str, importlib.metadata.Distribution]:
    found: dict[str, importlib.metadata.Distribution] = {}
    for dist in importlib.metadata.distributions():
        found.setdefault(canonicalize_name(dist.metadata["Name"]), dist)
    return found


def package_set(extras: set[str]) -> tuple[set[str], set[str]]:
    """(distributions textops[extras] pulls in, those it asks for that are not installed here)."""
    seen: set[tuple[str, str]] = set()
    missing: set[str] = set()
    pending = [("textops", ""), *(("textops", e) for e in extras)]
    while pending:
        name, extra = pending.pop()
        if (name, extra) in seen:
            continue
        seen.add((name, extra))
        dist = installed().get(name)
        if dist is None:
            missing.add(name)
            continue
        for line in dist.requires or []:
            requirement = Requirement(line)
            # A requirement without a marker belongs to the distribution itself (extra "").
            if requirement.marker is None and extra:
                continue
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": extra}):
                continue
            dep = canonicalize_name(requirement.name)
            pending += [(dep, ""), *((dep, canonicalize_name(x)) for x in requirement.extras)]
    return {name for name, _ in seen} - missing | BASE_DISTRIBUTIONS, missing


def foreign_files(allowed: set[str]) -> dict[str, str]:
    """Module file -> distribution, for the importable files of every distribution not allowed."""
    own: set[str] = set()
    foreign: dict[str, str] = {}
    for name, dist in installed().items():
        for file in dist.files or []:
            if file.suffix not in (".py", ".so", ".pyd"):
                continue
            path = os.path.normpath(dist.locate_file(file))
            if name in allowed:
                own.add(path)
            else:
                foreign[path] = name
    return {path: name for path, name in foreign.items() if path not in own}


def component_entry_points() -> dict[str, list[tuple[str, list[str]]]]:
    """Target -> (module, names imported from it) for each component module and the imports
    its component bodies make, found by each `@dsl.component`'s `base_image`."""
    entries: dict[str, list[tuple[str, list[str]]]] = {target: [] for target in ENTRY_MODULES}
    for path in sorted((ROOT / "components").rglob("*.py")):
        tree = ast.parse(path.read_text())
        module = "textops." + ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef):
                continue
            for decorator in node.decorator_list:
                target = _component_image(decorator)
                if target is None:
                    continue
                entries[target].append((module, []))
                for inner in ast.walk(node):
                    if isinstance(inner, ast.Import):
                        entries[target] += [(alias.name, []) for alias in inner.names]
                    elif isinstance(inner, ast.ImportFrom) and inner.module:
                        entries[target].append((inner.module, [a.name for a in inner.names]))
    return entries


def service_entry_points(image: str) -> list[tuple[str, list[str]]]:
    """Every module of the image's service package and every import in it, at any depth."""
    if image not in SERVICE_PACKAGES:
        return []
    entries: list[tuple[str, list[str]]] = []
    for path in sorted((ROOT / SERVICE_PACKAGES[image]).glob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        module = "textops." + ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        entries.append((module, []))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                entries += [(alias.name, []) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                entries.append((node.module, [a.name for a in node.names]))
    return entries


def _component_image(decorator: ast.expr) -> str | None:
    if not (isinstance(decorator, ast.Call) and ast.unparse(decorator.func).endswith("component")):
        return None
    for keyword in decorator.keywords:
        if keyword.arg != "base_image":
            continue
        value = keyword.value
        if isinstance(value, ast.Name) and value.id in IMAGE_CONSTANTS:
            return IMAGE_CONSTANTS[value.id]
        if isinstance(value, ast.Call) and value.args and isinstance(value.args[0], ast.Constant):
            return str(value.args[0].value)  # image("monitor")
        raise AssertionError(
            f"a component's base_image is not a project image: {ast.unparse(value)}"
        )
    return None


#: Runs in the fresh interpreter: the import hook, then the entry points.
GUARDED_IMPORTS = r"""
import importlib, importlib.abc, importlib.machinery, importlib.util, json, os, runpy, sys

plan = json.load(open(sys.argv[1]))
foreign = plan["foreign"]
refused = []


# The module the image would find where this environment finds a foreign one first (two
# distributions can install the same module name).
def unshadowed(fullname, path):
    name = fullname.rpartition(".")[2]
    for entry in path if path is not None else sys.path:
        entry = os.path.abspath(entry or ".")
        init = os.path.join(entry, name, "__init__.py")
        if os.path.isfile(init) and init not in foreign:
            return importlib.util.spec_from_file_location(
                fullname, init, submodule_search_locations=[os.path.dirname(init)])
        for suffix in importlib.machinery.all_suffixes():
            candidate = os.path.join(entry, name + suffix)
            if os.path.isfile(candidate) and candidate not in foreign:
                return importlib.util.spec_from_file_location(fullname, candidate)
    return None


class OutsideThePackageSet(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.origin in foreign:
            spec = unshadowed(fullname, path) or spec
        if spec.origin in foreign:
            refused.append(f"{fullname} ({foreign[spec.origin]})")
            raise ModuleNotFoundError(
                f"No module named {fullname!r}: it comes from {foreign[spec.origin]}, "
                f"which the {plan['image']} image does not install", name=fullname)
        return spec


sys.meta_path.insert(0, OutsideThePackageSet())
for module, names in plan["imports"]:
    imported = importlib.import_module(module)
    for name in names:
        if not hasattr(imported, name):
            importlib.import_module(f"{module}.{name}")
for module, args in plan["runs"]:
    sys.argv = [module, *args]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        if e.code not in (0, None):
            raise
print("imported", len(plan["imports"]), "modules; refused on the way (and handled):", refused)
"""


def run_guarded(
    image: str, imports: list[tuple[str, list[str]]], runs: list, tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    allowed, _ = package_set(image_extras()[image])
    plan = tmp_path / f"{image}-plan.json"
    plan.write_text(
        json.dumps(
            {"image": image, "foreign": foreign_files(allowed), "imports": imports, "runs": runs}
        )
    )
    return subprocess.run(
        [sys.executable, "-c", GUARDED_IMPORTS, str(plan)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )


def test_every_image_target_has_a_package_set() -> None:
    extras = image_extras()
    assert set(extras) == {"data", "train", "serve", "serve-gpu", "monitor"}
    for image, wanted in extras.items():
        _, missing = package_set(wanted)
        # onnxruntime-gpu is the GPU images' CUDA build of the onnxruntime module this
        # environment has; anything else missing would leave the test blind to a package.
        assert missing <= {"onnxruntime-gpu"}, (image, missing)


def test_the_serve_package_set_has_no_torch_and_the_others_have_kfp() -> None:
    sets = {image: package_set(extras)[0] for image, extras in image_extras().items()}
    for image in ("serve", "serve-gpu"):
        assert not {"torch", "transformers", "kfp", "great-expectations", "evidently"} & sets[image]
        assert {"kserve", "onnxruntime", "tokenizers"} <= sets[image]
    assert "torch" in sets["train"] and "transformers" in sets["train"]
    for image in ("data", "train", "monitor"):
        assert "kfp" in sets[image], image
    assert "torch" not in sets["data"] and "torch" not in sets["monitor"]


def test_the_guard_refuses_what_the_image_lacks(tmp_path: Path) -> None:
    result = run_guarded("serve", [("torch", [])], [], tmp_path)
    assert result.returncode != 0
    assert "it comes from torch, which the serve image does not install" in result.stderr


@pytest.mark.parametrize("image", ["data", "train", "serve", "serve-gpu", "monitor"])
def test_the_image_imports_its_entry_points(image: str, tmp_path: Path) -> None:
    imports = [(module, []) for module in ENTRY_MODULES[image]]
    imports += component_entry_points()[image] + service_entry_points(image)
    if image in ("data", "train"):
        assert len(imports) > len(ENTRY_MODULES[image]), f"no components found for {image}"
    result = run_guarded(image, imports, RUN_MODULES[image], tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "imported" in result.stdout
