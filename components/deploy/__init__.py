"""The deploy step: publish the model bundle where serving picks it up."""
