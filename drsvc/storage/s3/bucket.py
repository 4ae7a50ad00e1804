"""Bucket setup: a missing bucket is created (with Object Lock when the store is locked) and gets
drsvc's housekeeping lifecycle rule; whether a bucket has Object Lock is asked of S3.

Errors are botocore's until ``fail`` (the store's translation) turns them into drsvc's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drsvc.errors import NotFound
from drsvc.storage.s3.errors import _code

Fail = Callable[[str, str, Exception], Exception]  # (what, key, botocore error) -> drsvc's error


def is_client_error(error: Exception) -> bool:
    """Whether ``error`` is botocore's (to translate) rather than a bug (to raise as it is)."""
    from botocore.exceptions import BotoCoreError, ClientError

    return isinstance(error, ClientError | BotoCoreError)


def ensure(
    client: Any, bucket: str, prefix: str, *, region: str | None, object_lock: bool, fail: Fail, create: bool = True
) -> None:
    """Create ``bucket`` when it is missing (locked: with Object Lock), with the housekeeping rule;
    ``create=False``: a missing bucket is ``NotFound`` (a store whose copies the catalog records)."""
    try:
        client.head_bucket(Bucket=bucket)
        return
    except Exception as e:
        if not is_client_error(e):
            raise
        if _code(e) not in ("404", "NoSuchBucket", "NotFound"):
            raise fail("head bucket", "", e) from e
    if not create:
        raise NotFound(f"s3 bucket {bucket} does not exist")
    args: dict[str, Any] = {"Bucket": bucket}
    if object_lock:
        args["ObjectLockEnabledForBucket"] = True
    if region and region != "us-east-1":
        args["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        client.create_bucket(**args)
    except Exception as e:
        if not is_client_error(e):
            raise
        if _code(e) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise fail("create bucket", "", e) from e
        return  # someone else made it: its rules are theirs
    _install_lifecycle(client, bucket, prefix, object_lock, fail)


def _install_lifecycle(client: Any, bucket: str, prefix: str, versioned: bool, fail: Fail) -> None:
    """Housekeeping on buckets drsvc created: stale multipart uploads, and old versions when locked."""
    rule: dict[str, Any] = {
        "ID": "drsvc-housekeeping",
        "Status": "Enabled",
        "Filter": {"Prefix": prefix},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
    }
    if versioned:
        # A delete leaves a delete marker; the deleted data goes once its lock allows it.
        rule["NoncurrentVersionExpiration"] = {"NoncurrentDays": 1}
        rule["Expiration"] = {"ExpiredObjectDeleteMarker": True}
    try:
        client.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [rule]})
    except Exception as e:
        if not is_client_error(e):
            raise
        raise fail("put bucket lifecycle", "", e) from e


def lock_enabled(client: Any, bucket: str) -> bool:
    """Whether ``bucket`` has Object Lock enabled (a bucket S3 will not tell about: no)."""
    try:
        cfg = client.get_object_lock_configuration(Bucket=bucket)
    except Exception as e:
        if not is_client_error(e):
            raise
        return False
    return bool(cfg.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled")
