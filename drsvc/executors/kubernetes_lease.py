"""The work lease as a ``coordination.k8s.io/v1`` Lease, for deployments that share no catalog.

On Kubernetes the scheduler (a Deployment running ``drsvc run``) and its node agents run on
different hosts; the catalog lives with the scheduler alone. The lease that keeps two schedulers
(or a scheduler and an operator's ``drsvc prune``) from mutating stores at once is therefore a
Lease object in the scheduler's namespace, named ``drsvc-<name>`` (``drsvc-work``):

- **acquire**: read it; free when it does not exist, has no holder (released), has expired
  (``renewTime + leaseDurationSeconds`` in the past), is held by this same identity, or by a
  process on this host that is gone. Taking it writes ``holderIdentity``, ``acquireTime``,
  ``renewTime`` and ``leaseTransitions + 1`` with the ``resourceVersion`` just read, so of two
  contenders exactly one wins (the other gets 409 Conflict: ``Busy``).
- **the fencing token** is ``leaseTransitions`` after our write: every acquisition raises it,
  whoever takes it, so work done under an older token is recognisably stale.
- **renew** every third of the lifetime (``renewTime``), only while holder and token are ours;
  **release** clears the holder and shortens the duration (as client-go's leader election does).
- **joined** (``KubernetesLease.join``): a node agent works under the scheduler's lease by its
  token; it never writes the Lease, and ``check()`` (before each manifest is written) reads it.

Times are ``MicroTime`` (RFC 3339 with exactly six fractional digits). The client validates the
body into its model and writes datetimes with ``isoformat()``, which drops the fraction when the
microseconds are zero, and the API server then rejects the Lease ("cannot parse"): so the times
drsvc writes never have zero microseconds (``microtime``).
"""

from __future__ import annotations

import datetime as dt
import functools
import os
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from drsvc.errors import BackendError, Busy, ConfigError
from drsvc.lease import WORK_LEASE, Lease, LeaseLost, holder_dead
from drsvc.optional import require

GROUP = "coordination.k8s.io"
SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

# Every API call this module makes (group, resource, verb); the RBAC in deploy/kubernetes grants
# exactly these: the scheduler all three, node agents "get" (tests/unit/test_deploy_manifests.py).
API_CALLS: dict[str, list[tuple[str, str, str]]] = {
    "hold": [(GROUP, "leases", "get"), (GROUP, "leases", "create"), (GROUP, "leases", "update")],
    "join": [(GROUP, "leases", "get")],
}


def microtime(when: dt.datetime) -> dt.datetime:
    """``when`` in UTC, moved by one microsecond when its fraction is zero (see the module docstring)."""
    when = when.astimezone(dt.UTC)
    return when if when.microsecond else when.replace(microsecond=1)


def lease_object_name(name: str) -> str:
    return f"drsvc-{name}"


def client_configuration() -> Any:
    """The API client's configuration: in-cluster in a pod, else ``$KUBECONFIG`` (read now) or ~/.kube/config.

    The client reads ``$KUBECONFIG`` once, when it is imported; reading it at each call keeps a
    process that changes it (a test, a wrapper) talking to the cluster it names.
    """
    kclient = require("kubernetes.client", "kubernetes", "the Kubernetes executor")
    from kubernetes import config as kconfig

    configuration = kclient.Configuration()
    try:
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            kconfig.load_incluster_config(client_configuration=configuration)
        else:
            kconfig.load_kube_config(
                config_file=os.environ.get("KUBECONFIG") or None, client_configuration=configuration
            )
    except (kconfig.ConfigException, OSError) as e:
        raise ConfigError(f"no usable Kubernetes client configuration: {e}") from e
    return configuration


def namespace_from_environment() -> str:
    """``$DRSVC_NAMESPACE``, else the pod's own namespace, else ``drsvc``."""
    namespace = os.environ.get("DRSVC_NAMESPACE")
    if not namespace and Path(SA_NAMESPACE_FILE).is_file():
        namespace = Path(SA_NAMESPACE_FILE).read_text().strip()
    return namespace or "drsvc"


