"""The validate step: Great Expectations checks that stop bad data before training."""
