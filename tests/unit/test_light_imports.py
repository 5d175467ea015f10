"""`import textops` and the CLI stay light: heavy libraries load only in the steps."""

import subprocess
import sys

import pytest

HEAVY = ("torch", "great_expectations", "transformers", "evidently")


@pytest.mark.parametrize(
    "module",
    [
        "textops.components.common.config",
        "textops.components.common.bundle",
        "textops.pipelines.cli",
        "textops.pipelines.training",
    ],
)
def test_module_imports_no_heavy_library(module: str) -> None:
    code = f"import sys, {module}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "", f"{module} imports {loaded}"
