"""The body checksum of every S3 write, as it goes on the wire (requests recorded at botocore's
``before-send``, answered there: no server, no moto).

Over plain HTTP (radosgw on the cluster network) the payload is signed with its SHA-256, which every
S3 implementation verifies (radosgw before Ceph 19 ignores x-amz-checksum-* headers); over HTTPS it
carries a CRC32 header drsvc computed (what AWS S3 verifies and Object Lock asks for). Either way
the body goes plain (never ``aws-chunked``), a retry resends the same bytes with the same checksum,
and a refused digest is an ``IntegrityError``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from botocore.awsrequest import AWSResponse

from drsvc.errors import IntegrityError
from drsvc.storage.s3 import S3Store
from drsvc.storage.s3.reader import _ViewReader

MiB = 1 << 20
HTTP = "http://rgw.lab.test:7480"
HTTPS = "https://s3.example.test"


class _Raw(io.BytesIO):
    def stream(self, **_: Any) -> Iterator[bytes]:
        while chunk := self.read(65536):
            yield chunk


def _header(headers: Any, name: str) -> str | None:
    for k, v in headers.items():
        if k.lower() == name.lower():
            return v.decode() if isinstance(v, bytes) else str(v)
    return None


class Wire:
    """Records every request a store's client sends and answers it (``answers``, then 200)."""

    def __init__(self, store: S3Store) -> None:
        self.requests: list[dict[str, Any]] = []
        self.answers: list[tuple[int, bytes]] = []
        store._client.meta.events.register("before-send.s3", self)

    def __call__(self, request: Any, **_: Any) -> AWSResponse:
        body = request.body
        if hasattr(body, "read"):
            data = b"".join(bytes(b) for b in iter(lambda: body.read(MiB), b""))
            body.seek(0)
        else:
            data = bytes(body or b"")
        query = parse_qs(urlsplit(request.url).query, keep_blank_values=True)
        self.requests.append({"method": request.method, "query": query, "headers": request.headers, "body": data})
        status, payload = self.answers.pop(0) if self.answers else (200, self._ok(request.method, query))
        return AWSResponse(request.url, status, {"ETag": '"e"'}, _Raw(payload))

    @staticmethod
    def _ok(method: str, query: dict[str, list[str]]) -> bytes:
        if method == "POST" and "uploads" in query:
            return b"<InitiateMultipartUploadResult><UploadId>u1</UploadId></InitiateMultipartUploadResult>"
        if method == "POST" and "uploadId" in query:
            return b"<CompleteMultipartUploadResult><ETag>e-2</ETag></CompleteMultipartUploadResult>"
        return b""

    def header(self, i: int, name: str) -> str | None:
        return _header(self.requests[i]["headers"], name)


def error(code: str, status: int = 400) -> tuple[int, bytes]:
    return status, f"<Error><Code>{code}</Code><Message>m</Message></Error>".encode()


@pytest.fixture(autouse=True)
def _credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("S3_ENDPOINT_URL", raising=False)


def open_store(endpoint: str, **kw: Any) -> tuple[S3Store, Wire]:
    store = S3Store("b", "pre", endpoint_url=endpoint, region="us-east-1", create=False, max_attempts=3, **kw)
    return store, Wire(store)


def pack(size: int = 3 * MiB + 5) -> memoryview:
    """A pack as the packer hands it over: a view of the front of a bigger, reused buffer."""
    buffer = bytearray(os.urandom(size + 1000))
    return memoryview(buffer)[:size]


def crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def assert_plain_body(wire: Wire, i: int, data: bytes) -> None:
    assert wire.requests[i]["body"] == data
    assert "aws-chunked" not in (wire.header(i, "Content-Encoding") or "")
    assert wire.header(i, "X-Amz-Trailer") is None
    assert wire.header(i, "Content-Length") == str(len(data))


def test_plain_http_signs_the_payload_with_its_sha256() -> None:
    store, wire = open_store(HTTP)
    view = pack()
    store.put("packs/a", view)  # type: ignore[arg-type]
    data = bytes(view)
    assert wire.header(0, "X-Amz-Content-SHA256") == hashlib.sha256(data).hexdigest()
    assert_plain_body(wire, 0, data)
    # the server checks the signed digest: botocore computes no second checksum of the body
    assert not [k for k in wire.requests[0]["headers"] if k.lower().startswith("x-amz-checksum-")]


def test_https_sends_the_crc32_drsvc_computed_unsigned_and_plain() -> None:
    store, wire = open_store(HTTPS)
    view = pack()
    store.put("packs/a", view)  # type: ignore[arg-type]
    data = bytes(view)
    assert wire.header(0, "x-amz-checksum-crc32") == crc32_b64(data)
    assert wire.header(0, "x-amz-sdk-checksum-algorithm") == "CRC32"  # what a locked write needs on AWS
    assert wire.header(0, "X-Amz-Content-SHA256") == "UNSIGNED-PAYLOAD"
    assert_plain_body(wire, 0, data)


