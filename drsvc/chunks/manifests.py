"""Manifests: one sealed ``zstd(JSON)`` document per recovery point, at ``manifests/<desktop>/<point-id>``.

A manifest is written after the point's streams (``write_stream`` returns once its chunks are
stored), so a manifest never refers to a chunk that is not there yet; it is what makes a point
visible in a store.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from drsvc.chunks.codec import Codec
from drsvc.chunks.layout import MANIFEST_MAX, MANIFEST_STORED_MAX, MANIFESTS_PREFIX, MiB, segment
from drsvc.chunks.refs import is_stream_dict
from drsvc.errors import IntegrityError, InvalidInput, NotFound
from drsvc.storage.base import ObjectStore


def manifest_key(desktop: str, point_id: str) -> str:
    """Object key of a point's manifest (``InvalidInput`` for a desktop or point id that is no key segment)."""
    return f"{MANIFESTS_PREFIX}{segment('desktop', desktop)}/{segment('point id', point_id)}"


def check_streams(key: str, doc: Any, key_id: str | None) -> None:
    """Every stream a manifest names uses the manifest's own key: whoever holds one tenant's key
    cannot write a manifest that makes drsvc read another tenant's chunks (or the fleet's)."""
    if is_stream_dict(doc):
        if doc.get("data_key") != key_id:
            named = doc.get("data_key") or "the fleet key"
            raise IntegrityError(
                f"{key}: a stream names data key {named}, the manifest is sealed with {key_id or 'the fleet key'}"
            )
        return
    values = doc.values() if isinstance(doc, dict) else doc if isinstance(doc, list) else ()
    for value in values:
        if isinstance(value, dict | list):
            check_streams(key, value, key_id)


class Manifests:
    """The manifests of one store."""

    def __init__(self, store: ObjectStore, codec_of: Callable[[bytes | memoryview], Codec]) -> None:
        self.store = store
        self.codec_of = codec_of

    def put(self, desktop: str, point_id: str, doc: dict[str, Any], codec: Codec) -> None:
        """Store a point's manifest sealed by ``codec`` (the key of its streams: see ``check_streams``)."""
        key = manifest_key(desktop, point_id)
        check_streams(key, doc, codec.keys.key_id)
        raw = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        blob = codec.seal_doc(key, raw)
        if len(raw) > MANIFEST_MAX or len(blob) > MANIFEST_STORED_MAX:
            # Readers refuse it (hostile-input bounds): never store a point no one can read back.
            # Its size grows with the chunk count (~35 bytes stored per chunk: 4x at 32 KiB chunks).
            raise InvalidInput(
                f"{key}: the manifest would be {len(blob) / MiB:.0f} MiB stored, {len(raw) / MiB:.0f} MiB of JSON; "
                f"readers take at most {MANIFEST_STORED_MAX // MiB} and {MANIFEST_MAX // MiB} MiB: too many chunks "
                "for one point (a store made with a larger [hot] chunk_kib cuts fewer)"
            )
        self.store.put(key, blob)

    def get_sealed(self, desktop: str, point_id: str) -> tuple[dict[str, Any], bytes]:
        """The manifest, authenticated, and the sealed object as stored (one read, for a verbatim copy)."""
        key = manifest_key(desktop, point_id)
        try:
            blob = self.store.get(key, max_size=MANIFEST_STORED_MAX)
        except NotFound:
            raise NotFound(f"no manifest for {desktop}/{point_id} in {self.store.url}") from None
        codec = self.codec_of(blob)
        try:
            doc = json.loads(codec.open_doc(key, blob, MANIFEST_MAX))
        except ValueError as e:
            raise IntegrityError(f"{key}: manifest is unreadable ({e})") from e
        if not isinstance(doc, dict):
            raise IntegrityError(f"{key}: manifest is not a JSON object")
        check_streams(key, doc, codec.keys.key_id)
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
