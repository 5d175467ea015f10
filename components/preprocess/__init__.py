"""The preprocess step: clean text, drop duplicates, a stratified stable split, a fingerprint."""
