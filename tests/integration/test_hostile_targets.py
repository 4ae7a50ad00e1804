"""Hostile and careless restore targets on the real lab (Podman): refused before anything is touched.

The fleet's odd desktops belong to tenant acme, the even ones to globex (dev/lab fleet).
"""

from __future__ import annotations

from runtime_suite import read_counter

from drsvc.catalog import Catalog


def _digests(services, url: str) -> dict[str, str]:
    return services.volume(url).digests_now()


def test_restore_into_another_tenants_running_desktop_is_refused_and_touches_nothing(drsvc_env, make_fleet):
    a, b = make_fleet(2)
    services = drsvc_env.services()
    runtime = services.runtime
    assert (runtime.inspect(a).tenant, runtime.inspect(b).tenant) == ("acme", "globex")
    assert drsvc_env.cli("backup", a).code == 0
    b_before = runtime.inspect(b)
    b_data = _digests(services, b_before.volume)
    assert b_data
    count_before = read_counter(runtime, b)

    for extra in ([], ["--force"], ["--dry-run"], ["--force", "--tier", "hot"]):
        refused = drsvc_env.cli("restore", a, "--as", b, *extra)
        assert refused.code == 2, (extra, refused.output)
        assert "globex" in refused.stderr and "nothing was touched" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.output

    b_after = runtime.inspect(b)
    assert (b_after.container_id, b_after.state, b_after.labels) == (b_before.container_id, "running", b_before.labels)
    assert _digests(services, b_before.volume) == b_data
    assert read_counter(runtime, b)[1] == count_before[1]  # the same process, never restarted
    catalog = Catalog.open(drsvc_env.root / "catalog.db")
    assert catalog.query("SELECT * FROM restores") == []  # refused before the first phase
    # B is still a desktop drsvc protects
    found = drsvc_env.cli("--json", "desktops", "discover").json()["desktops"]
    assert b in [d["desktop_id"] for d in found]


def test_a_namespace_holding_someone_elses_objects_is_not_a_clone_target(drsvc_env, make_fleet, rados_cluster):
    [a] = make_fleet(1)
    assert drsvc_env.cli("backup", a).code == 0
    stray = f"{a}-stray"
    io = rados_cluster.open_ioctx("desktops")
    io.set_namespace(stray)
    io.write_full("precious", b"not drsvc's")
    try:
        refused = drsvc_env.cli("restore", a, "--as", stray)
        assert refused.code == 2 and "already holds objects" in refused.stderr, refused.output
        assert io.read("precious") == b"not drsvc's"
        assert [o.key for o in io.list_objects()] == ["precious"]
        assert stray not in [d.container for d in drsvc_env.services().runtime.list_desktops()]
    finally:
        io.remove_object("precious")


def test_replacing_another_tenants_desktop_on_purpose_is_recorded(drsvc_env, make_fleet):
    a, b = make_fleet(2)
    services = drsvc_env.services()
    runtime = services.runtime
    assert drsvc_env.cli("backup", a).code == 0
    b_id = runtime.inspect(b).container_id
    done = drsvc_env.cli("--json", "restore", a, "--as", b, "--force", "--allow-cross-tenant")
    assert done.code == 0, done.output
    replaced = runtime.inspect(b)
    assert replaced.container_id != b_id and replaced.state == "running"
    # it stays desktop b of globex (backups of b go on), and says where its content came from
    assert (replaced.desktop_id, replaced.tenant, replaced.volume) == (b, "globex", f"rados://desktops/{b}")
    assert replaced.labels["drsvc.restored-from"] == a and "drsvc.clone-of" not in replaced.labels
    catalog = Catalog.open(drsvc_env.root / "catalog.db")
    [row] = catalog.query("SELECT * FROM restores")
    assert (row["foreign_owner"], row["foreign_tenant"], row["target_container"]) == (b, "globex", b)
    assert row["allowed_by"] and row["allowed_at"]
    found = drsvc_env.cli("--json", "desktops", "discover").json()["desktops"]
    assert b in [d["desktop_id"] for d in found]
