"""textops pipeline steps and services, one sub-package each; shared code in `common`."""
