"""Unit tests run on what they set up themselves: nothing an earlier test (an integration test's
lab settings, a library call) left in the process environment.

The guard compares the environment variables that point drsvc at real backends with what they
were when the session started (a developer's own `eval "$(dev/lab env)"` is fine) and fails the
test that finds them changed, naming them.
"""

from __future__ import annotations

import os

import pytest

BACKEND_SETTINGS = (
    "CEPH_CONF",
    "CEPH_KEYRING",
    "S3_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "CONTAINER_HOST",
    "DRSVC_PODMAN_SOCKET",
    "DOCKER_HOST",
    "DRSVC_DOCKER_SOCKET",
    "DRSVC_FAULT",
)
AT_START = {k: os.environ.get(k) for k in BACKEND_SETTINGS}


@pytest.fixture(autouse=True)
def _no_leaked_backend_settings() -> None:
    leaked = {k: os.environ.get(k) for k in BACKEND_SETTINGS if os.environ.get(k) != AT_START[k]}
    assert not leaked, f"an earlier test or library call changed the process environment: {leaked}"
