"""The KServe predictor that serves a model bundle."""
