"""``S3Store``: one bucket (and key prefix) as a drsvc object store -- bucket setup, parallel
transfers, Object Lock retention, tagged and server-side copies. See the package docstring for the
behaviour (retries, storage classes, locks, deletes); body checksums are ``checksums``, writes in
parts (and their leftovers) ``multipart``.
"""

from __future__ import annotations

import collections
import os
import re
import warnings
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from drsvc import faults
from drsvc.errors import (
    BackendError,
    IntegrityError,
    InvalidInput,
    MissingDependency,
    NotFound,
)
from drsvc.storage.base import StoreBase, check_key, check_prefix, ordered_map, split_store_url, too_large
from drsvc.storage.s3 import bucket as bucket_setup
from drsvc.storage.s3 import checksums, multipart
from drsvc.storage.s3.errors import _NOT_FOUND, RUNBOOK, _code, _outage
from drsvc.storage.s3.reader import _ViewReader

MiB = 1024 * 1024
DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys
LOCK_MODES = ("COMPLIANCE", "GOVERNANCE")
ARCHIVE_CLASSES = ("GLACIER", "DEEP_ARCHIVE")  # not readable without a RestoreObject first

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")

# A venv made with --system-site-packages (README "Install": it must see Debian's python3-rados)
# also sees Debian's pyOpenSSL when the host has it (Ceph hosts often do). urllib3 1.26 imports it
# under botocore, and an old pyOpenSSL warns against the newer cryptography drsvc installs on every
# command that opens a bucket. pyOpenSSL is never used for drsvc's connections: its warnings are noise.
warnings.filterwarnings("ignore", module=r"OpenSSL(\.|$)")


def _botocore_session(profile: str | None) -> Any:
    """A botocore session: the client drsvc needs without importing boto3 and s3transfer (~0.1 s a process)."""
    try:
        import botocore.session
    except ImportError as e:  # pragma: no cover - boto3 (and so botocore) is a dependency
        raise MissingDependency("the s3:// store needs boto3: pip install boto3") from e
    return botocore.session.Session(profile=profile) if profile else botocore.session.Session()


def from_url(url: str, **options: Any) -> S3Store:
    """Open ``s3://BUCKET[/PREFIX]``."""
    bucket, prefix = split_store_url(url, "s3", _BUCKET, "s3://BUCKET[/PREFIX]")
    return S3Store(bucket, prefix, **options)


