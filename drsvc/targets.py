"""Who owns a restore target: the rules every restore checks before it touches anything.

A restore writes a container and a volume (a RADOS namespace). It may write only where the
desktop it restores owns the place:

* **in place**: the desktop's own container name and namespace (as its point recorded them); a
  container now standing at that name must carry the desktop's own ``drsvc.desktop`` label;
* **a clone** (``restore --as NAME``, drills): ``NAME`` is no known desktop's id, container or
  namespace, and its namespace is empty — or ``NAME`` is an earlier clone *of this desktop*
  (``drsvc.clone-of``), which a restore may replace.

Anything else belongs to another desktop, usually of another tenant: refused (exit 2) unless the
operator passes ``allow_cross_tenant``, and then the restore records who allowed it and when. A
container with no drsvc labels at the target name belongs to nobody drsvc knows: always refused.

``Fleet`` gathers what is known (the catalog's desktops, present or gone, and every labelled
container the runtime shows, clones included); ``check_restore_target`` applies the rules and
returns the ``Target`` the restore may write, with the identity (id + labels) of any container it
will replace; ``confirm_identity`` re-checks that identity right before the container is removed.
Restore, drills, single-object restores and fleet restores all use these, so the rules live here
and nowhere else.
"""

from __future__ import annotations

import getpass
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from drsvc.errors import DrsvcError, InvalidInput, NotFound
from drsvc.runtimes.base import LABEL_CLONE_OF, LABEL_DESKTOP, LABEL_TENANT, LABEL_VOLUME, DesktopRef

# a clone name becomes a container name and a RADOS namespace: keep it to what both accept
LABEL_RESTORED_FROM = "drsvc.restored-from"  # a desktop replaced by another's point (override)
_CLONE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class Known:
    """One desktop (or clone) drsvc knows, and the names it owns."""

    desktop_id: str
    tenant: str | None
    container: str | None
    volume: str | None  # rados://POOL/NAMESPACE
    clone_of: str | None = None  # set on clones (restore --as, drills)

    def names(self) -> set[str]:
        """Every name this desktop owns: its id, its container (each form a runtime accepts), its namespace."""
        names = {self.desktop_id}
        if self.container:
            parts = self.container.split("/")
            # crio:// names are NAMESPACE/POD/CONTAINER and also accepted as NAMESPACE/POD and POD
            names.update({self.container, "/".join(parts[:2]), parts[1] if len(parts) > 1 else parts[0]})
        ns = namespace_of(self.volume)
        if ns:
            names.add(ns)
        return names

    def describe(self) -> str:
        kind = f"a clone of {self.clone_of}" if self.clone_of else "desktop"
        tenant = f"tenant {self.tenant}" if self.tenant else "no tenant"
        return f"{kind} {self.desktop_id} ({tenant})" if not self.clone_of else f"{kind} ({tenant})"


@dataclass
class Fleet:
    """Every desktop and clone drsvc knows of, by id."""

    desktops: dict[str, list[Known]] = field(default_factory=dict)

    def add(self, known: Known) -> None:
        self.desktops.setdefault(known.desktop_id, []).append(known)

    @classmethod
    def gather(cls, catalog_rows: Iterable[Mapping[str, Any]], live: Iterable[DesktopRef]) -> Fleet:
        """From the catalog's desktops (present or gone) and the runtime's labelled containers."""
        fleet = cls()
        for row in catalog_rows:
            fleet.add(Known(row["id"], row.get("tenant"), row.get("container"), row.get("volume")))
        for d in live:
            if not d.labels.get(LABEL_DESKTOP):
                continue  # not a desktop: the runtime lists only labelled containers, a fake might not
            fleet.add(Known(d.desktop_id, d.tenant, d.container, d.volume, d.labels.get(LABEL_CLONE_OF) or None))
        return fleet

    def owners_of(self, *names: str) -> list[Known]:
        """The known desktops and clones owning any of ``names`` (ids, containers, namespaces)."""
        wanted = {n for n in names if n}
        seen: list[Known] = []
        for entries in self.desktops.values():
            for k in entries:
                if k.names() & wanted and k not in seen:
                    seen.append(k)
        return seen

    def owners_of_volume(self, url: str) -> list[Known]:
        """The known desktops and clones whose volume is ``url``."""
        return [k for entries in self.desktops.values() for k in entries if k.volume and k.volume == url]


