"""`python -m textops.pipelines` is the `textops` command."""

import sys

from textops.pipelines.cli import main

sys.exit(main())
