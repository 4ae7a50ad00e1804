"""How S3 failures are told apart: the expected failures of an endpoint (down, stalled, refusing
our credentials, throttling) become the ``BackendOutage`` kinds the jobs and runbooks know; a
missing key is recognised by its error code.
"""

from __future__ import annotations

from drsvc.errors import (
    BackendForbidden,
    BackendOutage,
    BackendThrottled,
    BackendTimeout,
    BackendUnavailable,
)

_NOT_FOUND = ("NoSuchKey", "404", "NotFound", "NoSuchVersion")

RUNBOOK = "s3-unavailable"
_FORBIDDEN = ("403", "AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidToken", "ExpiredToken")
_THROTTLED = ("SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests", "429")
_UNAVAILABLE = ("500", "502", "503", "504", "InternalError", "ServiceUnavailable", "BadGateway")


def _outage(error: Exception, code: str) -> tuple[type[BackendOutage], str] | None:
    """The expected failures of an S3 endpoint (down, stalled, refusing us, throttling), or None."""
    from botocore import exceptions as bx

    if isinstance(error, bx.NoCredentialsError | bx.PartialCredentialsError):
        return BackendForbidden, "no S3 credentials (set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or a profile)"
    if isinstance(error, bx.ReadTimeoutError | bx.ConnectTimeoutError):
        return BackendTimeout, f"no answer within the configured timeout ({error})"
    if isinstance(error, bx.EndpointConnectionError | bx.ConnectionClosedError | bx.ConnectionError):
        return BackendUnavailable, str(error)
    if isinstance(error, bx.ResponseStreamingError):
        return BackendUnavailable, f"the connection broke while reading ({error})"
    if code in _FORBIDDEN:
        return BackendForbidden, f"{code}: the endpoint refuses these credentials (check the S3 access key and secret)"
    if code in _THROTTLED:
        return BackendThrottled, f"{code}: still asked to slow down after every retry"
    if code in _UNAVAILABLE:
        return BackendUnavailable, f"{code}: server error after every retry"
    return None


def _code(error: Exception) -> str:
    response = getattr(error, "response", None) or {}
    return str(response.get("Error", {}).get("Code", "")) or str(
        response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
    )
