"""Container images the components run in. One setting, `IMAGE_TAG`, names the release.

Components pip-install nothing at run time: each image carries the installed textops package
(see DESIGN.md, "Components and images").
"""

from __future__ import annotations

IMAGE_REPOSITORY = "ghcr.io/textops/textops"
IMAGE_TAG = "0.1.0"


def image(target: str) -> str:
    """The image reference of one Dockerfile target: `data`, `train`, `serve`, `serve-gpu` or
    `monitor`."""
    return f"{IMAGE_REPOSITORY}-{target}:{IMAGE_TAG}"


DATA_IMAGE = image("data")
TRAIN_IMAGE = image("train")
SERVE_IMAGE = image("serve")
SERVE_GPU_IMAGE = image("serve-gpu")
MONITOR_IMAGE = image("monitor")
