"""Monitoring: the payload collector, the drift job and the retraining trigger."""
