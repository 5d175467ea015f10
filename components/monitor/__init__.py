"""Monitoring: the payload collector and the drift job."""
