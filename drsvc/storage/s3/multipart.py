"""Objects written in parts: s3transfer's managed upload, retention after it, and aborting leftovers.

An object above the store's ``multipart_threshold`` goes through s3transfer (what boto3's
``upload_fileobj`` runs: parallel parts on up to ``workers`` threads), imported only here, only for
such an object. A locked object gets its retention in a request of its own once the upload is
complete: radosgw (Ceph 16 in the lab) drops the lock headers of ``CreateMultipartUpload`` without a
word. A process killed mid-upload leaves the upload open (stored, billed, invisible to listings):
``abort_uploads`` is what ``drsvc cleanup`` calls for the intents such a process left.

Errors are botocore's here; the store translates them (``S3Store._fail``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from drsvc.storage.s3.reader import _ViewReader

MiB = 1024 * 1024
LOCK_UNTIL = "ObjectLockRetainUntilDate"


def upload(
    client: Any, bucket: str, oid: str, data: bytes, args: dict[str, Any], *, threshold: int, workers: int
) -> None:
    """Write ``data`` to ``oid`` in parts, then give it the retention ``args`` asks for (if any)."""
    from s3transfer.manager import TransferConfig, TransferManager

    config = TransferConfig(
        multipart_threshold=threshold,
        multipart_chunksize=max(8 * MiB, threshold // 2),
        max_request_concurrency=workers,
    )
    with TransferManager(client, config) as manager:
        body: Any = _ViewReader(data)
        manager.upload(body, bucket, oid, extra_args=args).result()
    if LOCK_UNTIL in args:
        retain(client, bucket, oid, args)


def retain(client: Any, bucket: str, oid: str, args: dict[str, Any]) -> None:
    """Set the Object Lock retention ``args`` names (``ObjectLockMode``, ``ObjectLockRetainUntilDate``)."""
    retention = {"Mode": args["ObjectLockMode"], "RetainUntilDate": args[LOCK_UNTIL]}
    client.put_object_retention(Bucket=bucket, Key=oid, Retention=retention)


def abort_uploads(client: Any, bucket: str, prefix: str, initiated_after: datetime | None = None) -> int:
    """Abort the unfinished uploads under ``prefix`` (begun after ``initiated_after``); return how many."""
    aborted = 0
    for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix):
        for found in page.get("Uploads", []):
            if initiated_after is not None and found["Initiated"] < initiated_after:
                continue
            client.abort_multipart_upload(Bucket=bucket, Key=found["Key"], UploadId=found["UploadId"])
            aborted += 1
    return aborted
