"""The deploy step: publish the bundle locally (and hot-load it), or roll it out to KServe."""
