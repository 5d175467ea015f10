"""A real S3 protocol server on a loopback port (moto's server mode), and buckets on it.

The code under test reaches it exactly as a pod reaches the artifact store: through the
environment variables of the `textops-artifact-store` Secret (`ARTIFACT_STORE_KEYS`), which
s3fs, botocore and pyarrow read; nothing in textops is told that this is not AWS or MinIO.
The `s3_bucket` fixture of tests/conftest.py gives each test a fresh bucket.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from textops.components.common.artifact_store import ARTIFACT_STORE_KEYS

#: Region of the test buckets; any name works against the server.
REGION = "us-east-1"

_BUCKETS = itertools.count()


@contextmanager
def running_s3_server() -> Iterator[str]:
    """Start moto's S3 server on a free loopback port for the block; yield its endpoint URL."""
    from moto.server import ThreadedMotoServer

    # The server logs every request through werkzeug; the tests' output is no place for it.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def artifact_store_environment(endpoint_url: str) -> dict[str, str]:
    """The artifact store Secret's variables, as a pod gets them, for the server at
    `endpoint_url` (which takes any key pair)."""
    values = {
        "AWS_ACCESS_KEY_ID": "textops-test",
        "AWS_SECRET_ACCESS_KEY": "textops-test-secret",
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_DEFAULT_REGION": REGION,
    }
    # The Secret's keys are declared once, in artifact_store.py; the tests set those and no other.
    assert set(values) == set(ARTIFACT_STORE_KEYS), "artifact_store.py's keys changed"
    return values


@dataclass(frozen=True)
class S3Bucket:
    """A bucket on the test server. `fs` is the s3fs filesystem that fsspec gives the code
    under test for `s3://` URIs, so what a test writes through it is what the code reads."""

    name: str
    fs: Any

    def url(self, key: str = "") -> str:
        """`s3://<bucket>/<key>` (the bucket itself without a key)."""
        return f"s3://{self.name}/{key}" if key else f"s3://{self.name}"

    def path(self, key: str = "") -> str:
        """`<bucket>/<key>`: the form `fs`'s methods take."""
        return f"{self.name}/{key}" if key else self.name


def open_bucket(
    endpoint_url: str, monkeypatch: pytest.MonkeyPatch, name: str | None = None
) -> S3Bucket:
    """Set the artifact store's variables for the server at `endpoint_url`, as a pod has them
    (`monkeypatch` undoes that), and make the bucket `name` there (default: a name not used
    before in this session)."""
    import fsspec
    import s3fs

    for name, value in artifact_store_environment(endpoint_url).items():
        monkeypatch.setenv(name, value)
    # Nothing of the user's AWS setup may take part: no profile, no files, no session token.
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    # fsspec reuses filesystems; one made before these variables were set would go elsewhere.
    s3fs.S3FileSystem.clear_instance_cache()
    fs = fsspec.filesystem("s3")
    bucket = S3Bucket(name or f"textops-test-{next(_BUCKETS)}", fs)
    fs.mkdir(bucket.name)
    return bucket


def remove_bucket(bucket: S3Bucket) -> None:
    """Delete the bucket and everything in it; forget the filesystems made for it."""
    import s3fs

    bucket.fs.rm(bucket.name, recursive=True)
    s3fs.S3FileSystem.clear_instance_cache()