@pytest.mark.parametrize("endpoint", [HTTP, HTTPS])
def test_locked_write_carries_the_checksum_and_the_retention(endpoint: str) -> None:
    store, wire = open_store(endpoint)
    until = datetime.now(UTC) + timedelta(days=1)
    store.put("packs/a", b"sealed pack", retain_until=until)
    assert wire.header(0, "x-amz-object-lock-mode") == "COMPLIANCE"
    if endpoint == HTTP:
        assert wire.header(0, "X-Amz-Content-SHA256") == hashlib.sha256(b"sealed pack").hexdigest()
    else:
        assert wire.header(0, "x-amz-checksum-crc32") == crc32_b64(b"sealed pack")


@pytest.mark.parametrize("endpoint", [HTTP, HTTPS])
def test_a_retry_resends_the_same_bytes_with_the_same_checksum(endpoint: str) -> None:
    store, wire = open_store(endpoint)
    wire.answers = [error("InternalError", 500)]
    view = pack(MiB + 3)
    store.put("packs/a", view)  # type: ignore[arg-type]
    assert len(wire.requests) == 2
    first, second = wire.requests
    assert first["body"] == second["body"] == bytes(view)
    for name in ("X-Amz-Content-SHA256", "x-amz-checksum-crc32"):
        assert wire.header(0, name) == wire.header(1, name)


@pytest.mark.parametrize("code", ["XAmzContentSHA256Mismatch", "BadDigest", "InvalidDigest"])
def test_a_refused_digest_is_an_integrity_error(code: str) -> None:
    store, wire = open_store(HTTP)
    wire.answers = [error(code)]
    with pytest.raises(IntegrityError) as e:
        store.put("packs/a", pack(4096))  # type: ignore[arg-type]
    assert code in str(e.value) and "packs/a" in str(e.value) and "\n" not in str(e.value)
    assert len(wire.requests) == 1  # not retried: the same bytes would fail the same way


@pytest.mark.parametrize("endpoint", [HTTP, HTTPS])
def test_multipart_parts_carry_a_checksum_the_server_verifies(endpoint: str) -> None:
    store, wire = open_store(endpoint, multipart_threshold=8 * MiB, workers=1)
    view = pack(8 * MiB + 100)
    store.put("packs/big", view)  # type: ignore[arg-type]
    parts = [i for i, r in enumerate(wire.requests) if r["method"] == "PUT" and "partNumber" in r["query"]]
    assert len(parts) == 2
    assert b"".join(wire.requests[i]["body"] for i in parts) != b""
    for i in parts:
        if endpoint == HTTP:
            sent = wire.requests[i]["body"]
            assert wire.header(i, "X-Amz-Content-SHA256") == hashlib.sha256(sent).hexdigest()
        else:  # botocore's CRC32 of each part (in a trailer over TLS)
            sent_in = (wire.header(i, "X-Amz-Trailer") or "").lower(), wire.header(i, "x-amz-checksum-crc32")
            assert sent_in[0] == "x-amz-checksum-crc32" or sent_in[1]


def test_view_reader_hands_out_views_for_sized_reads_and_bytes_for_whole_ones() -> None:
    buffer = bytearray(b"0123456789")
    reader = _ViewReader(memoryview(buffer)[:8], views=True)
    piece = reader.read(4)
    assert isinstance(piece, memoryview) and bytes(piece) == b"0123"
    buffer[0:1] = b"X"
    assert bytes(piece) == b"X123"  # the buffer itself, not a copy
    assert reader.read() == b"4567" and isinstance(reader.read(), bytes)
    reader.seek(0)
    assert reader.read(100) == b"X1234567"
    assert isinstance(_ViewReader(b"abc").read(2), bytes)  # the default copies, as io does


def test_a_locked_multipart_write_gets_its_retention_in_a_request_of_its_own() -> None:
    # radosgw drops the lock headers of CreateMultipartUpload: the finished object is locked after
    store, wire = open_store(HTTP, multipart_threshold=8 * MiB, workers=1)
    until = datetime.now(UTC) + timedelta(days=1)
    store.put("packs/big", pack(8 * MiB + 100), retain_until=until)  # type: ignore[arg-type]
    last = wire.requests[-1]
    assert last["method"] == "PUT" and "retention" in last["query"]
    assert b"<Mode>COMPLIANCE</Mode>" in last["body"]
    assert any(r["method"] == "POST" and "uploadId" in r["query"] for r in wire.requests[:-1])  # after completing


def test_opening_an_s3_store_imports_neither_boto3_nor_s3transfer() -> None:
    # ~0.1 s of every `drsvc tier` / cold restore: the store needs botocore's client alone
    import json
    import subprocess
    import sys

    probe = (
        "import json, sys\n"
        "from drsvc.storage.s3 import S3Store\n"
        "S3Store('b', endpoint_url='http://127.0.0.1:9', region='us-east-1', create=False).close()\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "s"}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env)
    modules = set(json.loads(done.stdout))
    assert "botocore.client" in modules  # the probe really made a client
    assert not {m for m in modules if m.split(".")[0] in ("boto3", "s3transfer")}
