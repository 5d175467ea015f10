"""`python -m textops.components.serve --bundle DIR [KServe flags]`: run the predictor."""

import sys

from textops.components.serve.server import main

if __name__ == "__main__":
    sys.exit(main())
