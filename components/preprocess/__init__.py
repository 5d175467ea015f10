"""The preprocess step: clean text, drop duplicates, a stratified seeded split, a fingerprint."""
