"""The one exception hierarchy of drsvc.

Every error a user can meet is a ``DrsvcError`` subclass carrying the process exit code of the
CLI contract (docs/architecture.md). Adapters translate their library's exceptions into these;
the CLI entry point catches ``DrsvcError`` once and exits with its code. ``traceback`` says whether
a stack trace would help the reader (bugs, unexpected backend failures) or only add noise
(bad input, things not found).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_NOT_FOUND = 3
EXIT_INTEGRITY = 4
EXIT_OBJECTIVE_MISSED = 5
EXIT_PARTIAL = 6

EXIT_CODES = (
    (EXIT_OK, "ok"),
    (EXIT_FAILED, "failed"),
    (EXIT_INVALID, "invalid input (arguments, config, policy)"),
    (EXIT_NOT_FOUND, "not found (desktop, recovery point)"),
    (EXIT_INTEGRITY, "integrity error (verification failed)"),
    (EXIT_OBJECTIVE_MISSED, "done, but an objective (RTO/RPO) was missed"),
    (EXIT_PARTIAL, "partial (some desktops failed, others done)"),
)


class DrsvcError(Exception):
    """Base of every error drsvc reports to its user."""

    exit_code = EXIT_FAILED
    traceback = False

    def __init__(self, message: str, *, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []

    def __str__(self) -> str:
        return self.message


class InvalidInput(DrsvcError):
    """Bad arguments, config or policy: the user must fix the input."""

    exit_code = EXIT_INVALID


class ConfigError(InvalidInput):
    """The configuration file is missing, unreadable or invalid."""


class PolicyError(InvalidInput):
    """One or more policy files are invalid; ``details`` lists every problem as 'file: field: why'."""


class NotFound(DrsvcError):
    """A desktop, recovery point or object the user named does not exist."""

    exit_code = EXIT_NOT_FOUND


class IntegrityError(DrsvcError):
    """Stored data failed verification (bad MAC, wrong hash, missing chunk)."""

    exit_code = EXIT_INTEGRITY


class CorruptChunk(IntegrityError):
    """One chunk failed verification; ``chunk_id`` says which (callers map it to the points using it)."""

    def __init__(self, chunk_id: str, message: str) -> None:
        super().__init__(message)
        self.chunk_id = chunk_id


class ObjectiveMissed(DrsvcError):
    """The work was done but an objective (RTO, RPO) was missed."""

    exit_code = EXIT_OBJECTIVE_MISSED


class PartialFailure(DrsvcError):
    """Some desktops succeeded and others failed."""

    exit_code = EXIT_PARTIAL


class BackendError(DrsvcError):
    """A backend (Ceph, S3, container runtime) failed in a way drsvc did not expect."""

    traceback = True


class Busy(DrsvcError):
    """Another drsvc process holds the lease for this work."""


class MissingDependency(DrsvcError):
    """An optional client library is not importable; the message says how to install it."""
