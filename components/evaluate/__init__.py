"""The evaluate step: score the trained model on the held-out test split."""