class KubernetesLease(Lease):
    """``Lease`` kept in a Kubernetes Lease object (see the module docstring)."""

    def __init__(
        self,
        *,
        namespace: str,
        name: str = WORK_LEASE,
        ttl: float = 900,
        configuration: Any = None,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        kclient = require("kubernetes.client", "kubernetes", "the Kubernetes work lease")
        self._setup(name, ttl)
        self.namespace = namespace
        self.object_name = lease_object_name(name)
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._api = kclient.ApiClient(configuration or client_configuration())
        self._coord = kclient.CoordinationV1Api(self._api)

    @classmethod
    def join(cls, token: int, *, namespace: str, name: str = WORK_LEASE, configuration: Any = None) -> KubernetesLease:
        """The scheduler's lease as a node agent sees it: fenced by ``token``, never written."""
        lease = cls(namespace=namespace, name=name, configuration=configuration)
        lease.token = token
        lease.joined = True
        return lease

    # ---- API plumbing
    def _call(self, what: str, call: Callable[[], Any], *, expect: tuple[int, ...] = ()) -> Any:
        """Run one API call; statuses in ``expect`` come back as the int, others as ``BackendError``."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return call()
        except ApiException as e:
            if e.status in expect:
                return int(e.status)
            message = str(e.body or e.reason)
            if e.status == 403:
                message = f"forbidden: grant it to this service account (deploy/kubernetes/rbac.yaml): {message}"
            raise BackendError(
                f"{what} Lease {self.namespace}/{self.object_name}: {message} (HTTP {e.status})"
            ) from None
        except (HTTPError, OSError) as e:
            raise BackendError(f"{what} Lease {self.namespace}/{self.object_name}: API server unreachable: {e}") from e

    def _read(self) -> Any:
        """The Lease object, or None when it does not exist."""
        got = self._call(
            "read",
            functools.partial(self._coord.read_namespaced_lease, self.object_name, self.namespace),
            expect=(404,),
        )
        return None if got == 404 else got

    def _body(self, spec: dict[str, Any], resource_version: str | None = None) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": self.object_name, "namespace": self.namespace}
        if resource_version is not None:
            metadata["resourceVersion"] = resource_version
        metadata["labels"] = {"app.kubernetes.io/name": "drsvc"}
        return {"apiVersion": f"{GROUP}/v1", "kind": "Lease", "metadata": metadata, "spec": spec}

    def _replace(self, obj: Any, spec: dict[str, Any]) -> bool:
        """Write ``spec`` over ``obj`` if nobody changed it since it was read (False on 409 Conflict)."""
        body = self._body(spec, obj.metadata.resource_version)
        got = self._call(
            "update",
            functools.partial(self._coord.replace_namespaced_lease, self.object_name, self.namespace, body),
            expect=(409,),
        )
        return got != 409

    def _expired(self, spec: Any) -> bool:
        renewed = spec.renew_time or spec.acquire_time
        if renewed is None or not spec.lease_duration_seconds:
            return True
        return self._clock() >= renewed + dt.timedelta(seconds=int(spec.lease_duration_seconds))

    def _spec(self, transitions: int, now: dt.datetime, acquired: dt.datetime | None = None) -> dict[str, Any]:
        return {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": max(1, int(self.ttl)),
            "acquireTime": acquired or microtime(now),
            "renewTime": microtime(now),
            "leaseTransitions": transitions,
        }

    # ---- the four steps
    def _acquire(self) -> int:
        obj = self._read()
        now = self._clock()
        if obj is None:
            created = self._call(
                "create",
                functools.partial(self._coord.create_namespaced_lease, self.namespace, self._body(self._spec(1, now))),
                expect=(409,),
            )
            if created != 409:
                return 1
            obj = self._read()  # created by someone else between our read and our create
            if obj is None:
                raise Busy(f"the {self.name!r} Lease changed while being taken; try again later")
        spec = obj.spec
        holder = spec.holder_identity or ""
        if holder and holder != self.holder and not self._expired(spec) and not holder_dead(holder):
            raise Busy(f"another drsvc run holds the {self.name!r} lease ({holder}); try again later")
        token = int(spec.lease_transitions or 0) + 1
        if not self._replace(obj, self._spec(token, now)):
            raise Busy(f"another drsvc run took the {self.name!r} lease just now; try again later")
        return token

    def _renew_once(self, token: int) -> bool:
        obj = self._read()
        if obj is None or not self._ours(obj.spec, token) or self._expired(obj.spec):
            return False
        acquired = microtime(obj.spec.acquire_time) if obj.spec.acquire_time else None
        return self._replace(obj, self._spec(token, self._clock(), acquired))

    def _release(self, token: int) -> None:
        obj = self._read()
        if obj is None or not self._ours(obj.spec, token):
            return
        spec = self._spec(token, self._clock())
        spec.update(holderIdentity="", leaseDurationSeconds=1)
        self._replace(obj, spec)  # a conflict means someone else has it now: nothing to release

    def _valid(self, token: int) -> bool:
        obj = self._read()
        if obj is None or self._expired(obj.spec):
            return False
        if self.joined:  # the scheduler holds it: any holder, but this very acquisition
            return bool(obj.spec.holder_identity) and int(obj.spec.lease_transitions or 0) == token
        return self._ours(obj.spec, token)

    def _ours(self, spec: Any, token: int) -> bool:
        return spec.holder_identity == self.holder and int(spec.lease_transitions or 0) == token

    # ---- joined leases neither take nor give back
    def __enter__(self) -> KubernetesLease:
        if self.joined:
            self.check()
            return self
        super().__enter__()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if not self.joined:
            super().__exit__(et, ev, tb)
        self._api.close()

    def check(self) -> None:
        """Raise ``LeaseLost`` unless the Lease still carries this token (and, unless joined, our identity)."""
        try:
            super().check()
        except BackendError as e:
            self._lost.set()
            raise LeaseLost(f"cannot confirm the {self.name!r} lease (token {self.token}): {e}") from None
