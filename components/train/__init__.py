"""The train step: fine-tune a transformer classifier, on CUDA when present."""