@dataclass(frozen=True)
class Target:
    """Where a restore may write, as validated before its first phase."""

    desktop_id: str
    tenant: str | None
    container: str  # the container name the restore creates
    volume_url: str  # the namespace the restore writes
    clone: bool
    existing: DesktopRef | None  # the container now at ``container``: replaced (after an identity check)
    foreign: Known | None = None  # another desktop's target, written because the operator allowed it
    allowed_by: str | None = None  # who allowed writing into ``foreign`` (recorded with the restore)
    empty: bool = False  # the check listed the clone's namespace and found it empty (no second listing needed)

    def labels(self) -> dict[str, str] | None:
        """Labels the restored container gets on top of the checkpoint's (None: keep them)."""
        if self.foreign is not None:
            # it replaces the other desktop and stays that desktop: discovery keeps backing it up
            labels = {
                LABEL_DESKTOP: self.foreign.desktop_id,
                LABEL_VOLUME: self.volume_url,
                LABEL_RESTORED_FROM: self.desktop_id,
            }
            if self.foreign.tenant:
                labels[LABEL_TENANT] = self.foreign.tenant
            if self.foreign.clone_of:
                labels[LABEL_CLONE_OF] = self.foreign.clone_of
            return labels
        if self.clone:
            return {LABEL_DESKTOP: self.container, LABEL_VOLUME: self.volume_url, LABEL_CLONE_OF: self.desktop_id}
        return None

    def document(self) -> dict[str, Any]:
        return {
            "container": self.container,
            "volume": self.volume_url,
            "clone": self.clone,
            "replaces": self.existing.container_id if self.existing else None,
            "foreign_owner": self.foreign.desktop_id if self.foreign else None,
            "foreign_tenant": self.foreign.tenant if self.foreign else None,
            "allowed_by": self.allowed_by,
        }


def namespace_of(url: str | None) -> str | None:
    """``rados://POOL/NS`` → ``NS`` (None for anything else)."""
    if not url or "://" not in url:
        return None
    rest = url.split("://", 1)[1]
    return rest.split("/", 1)[1] if "/" in rest else None


def clone_volume_url(volume_url: str, name: str) -> str:
    """The namespace a clone named ``name`` gets: a sibling of the desktop's own."""
    return volume_url.rsplit("/", 1)[0] + "/" + name


def operator() -> str:
    """Who runs this drsvc (the sudo caller first): recorded with every override."""
    user = os.environ.get("SUDO_USER")
    if not user:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = f"uid {os.getuid()}"
    return user


def check_restore_target(
    *,
    desktop: Mapping[str, Any],
    manifest: Mapping[str, Any],
    as_name: str | None,
    fleet: Fleet,
    inspect: Callable[[str], DesktopRef],
    namespace_empty: Callable[[str], bool],
    allow_cross_tenant: bool = False,
    what: str = "restore",
) -> Target:
    """Validate where restoring ``desktop``'s point (``manifest``) may write; raise ``InvalidInput`` if nowhere.

    ``inspect`` looks a container up (``NotFound`` when there is none); ``namespace_empty(url)``
    says whether a volume holds no object. Read-only: nothing is created, removed or written.
    """
    source = str(desktop["id"])
    tenant = desktop.get("tenant")
    own_container = str(manifest["runtime"]["container"])
    own_volume = str(manifest["volume"]["url"])
    rules = _Rules(what, source, tenant, fleet, inspect, allow_cross_tenant)
    if as_name is None:
        claimed = fleet.owners_of_volume(own_volume) + rules.labelled_owner(own_container)
        owners = [k for k in claimed if k.desktop_id != source and k.clone_of != source]
        return rules.decide(f"{source} in place", own_container, own_volume, owners, clone=False)
    where = f"--as {as_name}"
    if not _CLONE_NAME.match(as_name):
        raise InvalidInput(
            f"{what} --as {as_name!r}: a clone name is 1-128 letters, digits, '.', '_' or '-' "
            "(it names the container and the namespace)"
        )
    volume = clone_volume_url(own_volume, as_name)
    claimed = fleet.owners_of(as_name) + fleet.owners_of_volume(volume)
    if as_name in (own_container, source) or any(k.desktop_id == source and not k.clone_of for k in claimed):
        raise InvalidInput(
            f"{what} {where}: that is {source}'s own container or namespace; omit --as to restore in place"
        )
    owners = [k for k in claimed if k.clone_of != source]
    return rules.decide(where, as_name, volume, owners, clone=True, namespace_empty=namespace_empty)


