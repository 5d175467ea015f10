"""The artifact store's credentials: one Secret whose keys become environment variables.

Object-store clients (fsspec's s3fs, boto3, MinIO) read these variables, so a pod that has
them can read and write `s3://` URIs. Pipeline tasks and multi-node training nodes get them
from the Secret only, never from a value written in a manifest or a compiled pipeline.
"""

#: The Secret in the pipeline's namespace that holds the credentials.
ARTIFACT_STORE_SECRET = "textops-artifact-store"

#: Its keys, each exposed under the same name as an environment variable.
ARTIFACT_STORE_KEYS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_ENDPOINT_URL",
    "AWS_DEFAULT_REGION",
)
