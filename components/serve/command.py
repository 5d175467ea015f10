"""`textops serve`: the predictor, from the `textops` command.

Its flags are KServe's and the predictor's (`python -m textops.components.serve --help`);
they are passed through untouched, so that `textops --help` never imports kserve.
"""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    """Add `textops serve`."""
    parser = commands.add_parser(
        "serve",
        help="serve a model bundle with KServe (V1 and V2 protocols)",
        description="Serve a model bundle with KServe; every flag goes to "
        "`python -m textops.components.serve` (see `textops serve --help`).",
        add_help=False,
        # No option prefix: every argument, --help included, is handed to the predictor's
        # own parser, which knows KServe's flags.
        prefix_chars="+",
    )
    parser.add_argument("serve_args", nargs=argparse.REMAINDER)
    parser.set_defaults(handler=serve_command)


def serve_command(args: argparse.Namespace) -> int:
    """Run the predictor until it is stopped; the exit status of `textops serve`."""
    from textops.components.serve.server import main

    return main(args.serve_args or ["--help"], prog="textops serve")