@dataclass
class _Rules:
    """The checks of one restore target (what it restores, what is known, what the operator allowed)."""

    what: str
    source: str
    tenant: str | None
    fleet: Fleet
    inspect: Callable[[str], DesktopRef]
    allow: bool

    def existing(self, name: str) -> DesktopRef | None:
        try:
            return self.inspect(name)
        except NotFound:
            return None

    def labelled_owner(self, container: str) -> list[Known]:
        """The desktop a container's own labels name (the catalog's record of it when there is one)."""
        existing = self.existing(container)
        if existing is None or not existing.labels.get(LABEL_DESKTOP):
            return []
        owner = existing.labels[LABEL_DESKTOP]
        clone_of = existing.labels.get(LABEL_CLONE_OF) or None
        recorded = [k for k in self.fleet.desktops.get(owner) or [] if k.clone_of == clone_of]
        return recorded[:1] or [Known(owner, existing.tenant, existing.container, existing.volume, clone_of)]

    def decide(
        self,
        where: str,
        container: str,
        volume: str,
        owners: list[Known],
        *,
        clone: bool,
        namespace_empty: Callable[[str], bool] | None = None,
    ) -> Target:
        foreign: Known | None = None
        allowed_by: str | None = None
        if owners:
            foreign = owners[0]
            allowed_by = self.override(where, foreign)
            # replacing another desktop means its container and its namespace, nothing beside them
            container = foreign.container or container
            if foreign.volume:
                if clone and foreign.volume.rsplit("/", 1)[0] != volume.rsplit("/", 1)[0]:
                    raise InvalidInput(
                        f"{self.what} {where}: {foreign.desktop_id}'s volume {foreign.volume} is in another pool "
                        f"than {self.source}'s; drsvc restores clones into the desktop's own pool"
                    )
                volume = foreign.volume
        existing = self.existing(container)
        empty = False
        if existing is not None:
            self.check_existing(where, existing, foreign, clone_name=container if clone else None)
        elif foreign is None and namespace_empty is not None and not self.own_clone_volume(volume):
            empty = namespace_empty(volume)
            if not empty:
                raise InvalidInput(
                    f"{self.what} {where}: namespace {volume} already holds objects and belongs to no desktop "
                    "drsvc knows; a clone needs an empty namespace (choose another name, or empty it if it is "
                    "yours); nothing was touched"
                )
        return Target(self.source, self.tenant, container, volume, clone, existing, foreign, allowed_by, empty)

    def own_clone_volume(self, volume: str) -> bool:
        return any(k.clone_of == self.source for k in self.fleet.owners_of_volume(volume))

    def override(self, where: str, owner: Known) -> str:
        """Who allowed writing into ``owner``'s target; ``InvalidInput`` when nobody did."""
        if self.allow:
            return operator()
        if owner.tenant != self.tenant:
            whose = f"another tenant's ({owner.tenant or 'no tenant'}, not {self.tenant or 'no tenant'})"
        else:
            whose = f"another desktop's of tenant {self.tenant}"
        raise InvalidInput(
            f"{self.what} {where}: the target belongs to {owner.describe()}: {whose}, not {self.source}'s; "
            "refused, nothing was touched (choose a clone name no desktop uses, or pass --allow-cross-tenant "
            "to replace it on purpose: recorded with who and when)"
        )

    def check_existing(
        self, where: str, existing: DesktopRef, foreign: Known | None, *, clone_name: str | None
    ) -> None:
        """The container at the target must be the desktop's own, its own clone, or the allowed foreign one."""
        labelled = existing.labels.get(LABEL_DESKTOP)
        clone_of = existing.labels.get(LABEL_CLONE_OF)
        if not labelled:
            raise InvalidInput(
                f"{self.what} {where}: container {existing.container} ({existing.container_id[:12]}) carries no "
                f"{LABEL_DESKTOP} label: drsvc does not own it and will not replace it; nothing was touched"
            )
        if foreign is not None and labelled == foreign.desktop_id and clone_of == foreign.clone_of:
            return
        if clone_name is None and labelled == self.source and not clone_of:
            return
        if clone_name is not None and labelled == clone_name and clone_of == self.source:
            return
        whose = f"a clone of {clone_of}" if clone_of else f"desktop {labelled}"
        raise InvalidInput(
            f"{self.what} {where}: container {existing.container} ({existing.container_id[:12]}) is {whose}, "
            f"not {self.source}'s; refused, nothing was touched"
        )


def confirm_identity(inspect: Callable[[str], DesktopRef], target: Target) -> bool:
    """Right before the container at the target is removed: whether it is there and still the one validated.

    False when it is gone meanwhile (nothing to remove); raises when another container took its place.
    """
    if target.existing is None:
        return False
    try:
        now = inspect(target.container)
    except NotFound:
        return False
    before = target.existing
    same_labels = all(now.labels.get(k) == before.labels.get(k) for k in (LABEL_DESKTOP, LABEL_CLONE_OF))
    if now.container_id != before.container_id or not same_labels:
        raise DrsvcError(
            f"container {target.container} changed since the restore was planned (was {before.container_id[:12]} "
            f"{LABEL_DESKTOP}={before.labels.get(LABEL_DESKTOP)}, now {now.container_id[:12]} "
            f"{LABEL_DESKTOP}={now.labels.get(LABEL_DESKTOP)}): not removed"
        )
    return True


def owned_clone(ref: DesktopRef, source: str, clone: str) -> bool:
    """Whether ``ref`` is the clone ``clone`` of desktop ``source`` (what a drill may tear down)."""
    return ref.labels.get(LABEL_DESKTOP) == clone and ref.labels.get(LABEL_CLONE_OF) == source
