"""``s3://BUCKET[/PREFIX]``: objects in an S3 bucket (AWS S3, Ceph radosgw, MinIO …), the cold tier.

Endpoint, region and credentials come from the options (``endpoint_url``, ``region``, ``profile``)
or from the standard AWS environment and profile chain; ``$S3_ENDPOINT_URL`` is the endpoint
fallback (radosgw, MinIO). Credentials are never part of the URL or the config.

- Parallel transfers with bounded memory: ``put_many`` keeps at most ``window`` objects and
  ``window_bytes`` in flight on ``workers`` threads; ``get_many`` reads ahead ``window`` objects;
  ``delete_many`` sends ``DeleteObjects`` batches of 1000 keys; ``get_range`` is one ranged GET
  (how the chunk store reads many chunks of a pack per request).
- Objects above ``multipart_threshold`` go through s3transfer (boto3's managed transfer:
  multipart, parallel parts); chunks (≤ 1 MiB) are single ``PutObject`` calls. The client is
  botocore's own (boto3 is never imported; s3transfer only for a multipart upload).
- Retries: botocore's ``standard`` mode (exponential backoff with jitter on throttling, 5xx and
  connection errors), ``max_attempts`` 10. Not ``adaptive``: its client-side token bucket is
  documented as experimental and throttles every thread of the client together.
- ``storage_class`` is sent per object. ``retain_until`` becomes S3 Object Lock retention in
  ``lock_mode`` (COMPLIANCE by default: not even the account root can shorten or remove it, which
  is what protects backups from a compromised admin credential; GOVERNANCE can be bypassed by
  anyone holding ``s3:BypassGovernanceRetention``). The bucket must have Object Lock enabled:
  with ``object_lock=True`` a missing bucket is created that way.
- Deletes remove the current version. On a versioned (object-lock) bucket that leaves a delete
  marker and the data stays until the lifecycle rule drsvc installs on buckets it creates expires
  noncurrent versions (which S3 refuses while their retention lasts). A locked version itself can
  never be deleted before its retention ends, by drsvc or anyone.
- Every write carries a body checksum the server verifies, computed by drsvc in one C call over
  the buffer (botocore never re-reads a body for it, never sends it ``aws-chunked``): over plain
  HTTP the signed payload's SHA-256 (every S3 implementation checks it; radosgw before Ceph 19
  ignores ``x-amz-checksum-*`` headers), over HTTPS a CRC32 header (what AWS S3 checks and Object
  Lock asks for; TLS guards the wire). A refused digest is an ``IntegrityError``, nothing stored.
  A pack buffer is sent as views of itself, never copied. Multipart parts carry botocore's checksum
  the same way, and a locked multipart object gets its retention in a request of its own (radosgw
  drops the lock headers of ``CreateMultipartUpload``).
- Only calls every S3 implementation has (no radosgw-only APIs).

The pieces: ``store`` (``S3Store``, ``from_url``: the facade), ``checksums`` (the body checksum of
every write), ``multipart`` (writes in parts, retention after them, aborting leftovers), ``bucket``
(bucket setup), ``errors`` (telling failures apart), ``reader`` (the upload body); the names below
are re-exported here.
"""

from __future__ import annotations

from drsvc.storage.s3.errors import RUNBOOK
from drsvc.storage.s3.store import ARCHIVE_CLASSES, DELETE_BATCH, LOCK_MODES, MiB, S3Store, from_url

__all__ = ["ARCHIVE_CLASSES", "DELETE_BATCH", "LOCK_MODES", "RUNBOOK", "MiB", "S3Store", "from_url"]
