"""What the predictor and the collector agree on about traffic.

The evaluate step scores the model in production through its V2 route when `champion_url` is
set. Its requests carry this prefix in Ce-Id and X-Request-Id, which the payload logger (KServe's
agent, or textops' own) makes the events' id, so the drift job and the feedback snapshots leave
them out.
"""

EVALUATION_REQUEST_PREFIX = "textops-evaluate-"

#: Bytes one request body may hold by default (4 MiB, a batch of a few thousand texts), in the
#: predictor (--max-body-bytes; more is answered 413) and in the collector alike: the payload
#: logger sends each request the predictor read on to the collector as one CloudEvent whose
#: body is the request's bytes, so the collector must take at least as much.
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
