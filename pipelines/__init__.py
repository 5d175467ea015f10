"""textops pipelines: the training DAG, its local runner, and the `textops` command."""
