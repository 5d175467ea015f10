"""The evaluate step: the gate between a trained model and production (see `evaluation.py`)."""
