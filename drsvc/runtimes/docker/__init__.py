"""``docker:///path/to/docker.sock``: Docker Engine (``dockerd --experimental``) through the docker SDK.

The adapter in pieces: ``client`` talks to the Engine API (errors, checkpoint endpoints),
``paths`` says where Docker keeps a container's layer and checkpoints on this host, ``pack``
turns a checkpoint into drsvc's archive, ``unpack`` turns an archive back into a container, and
``runtime`` is the ``ContainerRuntime`` made of them.

The low-level ``docker.APIClient`` does the talking; the experimental checkpoint endpoints have no
SDK helpers and go through its ``_url``/``_post_json``/``_post``/``_delete`` plumbing.

Docker's checkpoints are not drsvc's archive: ``POST /containers/{id}/checkpoints`` leaves a raw
CRIU image directory under ``<DockerRootDir>/containers/<id>/checkpoints/<name>/`` (no archive, no
root filesystem, no config). This adapter therefore works **on the Docker host** (like the Podman
adapter's ``probe_tcp``) and packs the same layout Podman and CRI-O use, streamed member by member:

- ``config.dump``: a small Podman-like summary (id, name, image, labels, network mode, runtime);
- ``docker-config.json``: the container's full inspect document (what a restore re-creates from);
- ``spec.dump``: a minimal OCI-like spec (args, env, cwd, hostname) for tools reading archives;
- ``checkpoint/``: the CRIU images, read straight from Docker's checkpoint directory;
- ``rootfs-diff.tar``: the container's added/changed files (``GET /containers/{id}/changes``,
  content read from the overlay2 upper dir), ``deleted.files``: JSON list of deleted paths.

Restore re-creates the container from ``docker-config.json`` (same name, or a clone under a new name,
with label overrides and ``network``), writes the rootfs diff into it (``PUT /containers/{id}/archive``;
deletions as overlay whiteouts in its upper dir), copies the CRIU images under the new container's
own ``checkpoints/`` directory (dockerd 20.10 refuses a custom checkpoint dir on start) and starts it
with ``?checkpoint=<name>``. The archive is consumed in one pass; nothing is buffered whole.

Facts measured in the lab (Docker 20.10.24, containerd 1.6.20, runc 1.1.5, CRIU 4.2):

- runc under containerd hands CRIU ``/etc/criu/runc.conf``, so drsvc's freeze hook
  (``drsvc.runtimes.freeze``) pairs Docker checkpoints with pool snapshots like Podman's; the
  cgroup path is ``/docker/<id>`` (cgroupfs driver), where the hook finds the id.
- Docker's checkpoint API has no ``tcpEstablished`` switch (moby passes only ``Exit``): a container
  holding established TCP connections can be checkpointed only if ``tcp-established`` is in the
  CRIU config. ``tcp_established`` is accepted for interface parity and otherwise ignored.
- Docker does not record that a container was started from a checkpoint. A restore labels the new
  container ``drsvc.restored-at=<time>``; ``restored_at`` reports it while the container has not
  stopped since (``State.FinishedAt`` still zero). The label is hidden from ``DesktopRef.labels``.
- containerd keeps a checkpoint's blobs until its garbage collector runs (0.3-1.3 s after dockerd
  deletes the checkpoint image). Meanwhile another checkpoint of the same container (same spec
  blob) fails with "content sha256:...: already exists" (moby#42900): the adapter retries with
  backoff. Each retry is a new CRIU dump: inside a freeze batch it comes after the release, so
  ``checkpoint_batch`` marks it ``redumped`` and a backup keeps that desktop's volume, not its memory.
  A restore uploads its checkpoint directory the same way; a marker file unique to the
  restore keeps it from equalling containerd's copy of a checkpoint taken within the same second.
- The rootfs diff is read right after CRIU let the container go (as Podman does), so files the
  desktop writes in between appear in it; the files CRIU checks at restore are put back as they
  stood at the dump by ``freeze.checkpoint_batch`` (``heldfiles``); data belongs on the volume.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from drsvc.errors import InvalidInput
from drsvc.runtimes.docker.runtime import DockerRuntime

__all__ = ["DockerRuntime", "from_url"]


def from_url(url: str, **options: Any) -> DockerRuntime:
    """Open ``docker:///absolute/path/to/docker.sock``."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "docker" or parsed.netloc or not parsed.path.startswith("/") or parsed.query:
        raise InvalidInput(f"malformed Docker runtime URL {url!r}: expected docker:///absolute/path/to/docker.sock")
    return DockerRuntime(parsed.path, **options)
