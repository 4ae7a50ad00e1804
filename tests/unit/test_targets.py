"""Who owns a restore target (drsvc/targets.py): every rule, with the runtime and volumes faked."""

from __future__ import annotations

from typing import Any

import pytest

from drsvc.errors import DrsvcError, InvalidInput, NotFound
from drsvc.runtimes.base import DesktopRef, desktop_from_labels
from drsvc.targets import Fleet, Known, check_restore_target, confirm_identity, owned_clone


def ref(name: str, cid: str = "a" * 64, state: str = "running", **labels: str) -> DesktopRef:
    return desktop_from_labels(
        name=name, container_id=cid, labels={k.replace("_", "."): v for k, v in labels.items()}, state=state
    )


def desk(ident: str, tenant: str) -> DesktopRef:
    return ref(
        ident,
        cid=(ident.encode().hex() * 64)[:64],
        **{"drsvc_desktop": ident, "drsvc_tenant": tenant, "drsvc_volume": f"rados://desktops/{ident}"},
    )


class World:
    """Desktop a (acme) and b (globex) running; catalog rows for both; namespaces as given."""

    def __init__(self, *containers: DesktopRef, objects: dict[str, int] | None = None) -> None:
        self.containers = {c.container: c for c in containers}
        self.objects = objects or {}
        self.rows = [
            {"id": c.desktop_id, "tenant": c.tenant, "container": c.container, "volume": c.volume}
            for c in containers
            if "drsvc.clone-of" not in c.labels and c.labels.get("drsvc.desktop")
        ]

    def inspect(self, name: str) -> DesktopRef:
        if name not in self.containers:
            raise NotFound(f"no container {name}")
        return self.containers[name]

    def check(self, source: str, as_name: str | None, **kw: Any):  # -> Target
        row = next(r for r in self.rows if r["id"] == source)
        manifest = {"runtime": {"container": row["container"]}, "volume": {"url": row["volume"]}}
        return check_restore_target(
            desktop=row,
            manifest=manifest,
            as_name=as_name,
            fleet=Fleet.gather(self.rows, self.containers.values()),
            inspect=self.inspect,
            namespace_empty=lambda url: self.objects.get(url, 0) == 0,
            **kw,
        )


A, B = desk("desk-a", "acme"), desk("desk-b", "globex")


def test_in_place_is_the_desktops_own_target() -> None:
    t = World(A, B).check("desk-a", None)
    assert (t.container, t.volume_url, t.clone, t.foreign) == ("desk-a", "rados://desktops/desk-a", False, None)
    assert t.existing == A and t.labels() is None


def test_a_new_clone_name_with_an_empty_namespace_is_allowed() -> None:
    t = World(A, B).check("desk-a", "desk-a-copy")
    assert (t.container, t.volume_url, t.clone, t.existing) == (
        "desk-a-copy",
        "rados://desktops/desk-a-copy",
        True,
        None,
    )
    assert t.labels() == {
        "drsvc.desktop": "desk-a-copy",
        "drsvc.volume": "rados://desktops/desk-a-copy",
        "drsvc.clone-of": "desk-a",
    }


def test_only_a_clone_namespace_the_check_listed_empty_is_marked_empty() -> None:
    """A restore writes a namespace marked empty without listing it again (exact=False)."""
    world = World(A, B)
    assert world.check("desk-a", "desk-a-copy").empty
    assert not world.check("desk-a", None).empty  # in place: the desktop's own objects are there
    assert not world.check("desk-b", None).empty
    world.objects["rados://desktops/desk-a-copy"] = 3
    with pytest.raises(InvalidInput, match="already holds objects"):
        world.check("desk-a", "desk-a-copy")


@pytest.mark.parametrize("name", ["desk-b"])
def test_another_tenants_desktop_is_refused(name: str) -> None:
    with pytest.raises(InvalidInput) as e:
        World(A, B).check("desk-a", name)
    message = str(e.value)
    assert "desk-b" in message and "globex" in message and "another tenant" in message
    assert "--allow-cross-tenant" in message and "nothing was touched" in message
    assert e.value.exit_code == 2


def test_another_tenants_namespace_and_container_names_are_refused() -> None:
    b = ref(
        "b-ctr",
        cid="b" * 64,
        **{"drsvc_desktop": "desk-b", "drsvc_tenant": "globex", "drsvc_volume": "rados://desktops/ns-b"},
    )
    world = World(A, b)
    for name in ("ns-b", "b-ctr", "desk-b"):
        with pytest.raises(InvalidInput, match="globex"):
            world.check("desk-a", name)


def test_a_gone_desktop_still_owns_its_names() -> None:
    world = World(A)
    world.rows.append({"id": "desk-c", "tenant": "globex", "container": "desk-c", "volume": "rados://desktops/desk-c"})
    with pytest.raises(InvalidInput, match="desk-c"):
        world.check("desk-a", "desk-c")


def test_a_desktop_of_the_same_tenant_is_refused_too() -> None:
    sibling = desk("desk-a2", "acme")
    with pytest.raises(InvalidInput, match="another desktop's of tenant acme"):
        World(A, sibling).check("desk-a", "desk-a2")


