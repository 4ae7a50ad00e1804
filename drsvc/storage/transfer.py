"""Copy objects from one store to another as they are: server-side when possible, else streamed.

What a site copy needs below the chunk store: the sealed objects (packs, indexes, manifests, the
store's config) move byte for byte, never decrypted. ``Transfer.copy`` picks per object:

* **server-side** (``S3Store.copy_from``: one CopyObject, the bytes never leave the service) when
  both stores are S3 on the same endpoint under the same identity. A refusal (another account's
  bucket without a grant) switches the transfer to streaming for good;
* **streamed** otherwise: one GET, one PUT (memory: one object per worker; packs are ~16 MiB).

Every copy is **verified at the destination**: its size, and its MD5 where S3 gives one (the ETag
of an object written in one part). A streamed object is hashed on the way; its hash must equal
the source's ETag from the GET (nothing changed in transit from the source) and the ETag the
destination answers the PUT with (its own MD5 of what it stored: no extra request); a destination
that reports no usable ETag (multipart, or not S3) is read back and hashed. A mismatch deletes
nothing and raises ``IntegrityError`` naming the object.

``RateLimit`` (bytes per second, shared by all workers) implements ``--limit-upload``: it counts
the bytes copied, server-side ones included (they cross the provider's network all the same).
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from drsvc.errors import BackendError, IntegrityError
from drsvc.storage.base import ObjectStore


class RateLimit:
    """A token bucket in bytes per second, shared by threads (``None`` rate: unlimited)."""

    def __init__(self, bytes_per_second: float | None, burst_seconds: float = 1.0) -> None:
        self.rate = bytes_per_second
        self._capacity = (bytes_per_second or 0) * burst_seconds
        self._tokens = self._capacity
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def take(self, n: int) -> float:
        """Account for ``n`` bytes, sleeping as long as the rate asks; returns the seconds slept."""
        if not self.rate or n <= 0:
            return 0.0
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= n
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            time.sleep(wait)
        return wait


@dataclass
class Copied:
    """One object copied: how, and how many bytes."""

    key: str
    size: int
    how: str  # server-side | streamed


def _single_part_md5(etag: str | None) -> str | None:
    """The ETag when it is the MD5 of the content (one-part uploads), else None."""
    if etag and len(etag) == 32 and "-" not in etag:
        return etag.lower()
    return None


class Transfer:
    """Copies objects from ``source`` to ``destination`` under the same keys, verified."""

    def __init__(self, source: ObjectStore, destination: ObjectStore, *, limit: RateLimit | None = None) -> None:
        self.source = source
        self.destination = destination
        self.limit = limit or RateLimit(None)
        same = getattr(destination, "same_service", None)
        self.server_side = bool(same is not None and hasattr(source, "copy_from") and same(source))
        self._lock = threading.Lock()

    @property
    def mode(self) -> str:
        return "server-side" if self.server_side else "streamed"

    def copy(self, key: str, *, storage_class: str | None = None, retain_until: datetime | None = None) -> Copied:
        """Copy one object (replacing any at the destination), verified there."""
        if self.server_side:
            try:
                return self._server_side(key, storage_class, retain_until)
            except BackendError as e:
                if "AccessDenied" not in str(e) and "Forbidden" not in str(e):
                    raise
                with self._lock:
                    self.server_side = False  # another account's bucket: stream from now on
        return self._streamed(key, storage_class, retain_until)

    def _server_side(self, key: str, storage_class: str | None, retain_until: datetime | None) -> Copied:
        head: dict[str, Any] = self.source.head(key)  # type: ignore[attr-defined]
        self.limit.take(head["size"])
        etag = self.destination.copy_from(  # type: ignore[attr-defined]
            self.source, key, storage_class=storage_class, retain_until=retain_until
        )
        expected = _single_part_md5(head["etag"])
        self._verify(key, head["size"], expected, etag or None, data=None)
        return Copied(key, head["size"], "server-side")

    def _streamed(self, key: str, storage_class: str | None, retain_until: datetime | None) -> Copied:
        tagged = getattr(self.source, "get_tagged", None)
        data, source_etag = tagged(key) if tagged is not None else (self.source.get(key), None)
        digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
        source_md5 = _single_part_md5(source_etag)
        if source_md5 is not None and source_md5 != digest:
            raise IntegrityError(
                f"copy of {key}: the bytes read from {self.source.url} do not match its ETag (changed in transit)"
            )
        self.limit.take(len(data))
        put_tagged = getattr(self.destination, "put_tagged", None)
        if put_tagged is not None:
            # the ETag of the PUT's answer is S3's own MD5 of what it stored: verified there, no HEAD
            etag = _single_part_md5(put_tagged(key, data, storage_class=storage_class, retain_until=retain_until))
            if etag is not None:
                if etag != digest:
                    raise IntegrityError(f"copy of {key} to {self.destination.url}: content differs (MD5)")
                return Copied(key, len(data), "streamed")
        else:
            self.destination.put(key, data, storage_class=storage_class, retain_until=retain_until)
        self._verify(key, len(data), digest, None, data=data)
        return Copied(key, len(data), "streamed")

    def _verify(self, key: str, size: int, md5: str | None, etag: str | None, *, data: bytes | None) -> None:
        """Size and content of the destination's object equal the source's."""
        head = getattr(self.destination, "head", None)
        if head is not None:
            info = head(key)
            got_size, got = info["size"], _single_part_md5(info["etag"]) or _single_part_md5(etag)
        else:
            got_size, got = self.destination.size(key), None
        if got_size != size:
            raise IntegrityError(f"copy of {key} to {self.destination.url}: {got_size} bytes there, {size} sent")
        if md5 is not None and got is not None:
            if got != md5:
                raise IntegrityError(f"copy of {key} to {self.destination.url}: content differs (MD5)")
            return
        # no usable checksum on one side: read it back
        back = hashlib.md5(self.destination.get(key), usedforsecurity=False).hexdigest()
        want = md5 if md5 is not None else (hashlib.md5(data, usedforsecurity=False).hexdigest() if data else None)
        if want is None:
            want = hashlib.md5(self.source.get(key), usedforsecurity=False).hexdigest()
        if back != want:
            raise IntegrityError(f"copy of {key} to {self.destination.url}: content differs (read back)")
