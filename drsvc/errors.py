"""The one exception hierarchy of drsvc.

Every error a user can meet is a ``DrsvcError`` subclass carrying the process exit code of the
CLI contract (docs/architecture.md). Adapters translate their library's exceptions into these;
the CLI entry point catches ``DrsvcError`` once, prints its one-line message and exits with its
code. ``traceback`` says whether the error was unexpected (bugs, backend failures: jobs retry
those, and ``DRSVC_DEBUG=1`` prints their stack trace) or is the user's to fix (bad input, things
not found).
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


class Interrupted(KeyboardInterrupt):
    """The command was asked to stop by signal ``signum`` (``drsvc.cli.signals``): every job
    unwinds it as Ctrl-C; the job did not finish, so the command exits 1 (failed)."""

    def __init__(self, signum: int) -> None:
        import signal

        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class DrsvcError(Exception):
    """Base of every error drsvc reports to its user."""

    exit_code = EXIT_FAILED
    traceback = False
    retryable = False  # whether the same call may succeed when tried again later

    def __init__(self, message: str, *, details: list[str] | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []
        self.hint = hint  # the next step, when there is one to name (shown after the message)

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


class ObjectTooLarge(IntegrityError):
    """A stored object is larger than anything drsvc writes at its place: refused before it is read."""

    def __init__(self, message: str, *, key: str, size: int | None, limit: int) -> None:
        super().__init__(message)
        self.key, self.size, self.limit = key, size, limit


class ObjectiveMissed(DrsvcError):
    """The work was done but an objective (RTO, RPO) was missed."""

    exit_code = EXIT_OBJECTIVE_MISSED


class PartialFailure(DrsvcError):
    """Some desktops succeeded and others failed."""

    exit_code = EXIT_PARTIAL


class BackendError(DrsvcError):
    """A backend (Ceph, S3, container runtime) failed in a way drsvc did not expect.

    ``retryable``: whether trying the same call again later may succeed (jobs retry those).
    """

    traceback = True
    retryable = True


class BackendOutage(BackendError):
    """An expected backend failure: one line naming the component, the operation and the runbook.

    Subclasses say what kind (unreachable, forbidden, timed out, throttled). The message reads
    ``COMPONENT: OPERATION: WHY (runbook: drsvc runbook show NAME)``; no traceback unless --debug.
    """

    traceback = False
    kind = "failed"

    def __init__(self, component: str, operation: str, why: str, *, runbook: str | None = None) -> None:
        self.component = component
        self.operation = operation
        self.why = why
        self.runbook = runbook
        tail = f" (runbook: drsvc runbook show {runbook})" if runbook else ""
        super().__init__(f"{component}: {operation}: {self.kind}: {why}{tail}")


class BackendUnavailable(BackendOutage):
    """The backend cannot be reached or answers with a server error (connection refused, 5xx)."""

    kind = "unreachable"


class BackendForbidden(BackendOutage):
    """The backend refuses our credentials (S3 403, Ceph EACCES): retrying will not help."""

    kind = "forbidden"
    retryable = False


class BackendTimeout(BackendOutage):
    """A call did not finish within its configured timeout (a stalled OSD, a hung endpoint)."""

    kind = "timed out"


class BackendThrottled(BackendOutage):
    """The backend kept asking us to slow down (S3 SlowDown / 503) after every retry."""

    kind = "throttled"


class Busy(DrsvcError):
    """Another drsvc process holds the lease for this work."""


class MissingDependency(DrsvcError):
    """An optional client library is not importable; the message says how to install it."""