def test_the_override_replaces_the_other_desktop_and_records_who() -> None:
    t = World(A, B).check("desk-a", "desk-b", allow_cross_tenant=True)
    assert t.foreign is not None and t.foreign.desktop_id == "desk-b" and t.foreign.tenant == "globex"
    assert t.allowed_by and t.container == "desk-b" and t.volume_url == "rados://desktops/desk-b"
    assert t.existing == B
    # the replaced desktop stays desktop-b of globex: discovery keeps protecting it
    assert t.labels() == {
        "drsvc.desktop": "desk-b",
        "drsvc.volume": "rados://desktops/desk-b",
        "drsvc.tenant": "globex",
        "drsvc.restored-from": "desk-a",
    }
    assert t.document()["foreign_owner"] == "desk-b" and t.document()["allowed_by"] == t.allowed_by


def test_the_desktops_own_names_are_not_clone_names() -> None:
    other_ns = ref(
        "desk-x", cid="c" * 64, **{"drsvc_desktop": "desk-x", "drsvc_tenant": "acme", "drsvc_volume": "rados://p/x-ns"}
    )
    world = World(other_ns)
    for name in ("desk-x", "x-ns"):
        with pytest.raises(InvalidInput, match="own container or namespace"):
            world.check("desk-x", name)


def test_a_non_empty_namespace_nobody_owns_is_refused() -> None:
    world = World(A, objects={"rados://desktops/stray": 3})
    with pytest.raises(InvalidInput, match="already holds objects"):
        world.check("desk-a", "stray")


def test_an_unlabelled_container_at_the_name_is_never_replaced() -> None:
    stray = ref("web", cid="d" * 64)
    with pytest.raises(InvalidInput, match=r"carries no drsvc\.desktop label"):
        World(A, stray).check("desk-a", "web")
    with pytest.raises(InvalidInput, match=r"carries no drsvc\.desktop label"):
        World(A, stray).check("desk-a", "web", allow_cross_tenant=True)


def test_an_earlier_clone_of_the_same_desktop_may_be_replaced() -> None:
    clone = ref(
        "desk-a-copy",
        cid="e" * 64,
        **{
            "drsvc_desktop": "desk-a-copy",
            "drsvc_clone-of": "desk-a",
            "drsvc_tenant": "acme",
            "drsvc_volume": "rados://desktops/desk-a-copy",
        },
    )
    world = World(A, B, clone, objects={"rados://desktops/desk-a-copy": 5})
    t = world.check("desk-a", "desk-a-copy")
    assert t.existing == clone and t.foreign is None and t.clone
    # ... but a clone of another desktop is that desktop's
    with pytest.raises(InvalidInput, match="clone of desk-a"):
        world.check("desk-b", "desk-a-copy")


def test_in_place_refuses_a_container_of_another_desktop_at_the_name() -> None:
    # desk-a's container name now carries desk-b's labels (a tenant re-provisioned under that name)
    impostor = ref(
        "desk-a",
        cid="f" * 64,
        **{"drsvc_desktop": "desk-b", "drsvc_tenant": "globex", "drsvc_volume": "rados://desktops/desk-b"},
    )
    world = World(A, B)
    world.containers["desk-a"] = impostor
    with pytest.raises(InvalidInput, match="globex"):
        world.check("desk-a", None)


def test_in_place_refuses_a_namespace_another_desktop_now_uses() -> None:
    moved = ref(
        "desk-b",
        cid="b" * 64,
        **{"drsvc_desktop": "desk-b", "drsvc_tenant": "globex", "drsvc_volume": "rados://desktops/desk-a"},
    )
    world = World(A, B)
    world.containers["desk-b"] = moved
    with pytest.raises(InvalidInput, match="desk-b"):
        world.check("desk-a", None)


@pytest.mark.parametrize("name", ["../etc", "a/b", "", "-x", "x" * 129, "a b"])
def test_clone_names_that_are_no_name(name: str) -> None:
    with pytest.raises(InvalidInput, match="clone name"):
        World(A).check("desk-a", name)


def test_identity_is_confirmed_before_removal() -> None:
    world = World(A, B)
    t = world.check("desk-a", None)
    assert confirm_identity(world.inspect, t) is True
    world.containers["desk-a"] = ref("desk-a", cid="9" * 64, **{"drsvc_desktop": "desk-a"})  # replaced meanwhile
    with pytest.raises(DrsvcError, match="changed since the restore was planned"):
        confirm_identity(world.inspect, t)
    del world.containers["desk-a"]
    assert confirm_identity(world.inspect, t) is False  # gone: nothing to remove


def test_owned_clone() -> None:
    clone = ref("c", **{"drsvc_desktop": "c", "drsvc_clone-of": "desk-a"})
    assert owned_clone(clone, "desk-a", "c")
    assert not owned_clone(clone, "desk-b", "c") and not owned_clone(A, "desk-a", "desk-a")


def test_known_names_cover_every_form_a_runtime_accepts() -> None:
    k = Known("d", "t", "ns/pod/ctr", "rados://pool/space")
    assert k.names() == {"d", "ns/pod/ctr", "ns/pod", "pod", "space"}