class S3Store(StoreBase):
    """An object store in one S3 bucket, optionally under a key prefix."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        profile: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        create: bool = True,
        create_missing: bool = True,
        object_lock: bool = False,
        lock_mode: str = "COMPLIANCE",
        workers: int = 8,
        window: int = 32,
        window_bytes: int = 64 * MiB,
        multipart_threshold: int = 16 * MiB,
        max_attempts: int = 10,
        connect_timeout: float = 10,
        read_timeout: float = 120,
        client: Any = None,
    ) -> None:
        if lock_mode not in LOCK_MODES:
            raise InvalidInput(f"s3 lock_mode {lock_mode!r}: expected one of {', '.join(LOCK_MODES)}")
        self.bucket = bucket
        self.prefix = f"{prefix}/" if prefix else ""
        self._url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        self.lock_mode = lock_mode
        self._workers = max(1, workers)
        self._window = max(1, window)
        self._window_bytes = window_bytes
        self._lock_enabled: bool | None = None
        self._multipart_threshold = multipart_threshold
        self.endpoint = endpoint_url or os.environ.get("S3_ENDPOINT_URL") or None
        # how the server checks bodies: the signed payload's SHA-256, or over HTTPS a CRC32 header
        self._signed = checksums.signs_payload(self.endpoint)
        # Who the client acts as: with the endpoint, decides whether another store is reachable by
        # server-side copy (``copy_from``). The access key id is not a secret.
        self.identity = access_key or profile or os.environ.get("AWS_ACCESS_KEY_ID") or ""
        if client is None:
            session = _botocore_session(profile)
            from botocore.config import Config

            config = Config(
                retries={"mode": "standard", "max_attempts": max_attempts},
                max_pool_connections=max(10, 2 * self._workers),
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                region_name=region,
                **checksums.client_options(self._signed),
            )
            keys: dict[str, str] = {}
            if access_key and secret_key:
                keys = {"aws_access_key_id": access_key, "aws_secret_access_key": secret_key}
            client = session.create_client("s3", endpoint_url=self.endpoint, region_name=region, config=config, **keys)
        self._client = client
        self._errors = client.exceptions
        if create:  # create_missing=False: the bucket must exist (NotFound), its settings are still checked
            self._ensure_bucket(region, object_lock, create_missing)

    # ------------------------------------------------------------------ helpers

    def _oid(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _fail(self, what: str, key: str, error: Exception) -> Exception:
        """Translate a botocore error into drsvc's hierarchy (the caller raises it)."""
        code = _code(error)
        where = f"{self._url} ({self.bucket}/{self.prefix}{key})" if key else self._url
        if code in _NOT_FOUND:
            return NotFound(f"object {key} not found in {self._url}")
        if code == "NoSuchBucket":
            return NotFound(f"s3 bucket {self.bucket} does not exist ({self._url})")
        if code in checksums.DIGEST_MISMATCH:
            return IntegrityError(
                f"s3 {what} {where}: the server refused the body: it does not match its checksum ({code}); "
                "it was changed on its way, nothing was stored"
            )
        if code == "InvalidObjectState":
            return BackendError(
                f"s3 {what} {where}: the object is archived (GLACIER / DEEP_ARCHIVE): "
                "restore it first (S3 RestoreObject), then retry"
            )
        if code == "InvalidRequest" and "lock" in str(error).lower():
            return InvalidInput(
                f"s3 {what} {where}: bucket {self.bucket} has no Object Lock, but a policy asks for "
                "object_lock_days: use a bucket created with Object Lock (drsvc creates one when opened "
                "with object_lock=True) or drop object_lock_days"
            )
        outage = _outage(error, code)
        if outage is not None:
            kind, why = outage
            endpoint = getattr(getattr(self._client, "meta", None), "endpoint_url", None) or "AWS"
            component = f"s3 store {self._url} (endpoint {endpoint})"
            operation = f"{what} {key}" if key else what
            return kind(component, operation, why, runbook=RUNBOOK)
        return BackendError(f"s3 {what} {where}: {code or type(error).__name__}: {error}")

    def _is_client_error(self, error: Exception) -> bool:
        return bucket_setup.is_client_error(error)

    def _ensure_bucket(self, region: str | None, object_lock: bool, create_missing: bool = True) -> None:
        bucket_setup.ensure(
            self._client,
            self.bucket,
            self.prefix,
            region=region,
            object_lock=object_lock,
            fail=self._fail,
            create=create_missing,
        )
        if object_lock and not self.object_lock_enabled:
            raise InvalidInput(
                f"s3 bucket {self.bucket} exists without Object Lock, which a locked cold tier needs: "
                "enable it on the bucket (versioning + object lock configuration) or use a new bucket"
            )

    @property
    def object_lock_enabled(self) -> bool:
        """Whether the bucket has Object Lock enabled (asked once, then remembered)."""
        if self._lock_enabled is None:
            self._lock_enabled = bucket_setup.lock_enabled(self._client, self.bucket)
        return self._lock_enabled

    def _put_args(self, storage_class: str | None, retain_until: datetime | None) -> dict[str, Any]:
        args: dict[str, Any] = {}
        if storage_class:
            args["StorageClass"] = storage_class
        if retain_until is not None:
            until = retain_until if retain_until.tzinfo else retain_until.replace(tzinfo=UTC)
            args["ObjectLockMode"] = self.lock_mode
            args["ObjectLockRetainUntilDate"] = until.astimezone(UTC)
        return args

    def _put(self, oid: str, key: str, data: bytes, args: dict[str, Any]) -> str | None:
        """Write one object; returns S3's ETag of a one-part write (None for multipart)."""
        faults.point("mid-upload")
        try:
            if len(data) > self._multipart_threshold:
                multipart.upload(
                    self._client,
                    self.bucket,
                    oid,
                    data,
                    checksums.part_args(args, self._signed),
                    threshold=self._multipart_threshold,
                    workers=self._workers,
                )
                return None
            # bytes go as they are (one hash, one send); a view (a slice of a pack buffer) as a file
            # handing out views of it: botocore takes no memoryview, and must be able to rewind
            body: Any = data if isinstance(data, bytes | bytearray) else _ViewReader(data, views=True)
            check = checksums.body_args(data, self._signed)
            response = self._client.put_object(Bucket=self.bucket, Key=oid, Body=body, **args, **check)
            return str(response.get("ETag") or "").strip('"') or None
        except Exception as e:
            if not self._is_client_error(e):
                raise
            raise self._fail("put", key, e) from e

    def _head(self, key: str) -> dict[str, Any]:
        oid = self._oid(key)
        try:
            return dict(self._client.head_object(Bucket=self.bucket, Key=oid))
        except Exception as e:
            if not self._is_client_error(e):
                raise
            raise self._fail("head", key, e) from e

    # ------------------------------------------------------------------ the ObjectStore interface

    def put(
        self, key: str, data: bytes, *, storage_class: str | None = None, retain_until: datetime | None = None
    ) -> None:
        """Write (or atomically replace) one object (multipart above ``multipart_threshold``)."""
        self._put(self._oid(key), key, data, self._put_args(storage_class, retain_until))

    def put_many(
        self,
        items: Iterable[tuple[str, bytes]],
        *,
        storage_class: str | None = None,
        retain_until: datetime | None = None,
    ) -> int:
        """Write many objects on a thread pool; at most ``window`` / ``window_bytes`` in flight."""
        args = self._put_args(storage_class, retain_until)
        inflight: collections.deque[tuple[int, Future[str | None]]] = collections.deque()
        inflight_bytes = 0
        count = 0
        pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="drsvc-s3")

        def reap() -> None:
            nonlocal inflight_bytes
            size, future = inflight.popleft()
            inflight_bytes -= size
            future.result()

        try:
            for key, data in items:
                oid = self._oid(key)
                while inflight and (len(inflight) >= self._window or inflight_bytes + len(data) > self._window_bytes):
                    reap()
                inflight.append((len(data), pool.submit(self._put, oid, key, data, args)))
                inflight_bytes += len(data)
                count += 1
            while inflight:
                reap()
        finally:
            # On an error, let what was already sent finish (it is complete or absent, never half).
            pool.shutdown(wait=True, cancel_futures=True)
        return count

    def get(self, key: str, *, max_size: int | None = None) -> bytes:
        """Read one whole object; ``NotFound`` if it does not exist, ``ObjectTooLarge`` past ``max_size`` bytes.

        The bound is checked on the response's ``Content-Length`` before the body is read (one
        request, no HEAD), and the body is read no further than the bound in any case.
        """
        oid = self._oid(key)
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=oid)
            body = response["Body"]
            if max_size is None:
                return bytes(body.read())
            size = int(response.get("ContentLength", 0))
            try:
                if size > max_size:
                    raise too_large(self._url, key, size, max_size)
                data = bytes(body.read(max_size + 1))
                if len(data) > max_size:
                    raise too_large(self._url, key, None, max_size)
                return data
            finally:
                body.close()
        except Exception as e:
            if not self._is_client_error(e):
                raise
            raise self._fail("get", key, e) from e

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """Read ``length`` bytes at ``start`` with one ranged GET (fewer only at the end of the object)."""
        if length <= 0:
            self._head(key)
            return b""
        oid = self._oid(key)
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=oid, Range=f"bytes={start}-{start + length - 1}")
            return bytes(response["Body"].read())
        except Exception as e:
            if not self._is_client_error(e):
                raise
            if _code(e) in ("InvalidRange", "416"):
                return b""
            raise self._fail("get", key, e) from e

    def get_many(self, keys: Iterable[str], *, max_size: int | None = None) -> Iterator[tuple[str, bytes]]:
        """Read many objects on a thread pool with ``window`` read-ahead, in input order."""
        return ordered_map(
            lambda k: (k, self.get(k, max_size=max_size)), keys, workers=self._workers, window=self._window
        )

    def exists(self, key: str) -> bool:
        """Whether the object exists (one HEAD)."""
        try:
            self._head(key)
        except NotFound:
            return False
        return True

    def size(self, key: str) -> int:
        """Size of the object in bytes; raise ``NotFound`` if it does not exist."""
        return int(self._head(key)["ContentLength"])

    def list(self, prefix: str = "") -> Iterator[str]:
        """Yield every key starting with ``prefix`` (ListObjectsV2 pages of 1000)."""
        full = self.prefix + check_prefix(prefix)
        cut = len(self.prefix)
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full, PaginationConfig={"PageSize": 1000}):
                for obj in page.get("Contents", ()):
                    yield obj["Key"][cut:]
        except Exception as e:
            if not self._is_client_error(e):
                raise
            raise self._fail("list", prefix, e) from e

    def delete(self, key: str) -> None:
        """Remove one object; a missing object is not an error."""
        oid = self._oid(key)
        try:
            self._client.delete_object(Bucket=self.bucket, Key=oid)
        except Exception as e:
            if not self._is_client_error(e):
                raise
            if _code(e) in _NOT_FOUND:
                return
            raise self._fail("delete", key, e) from e

    def delete_many(self, keys: Iterable[str]) -> int:
        """Remove many objects with DeleteObjects batches of 1000 (a few batches in parallel)."""

        def batches() -> Iterator[list[str]]:
            batch: list[str] = []
            for key in keys:
                batch.append(self._oid(key))
                if len(batch) == DELETE_BATCH:
                    yield batch
                    batch = []
            if batch:
                yield batch

        def send(batch: list[str]) -> int:
            try:
                response = self._client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
                )
            except Exception as e:
                if not self._is_client_error(e):
                    raise
                raise self._fail("delete", batch[0][len(self.prefix) :], e) from e
            errors = [e for e in response.get("Errors", ()) if e.get("Code") not in _NOT_FOUND]
            if errors:
                first = errors[0]
                raise BackendError(
                    f"s3 delete in {self._url}: {len(errors)} of {len(batch)} keys failed, e.g. "
                    f"{first.get('Key')}: {first.get('Code')}: {first.get('Message')}"
                )
            return len(batch)

        workers = min(4, self._workers)
        return sum(ordered_map(send, batches(), workers=workers, window=workers))

    def abort_multipart_uploads(self, initiated_after: datetime | None = None) -> int:
        """Abort unfinished multipart uploads under this store's prefix (begun after ``initiated_after``).

        A process killed mid-upload leaves them open (stored, billed, invisible to listings);
        ``drsvc cleanup`` calls this for the intents such a process left. Returns how many.
        """
        try:
            return multipart.abort_uploads(self._client, self.bucket, self.prefix, initiated_after)
        except Exception as e:
            if not self._is_client_error(e):
                raise
            raise self._fail("abort multipart uploads", "", e) from e

    def close(self) -> None:
        """Release the client's connection pool."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    # ------------------------------------------------------------------ S3-only extras

    def retain_until(self, key: str) -> datetime | None:
        """The Object Lock retention of the object's current version (None when unlocked)."""
        until = self._head(key).get("ObjectLockRetainUntilDate")
        if until is None:
            return None
        return until if until.tzinfo else until.replace(tzinfo=UTC)

    def head(self, key: str) -> dict[str, Any]:
        """Size, ETag (quotes stripped), storage class and lock of one object (one HEAD)."""
        h = self._head(key)
        until = h.get("ObjectLockRetainUntilDate")
        return {
            "size": int(h["ContentLength"]),
            "etag": str(h.get("ETag") or "").strip('"'),
            "storage_class": str(h.get("StorageClass") or "STANDARD"),
            "retain_until": (until if until is None or until.tzinfo else until.replace(tzinfo=UTC)),
        }

    def get_tagged(self, key: str) -> tuple[bytes, str]:
        """One object and its ETag, from one GET (a copy compares it with what it read)."""
        oid = self._oid(key)
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=oid)
            return bytes(response["Body"].read()), str(response.get("ETag") or "").strip('"')
        except Exception as e:
            if not self._is_client_error(e):
                raise
            raise self._fail("get", key, e) from e

    def put_tagged(
        self, key: str, data: bytes, *, storage_class: str | None = None, retain_until: datetime | None = None
    ) -> str | None:
        """``put``, returning the ETag S3 computed of what it stored (None when written in parts)."""
        return self._put(self._oid(key), key, data, self._put_args(storage_class, retain_until))

    def same_service(self, other: S3Store) -> bool:
        """Whether ``other`` is on this endpoint under the same identity (server-side copy can work)."""
        return self.endpoint == other.endpoint and self.identity == other.identity

    def copy_from(
        self,
        source: S3Store,
        key: str,
        *,
        storage_class: str | None = None,
        retain_until: datetime | None = None,
    ) -> str:
        """Server-side copy of ``source``'s object ``key`` to the same key here; returns the new ETag.

        One request whatever the size up to 5 GiB (CopyObject): the bytes never leave the S3
        service. Larger objects are refused here (the caller streams them instead).
        """
        # The retention is set right after the copy (PutObjectRetention): a CopyObject carrying it
        # is refused by S3 implementations that want a body checksum with every locked write.
        args = self._put_args(storage_class, None)
        if storage_class is None:
            args["StorageClass"] = "STANDARD"  # CopyObject would otherwise keep the source's class
        try:
            response = self._client.copy_object(
                Bucket=self.bucket,
                Key=self._oid(key),
                CopySource={"Bucket": source.bucket, "Key": source._oid(key)},
                MetadataDirective="COPY",
                **args,
            )
        except Exception as e:
            if not self._is_client_error(e):
                raise
            raise self._fail("copy", key, e) from e
        if retain_until is not None:
            self.extend_retention([key], retain_until)
        return str(response.get("CopyObjectResult", {}).get("ETag") or "").strip('"')

    def storage_class(self, key: str) -> str:
        """The object's storage class (S3 omits it for STANDARD)."""
        return str(self._head(key).get("StorageClass") or "STANDARD")

    def extend_retention(self, keys: Iterable[str], until: datetime) -> int:
        """Raise the Object Lock retention of existing objects to ``until`` (parallel; never shortens)."""
        args = self._put_args(None, until)

        def one(key: str) -> None:
            try:
                multipart.retain(self._client, self.bucket, self._oid(key), args)
            except Exception as e:
                if not self._is_client_error(e):
                    raise
                raise self._fail("extend retention", key, e) from e

        return sum(1 for _ in ordered_map(one, keys, workers=self._workers, window=self._window))
