"""A tenant's own RADOS namespace is hostile: what it names must fail that desktop alone.

A desktop's processes hold librados credentials for their namespace, so they choose its object
names, xattr names and omap keys as raw bytes. The Python binding decodes each as strict UTF-8;
one object named ``b"bad\\xffname"`` made that decode raise out of the batch's one pool listing
and failed every desktop of the backup run, not only the tenant's own.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator

import pytest


def _rados(lab, namespace: str, *args: bytes, data: bytes | None = None) -> None:
    """The rados CLI on ``desktops``/``namespace`` with raw (possibly non-UTF-8) arguments, the way a
    tenant's own librados client can name things."""
    conf = lab.ceph_conf.encode()
    cmd = [b"rados", b"-c", conf, b"-p", b"desktops", b"-N", namespace.encode(), *args]
    subprocess.run(cmd, input=data, check=True, capture_output=True, timeout=60)


@pytest.fixture
def put(lab) -> Iterator[Callable[[str, bytes], None]]:
    """put(namespace, name): a small object; removed at teardown with the rados CLI (the fleet's purge
    goes through the binding, which cannot list such a name, and one left anywhere in the pool fails
    every later pool-wide listing that has no fix for it)."""
    made: list[tuple[str, bytes]] = []

    def make(namespace: str, name: bytes) -> None:
        made.append((namespace, name))
        _rados(lab, namespace, b"put", name, b"-", data=b"x\n")

    yield make
    for namespace, name in made:
        _rados(lab, namespace, b"rm", name)


@pytest.mark.parametrize("where", ["object name", "xattr name", "omap key"])
def test_a_non_utf8_name_in_one_namespace_fails_that_desktop_alone(drsvc_env, make_fleet, lab, put, where):
    victim, attacker = make_fleet(2)
    if where == "object name":
        put(attacker, b"bad\xffname")
    else:
        put(attacker, b"plain")
        _rados(lab, attacker, b"setxattr" if where == "xattr name" else b"setomapval", b"plain", b"k\xfe", b"v")
    result = drsvc_env.cli("--json", "backup", victim, attacker)
    assert result.code == 6, result.output  # partial: the other desktop's point was taken
    by_desktop = {o["desktop"]: o for o in result.json()["results"]}
    assert by_desktop[victim]["status"] == "complete", by_desktop[victim]
    assert by_desktop[attacker]["status"] == "failed", by_desktop[attacker]
    assert "not UTF-8" in (by_desktop[attacker].get("error") or ""), by_desktop[attacker]
    assert "\\xff" in by_desktop[attacker]["error"] or "\\xfe" in by_desktop[attacker]["error"]
