"""`python -m textops.components.train --job FILE`: one DDP worker, as torchrun starts it."""

import argparse

from textops.components.common.logs import configure_logging
from textops.components.train.launch import worker_main

parser = argparse.ArgumentParser(prog="python -m textops.components.train")
parser.add_argument("--job", required=True, help="job description written by run_training")
configure_logging()
worker_main(parser.parse_args().job)
