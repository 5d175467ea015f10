"""Code shared by more than one step: configuration, errors, data I/O, the model bundle."""
