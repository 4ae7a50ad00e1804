"""Body checksums: every S3 write carries one the server verifies, computed by drsvc once.

Over plain HTTP the request is signed with the payload's SHA-256 (``signed``), which every S3
implementation verifies (radosgw before Ceph 19 ignores ``x-amz-checksum-*`` headers altogether);
botocore hashes the body for the signature a view at a time, with no copy (``_ViewReader``). Over
HTTPS a CRC32 header instead (what AWS S3, MinIO and Ceph >= 19 verify; TLS protects the wire),
given here in one C call over the buffer so that botocore neither computes it (reading the body
once more) nor sends the body ``aws-chunked`` with a trailer. Either way it is also the body
checksum S3 Object Lock asks of every locked write, and a retry resends the same bytes with the
same check. A body the server finds changed is refused (``DIGEST_MISMATCH``): an ``IntegrityError``.
"""

from __future__ import annotations

import base64
import zlib
from typing import Any

# What S3 implementations answer to a body that does not match its checksum: Content-MD5 (BadDigest,
# InvalidDigest), a signed payload's SHA-256 (XAmzContentSHA256Mismatch), an x-amz-checksum-* header.
DIGEST_MISMATCH = ("BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch", "InvalidChecksum")

# botocore's per-part checksum of a multipart upload over HTTPS (it computes each part's CRC32)
PART_CHECKSUM = {"ChecksumAlgorithm": "CRC32"}


def signs_payload(endpoint: str | None) -> bool:
    """Whether writes to ``endpoint`` are checked by the signed payload's SHA-256 (anything but HTTPS;
    None is AWS itself, over HTTPS)."""
    return not (endpoint or "https://").lower().startswith("https://")


def client_options(signed: bool) -> dict[str, Any]:
    """botocore ``Config`` options: the checksum is drsvc's (``body_args``), never botocore's re-read."""
    return {"request_checksum_calculation": "when_required", "s3": {"payload_signing_enabled": signed}}


def body_args(data: bytes, signed: bool) -> dict[str, Any]:
    """The ``PutObject`` arguments that make the server verify a one-part write of ``data``.

    Signed: none (the signature covers the payload's SHA-256). Unsigned: the CRC32 header, and the
    algorithm's name too (AWS wants ``x-amz-sdk-checksum-algorithm`` or Content-MD5 on a locked write).
    """
    if signed:
        return {}
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    return {**PART_CHECKSUM, "ChecksumCRC32": crc}


def part_args(args: dict[str, Any], signed: bool) -> dict[str, Any]:
    """``args`` for a multipart upload: over HTTPS each part carries botocore's CRC32."""
    return args if signed else {**args, **PART_CHECKSUM}
