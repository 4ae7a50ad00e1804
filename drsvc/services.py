"""Wiring: the adapters a job needs, built from the config once and shared.

Jobs receive a ``Services`` and ask it for the hot and cold chunk stores, the container runtime,
volumes and policies; they never build adapters themselves, so tests can hand them real adapters
pointed at the lab or at temporary directories.
"""

from __future__ import annotations

import logging
import sys
from functools import cached_property
from typing import TYPE_CHECKING, Any

from drsvc import ceph, store_identity
from drsvc.catalog import Catalog
from drsvc.config import Config
from drsvc.errors import ConfigError, NotFound
from drsvc.log import event

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from drsvc.chunks import ChunkerParams, ChunkStore
    from drsvc.chunks.index_cache import IndexCache
    from drsvc.crypto import Keys
    from drsvc.kms import KeyProvider
    from drsvc.lease import Lease
    from drsvc.policy import PolicySet
    from drsvc.runtimes.base import ContainerRuntime
    from drsvc.storage.base import ObjectStore
    from drsvc.volumes.base import PoolSnapshots, Volume


class Services:
    """Lazily built adapters for one drsvc process."""

    def __init__(self, config: Config, catalog: Catalog) -> None:
        self.config = config
        self.catalog = catalog
        limits = config.timeouts
        ceph.set_timeouts(ceph.Timeouts(limits.ceph_seconds, limits.ceph_connect_seconds))

    def _ceph(self, url: str) -> dict[str, Any]:
        """Which cluster a ``rados://`` store, volume or snapshot scope talks to: the config's
        ceph_conf, passed to the adapter (not put in the environment, where it would outlive this
        Services and reach everything else in the process); else librados' own defaults."""
        conf = self.config.hot.ceph_conf if self.config.hot else None
        return {"conffile": str(conf)} if conf and url.startswith("rados://") else {}

    @cached_property
    def policies(self) -> PolicySet:
        from drsvc.policy import load_policies

        return load_policies([self.config.policies_dir])

    @cached_property
    def keys(self) -> Keys:
        from drsvc.crypto import load_key

        return load_key(self.config.keys.file)

    @cached_property
    def key_provider(self) -> KeyProvider:
        """What wraps the tenants' data keys (``drsvc.kms``): the key file's master key."""
        from drsvc.kms import FileKeyProvider

        return FileKeyProvider(self.keys)

    def _guard(self, url: str, *, cold: bool) -> store_identity.Guard | None:
        """The identity check of the configured hot or cold store (``drsvc.store_identity``)."""
        section = self.config.cold if cold else self.config.hot
        if section is None or url != section.store:
            return None
        tier = "cold" if cold else "hot"
        return store_identity.Guard(self.catalog, tier, url, f"{tier}.store", self.config.path)

    def _chunk_store(self, url: str, *, cold: bool = False) -> ChunkStore:
        from drsvc.chunks import ChunkStore
        from drsvc.storage import open_store

        guard = self._guard(url, cold=cold)
        may_create = guard.before_open() if guard is not None else True  # refuses a store the copies never saw
        options: dict[str, Any] = self._ceph(url)
        if url.startswith("s3://") and self.config.cold:
            given = {
                "endpoint_url": self.config.cold.endpoint_url,
                "region": self.config.cold.region,
                "object_lock": self.config.cold.object_lock,
            }
            options = {k: v for k, v in given.items() if v}
            options["connect_timeout"] = self.config.timeouts.s3_connect_seconds
            options["read_timeout"] = self.config.timeouts.s3_read_seconds
            options["max_attempts"] = self.config.timeouts.s3_attempts
        if url.startswith("s3://") and not may_create:
            options["create_missing"] = False  # a bucket the catalog's copies are in is never created
        try:
            store = open_store(url, **options)
        except NotFound as e:
            if guard is None:
                raise
            guard.missing(e)
            raise
        # The cold tier keeps its chunks in packs (S3 requests are costly; see drsvc.chunks).
        chunk_options: dict[str, Any] = {}
        if cold and self.config.cold:
            chunk_options["pack_size"] = self.config.cold.pack_mib * 1024 * 1024
            chunk_options["level"] = self.config.cold.zstd_level
            chunk_options["recompress"] = self.config.cold.recompress
            chunk_options["index_cache"] = self._index_cache(url)
        elif not cold and self.config.hot and url == self.config.hot.store:
            chunk_options["level"] = self.config.hot.zstd_level
        chunk_options["scope"] = self.config.keys.scope
        try:
            opened = ChunkStore.open(store, self.key_provider, **chunk_options)
        except NotFound:
            if guard is not None and not may_create:
                guard.missing()
            # First use of this store: create it. Its sealed config makes a later open with
            # another key fail loudly instead of mixing data.
            params = self._new_store_params(cold=cold)
            created = ChunkStore.init(store, self.key_provider, params=params, **chunk_options)
            if guard is not None:
                guard.created(store)
            return created
        if guard is not None:
            guard.opened(store)
        if not cold and self.config.hot and url == self.config.hot.store:
            _hot_store_seen(self.config, self.catalog, url, opened)
        return opened

    def _new_store_params(self, *, cold: bool) -> ChunkerParams:
        """How a new store cuts: ``[hot] chunk_kib`` for the hot store; a cold store takes the hot
        store's own parameters (what its config says, whatever the setting says now), so every
        chunk tiered into it lies within the bounds its readers check (``max_size``)."""
        from drsvc.chunks import ChunkerParams

        hot = self.config.hot
        if cold and hot is not None:
            return self.hot.params
        return ChunkerParams.for_average(hot.chunk_kib if hot is not None else ChunkerParams().avg_kib)

    def _index_cache(self, url: str) -> IndexCache | None:
        """The local cache of a packed store's indexes: ``<catalog>.cache/index-<store>/`` (None: off)."""
        import hashlib

        from drsvc.chunks.index_cache import IndexCache

        mib = self.config.cold.index_cache_mib if self.config.cold else 0
        if not mib:
            return None
        store = hashlib.blake2b(url.encode(), digest_size=8).hexdigest()
        catalog = self.config.catalog.path
        return IndexCache(catalog.parent / f"{catalog.name}.cache" / f"index-{store}", mib * 1024 * 1024)

    @cached_property
    def hot(self) -> ChunkStore:
        if self.config.hot is None:
            raise ConfigError(f"{self.config.path}: hot.store: no hot tier configured")
        return self._chunk_store(self.config.hot.store)

    @cached_property
    def cold(self) -> ChunkStore:
        if self.config.cold is None:
            raise ConfigError(f"{self.config.path}: cold.store: no cold tier configured")
        return self._chunk_store(self.config.cold.store, cold=True)

    @property
    def has_cold(self) -> bool:
        return self.config.cold is not None

    def site_objects(self, name: str, *, create: bool = True) -> ObjectStore:
        """The raw object store of site ``name`` (cached): copies write here before a chunk store exists."""
        from drsvc import sites
        from drsvc.chunks.layout import CONFIG_KEY
        from drsvc.errors import BackendError
        from drsvc.storage import open_store

        cache: dict[str, ObjectStore] = self.__dict__.setdefault("_site_objects", {})
        if name not in cache:
            section = sites.site_section(self.config, name)
            guard, may_create = None, True
            if create:  # copies go there: never to a store the site's earlier copies did not go to
                setting = f"sites.{name}.store"
                guard = store_identity.Guard(self.catalog, f"site:{name}", section.store, setting, self.config.path)
                may_create = guard.before_open()
            try:
                options = sites.store_options(name, section, create=create, timeouts=self.config.timeouts)
                if not may_create:
                    options["create_missing"] = False
                objects = open_store(section.store, **options)
                if guard is not None and not may_create and not objects.exists(CONFIG_KEY):
                    guard.missing()
            except NotFound as e:
                if guard is None:
                    raise
                guard.missing(e)
            except BackendError as e:
                raise sites.unreachable(name, section, e) from None
            cache[name] = objects
        return cache[name]

    def site(self, name: str) -> ChunkStore:
        """Site ``name``'s chunk store (cached); ``NotFound`` when nothing was copied there yet."""
        from drsvc import sites
        from drsvc.chunks import ChunkStore
        from drsvc.errors import BackendError

        cache: dict[str, ChunkStore] = self.__dict__.setdefault("_sites", {})
        if name not in cache:
            objects = self.site_objects(name, create=False)
            try:
                cache[name] = ChunkStore.open(objects, self.keys)
            except NotFound as e:
                hint = f"nothing copied there yet: drsvc copy --site {name}"
                raise NotFound(f"site {name}: {e.message} ({hint})") from None
            except BackendError as e:
                raise sites.unreachable(name, sites.site_section(self.config, name), e) from None
        return cache[name]

    @cached_property
    def runtime(self) -> ContainerRuntime:
        from drsvc.runtimes import open_runtime

        if self.config.runtime is None:
            raise ConfigError(f"{self.config.path}: runtime.url: no container runtime configured")
        return open_runtime(self.config.runtime.url)

    def volume(self, url: str) -> Volume:
        from drsvc.volumes import open_volume

        return open_volume(url, **self._ceph(url))

    def snapshots(self, scope: str) -> PoolSnapshots:
        """The snapshots of a volume scope (``rados://POOL``)."""
        from drsvc.volumes import open_snapshots

        return open_snapshots(scope, **self._ceph(scope))

    def work_lease(self) -> Lease:
        """The work lease (backups, prune, tiering): in the catalog, or a Kubernetes Lease.

        With ``executor = "kubernetes"`` the scheduler and its node agents share no catalog, so the
        lease lives in the API server (``drsvc.executors.kubernetes_lease``).
        """
        ttl = self.config.scheduler.lease_seconds
        if self.config.scheduler.executor == "kubernetes":
            from drsvc.executors.kubernetes_lease import KubernetesLease, namespace_from_environment

            return KubernetesLease(namespace=namespace_from_environment(), ttl=ttl)
        from drsvc.lease import Lease

        return Lease(self.catalog, ttl=ttl)

    def joined_lease(self, token: int) -> Lease:
        """The scheduler's work lease, joined by its fencing token (node agents)."""
        if self.config.scheduler.executor == "kubernetes":
            from drsvc.executors.kubernetes_lease import KubernetesLease, namespace_from_environment

            return KubernetesLease.join(token, namespace=namespace_from_environment())
        from drsvc.lease import JoinedLease

        return JoinedLease(self.catalog, token)

    def close(self) -> None:
        for name in ("runtime",):
            adapter = self.__dict__.pop(name, None)
            if adapter is not None:
                adapter.close()


def _hot_store_seen(config: Config, catalog: Catalog, url: str, hot: ChunkStore) -> None:
    """Record how the existing hot store cuts (``drsvc status`` compares it with ``[hot] chunk_kib``).

    The store's config is the truth: the setting only shapes a store not yet created. When they
    differ, ``status`` lists it as a problem (``drsvc.store_params``, the one wording); on stderr it
    is said once per process only to someone at a terminal: a cron or daemon run logs it at info
    level, or cron would mail it every minute."""
    from drsvc import store_params

    store_params.record(catalog, url, hot.params)
    problem = store_params.chunk_size_problem(config, hot.params.avg_size)
    if problem is not None:
        level = logging.WARNING if _at_a_terminal() else logging.INFO
        event(log, level, "store.chunk_size", problem)


def _at_a_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed
        return False
