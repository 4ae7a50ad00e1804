"""Manifests: one sealed ``zstd(JSON)`` document per recovery point, at ``manifests/<desktop>/<point-id>``.

A manifest is written after the point's streams (``write_stream`` returns once its chunks are
stored), so a manifest never refers to a chunk that is not there yet; it is what makes a point
visible in a store.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from drsvc.chunks.codec import Codec
from drsvc.chunks.layout import MANIFEST_MAX, MANIFEST_STORED_MAX, MANIFESTS_PREFIX, segment
from drsvc.errors import IntegrityError, NotFound
from drsvc.storage.base import ObjectStore


def manifest_key(desktop: str, point_id: str) -> str:
    """Object key of a point's manifest (``InvalidInput`` for a desktop or point id that is no key segment)."""
    return f"{MANIFESTS_PREFIX}{segment('desktop', desktop)}/{segment('point id', point_id)}"


class Manifests:
    """The manifests of one store."""

    def __init__(self, store: ObjectStore, codec: Codec) -> None:
        self.store = store
        self.codec = codec

    def put(self, desktop: str, point_id: str, doc: dict[str, Any]) -> None:
        """Store a point's manifest."""
        key = manifest_key(desktop, point_id)
        raw = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        self.store.put(key, self.codec.seal_doc(key, raw))

    def get_sealed(self, desktop: str, point_id: str) -> tuple[dict[str, Any], bytes]:
        """The manifest, authenticated, and the sealed object as stored (one read, for a verbatim copy)."""
        key = manifest_key(desktop, point_id)
        try:
            blob = self.store.get(key, max_size=MANIFEST_STORED_MAX)
        except NotFound:
            raise NotFound(f"no manifest for {desktop}/{point_id} in {self.store.url}") from None
        try:
            doc = json.loads(self.codec.open_doc(key, blob, MANIFEST_MAX))
        except ValueError as e:
            raise IntegrityError(f"{key}: manifest is unreadable ({e})") from e
        if not isinstance(doc, dict):
            raise IntegrityError(f"{key}: manifest is not a JSON object")
        return doc, blob

    def list(self, desktop: str | None = None) -> Iterator[tuple[str, str]]:
        """Yield ``(desktop, point_id)`` of every manifest (of one desktop if given)."""
        prefix = MANIFESTS_PREFIX + (f"{segment('desktop', desktop)}/" if desktop else "")
        for key in self.store.list(prefix):
            parts = key.split("/")
            if len(parts) == 3:
                yield parts[1], parts[2]

    def delete(self, desktop: str, point_id: str) -> None:
        """Remove a manifest (its chunks stay until garbage collection)."""
        self.store.delete(manifest_key(desktop, point_id))
