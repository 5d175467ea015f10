"""`textops feedback`: turn labelled traffic in the payload store into a feedback snapshot.

Exit status: 0 a snapshot written or reused, or no labelled feedback; 1 the store cannot be
read; 2 bad input or configuration (labels the model does not know, with 'refuse').

Only light imports here: pandas and the store load when the command runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from textops.components.common.settings import FeedbackSettings
from textops.components.monitor.collector_cli import add_store_argument
from textops.pipelines.config_flags import add_config_flags

#: The settings with a flag, spelt as `textops run` spells them: the feedback settings (the
#: store is --store, as in the other commands that read it), the model and the base data.
CONFIG_FLAGS = (
    *(name for name in FeedbackSettings.model_fields if name != "feedback_store_url"),
    "model_name",
    "data",
    "output_dir",
)


def feedback_command(args: argparse.Namespace) -> int:
    """Build the snapshot and describe it. Returns the exit status."""
    from textops.components.common.config import load_config
    from textops.components.common.errors import PayloadStoreError
    from textops.components.common.production_model import production_target
    from textops.components.monitor import feedback
    from textops.components.monitor.collector_cli import default_store_url

    overrides = {name: getattr(args, name) for name in CONFIG_FLAGS}
    config = load_config(args.config, overrides)
    store_url = args.store or config.feedback_store_url or default_store_url()
    directory = feedback.default_feedback_dir(config.feedback_dir, config.output_dir)
    target = production_target(
        config.deploy_target, config.model_repository, config.kserve_namespace
    )
    try:
        snapshot = feedback.collect_snapshot(store_url, directory, config.model_dump(), target)
    except PayloadStoreError as e:
        print(f"textops: error: {e}", file=sys.stderr)
        return 1
    if snapshot is None:
        print(f"textops: {feedback.NO_FEEDBACK_MESSAGE}")
        return 0
    print(
        "\n".join(
            [
                "textops: feedback snapshot",
                *(f"  {line}" for line in feedback.snapshot_summary(snapshot)),
            ]
        )
    )
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add `textops feedback`."""
    parser = commands.add_parser(
        "feedback",
        help="turn labelled traffic in the payload store into a feedback snapshot",
        description="Build a feedback snapshot of a model's labelled traffic in a window "
        "(the evaluate step's requests excluded, duplicates and texts of the base data "
        "dropped, conflicting and unknown labels by the settings), write it once under its "
        "content fingerprint, and print its URI, rows, window and label counts. Exit status: "
        "0 written, reused or no labelled feedback; 1 the store cannot be read; 2 bad input.",
    )
    parser.add_argument(
        "--config",
        type=Path,
        help="training settings (the YAML of textops run): the base data, its columns, "
        "allowed_labels, redact_pii, deploy_target and the feedback settings",
    )
    add_store_argument(parser, "payload store to read labelled traffic from")
    add_config_flags(parser, CONFIG_FLAGS)
    parser.set_defaults(handler=feedback_command)
