"""Traffic that is not production traffic, and how it is told apart.

The evaluate step scores the model in production through its V2 route when `champion_url` is
set. Its requests carry an X-Request-Id with this prefix, which the payload logger turns into
the events' Ce-Id, so the drift job leaves them out of the windows it compares.
"""

EVALUATION_REQUEST_PREFIX = "textops-evaluate-"
