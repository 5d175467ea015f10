"""What pipeline tasks need from a Kubernetes cluster beyond their image: credentials.

Tasks that read or write the data or the model repository on an object store (S3, MinIO, or
anything else that speaks the S3 API) get its credentials from the Secret
`textops-artifact-store` as environment variables, which s3fs and botocore read. The compiled
pipeline names the Secret and its keys only; the values stay in the cluster.
"""

from typing import TYPE_CHECKING

from textops.components.common.artifact_store import ARTIFACT_STORE_KEYS, ARTIFACT_STORE_SECRET

if TYPE_CHECKING:
    from kfp.dsl import PipelineTask

#: Secret data key -> environment variable of the task. The keys are the variables' own names,
#: so `kubectl create secret generic --from-literal=AWS_ACCESS_KEY_ID=...` fills it; the same
#: keys reach multi-node training's nodes (components/train/trainjob.py).
ARTIFACT_STORE_ENV: dict[str, str] = {key: key for key in ARTIFACT_STORE_KEYS}


def use_artifact_store_credentials(task: "PipelineTask") -> "PipelineTask":
    """Give `task` the object store's credentials from the Secret `textops-artifact-store`.

    The Secret and each of its keys are optional: a cluster whose tasks reach the store some
    other way (workload identity, an IAM role for the service account, a local path) needs
    none, and the task still starts.

    Args:
        task: A task in a pipeline being defined.

    Returns:
        The same task, for chaining.
    """
    from kfp import kubernetes

    return kubernetes.use_secret_as_env(
        task,
        secret_name=ARTIFACT_STORE_SECRET,
        secret_key_to_env=dict(ARTIFACT_STORE_ENV),
        optional=True,
    )
