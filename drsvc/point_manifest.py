"""What a point's manifest names, read without the backup machinery: its base image record and
which volume chunks lie within which object.

Tiering, verify, restore and copies read manifests; importing ``drsvc.backup`` for these few names
would pull in the whole backup path (freeze, runtimes, policy) on every such command. The backup
modules re-export them, so either import path works.
"""

from __future__ import annotations

import itertools
from typing import Any

from drsvc.chunks.refs import StreamRef

IMAGES = "_images"  # manifest "desktop" under which base images are stored, once per image id


def image_record_id(manifest: dict[str, Any]) -> str | None:
    """The id of the base image record (``_images/<id>``) a point's manifest names, if any."""
    image = manifest.get("image")
    if isinstance(image, dict) and isinstance(image.get("manifest"), str):
        return str(image["manifest"].split("/", 1)[1])
    return None


def chunk_objects(manifest: dict[str, Any]) -> dict[str, int]:
    """Volume chunks that lie wholly within one object, mapped to the object's place in the manifest.

    Every object of at least the chunker's average size starts and ends chunks
    (``ChunkStore.write_objects``), so all of its chunks are here; a chunk holding several small
    objects (or straddling two, in streams written before objects were aligned) is not.
    """
    volume = manifest.get("volume")
    if not isinstance(volume, dict) or not isinstance(volume.get("stream"), dict):
        return {}
    ends = list(itertools.accumulate(int(o["size"]) for o in volume.get("objects") or ()))
    within: dict[str, int] = {}
    start = 0
    obj = 0
    for cid, size in StreamRef.from_dict(volume["stream"]).chunks:
        end = start + size
        while obj < len(ends) and ends[obj] <= start:
            obj += 1
        if obj < len(ends) and end <= ends[obj]:  # and start >= the object's start, by the loop above
            within.setdefault(cid, obj)
        start = end
    return within
