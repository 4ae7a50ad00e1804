"""A tenant shapes what CRIU dumps of its desktop: many processes, much memory, right before a backup.

The tenant's processes run in the container, so they choose how many processes CRIU must seize
and how many pages it must write. Its batch-mates stand frozen while the batch waits for every
desktop's dump (``drsvc.runtimes.freeze``): stragglers are left out after half the freeze budget,
so another tenant's desktop stands still no longer than that, whatever the attacker does. Here on
the real Podman + CRIU: the victim's point is paired and complete, the attacker's is complete or
says why not, and the numbers are printed (``-s``) for docs/security.md.
"""

from __future__ import annotations

import subprocess
import time

import pytest


def _podman(lab, *args: str) -> str:
    env = {"CONTAINER_HOST": f"unix://{lab.podman_socket}", "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"}
    return subprocess.run(["podman", *args], env=env, check=True, timeout=120, capture_output=True, text=True).stdout


def _load(lab, container: str) -> tuple[int, int]:
    """(processes, bytes resident) of the container, as ``podman top`` shows them."""
    rows = _podman(lab, "top", container, "rss").split()[1:]
    return len(rows), sum(int(r) for r in rows if r.isdigit()) << 10


# The desktop's own processes do it (children of its init: CRIU dumps init's tree, and a process
# `podman exec` starts is not in it). busybox awk holds a string of N spaces: pages CRIU must write.
FORK = "i=0; while [ $i -lt {n} ]; do sleep 100000 & i=$((i+1)); done; exec sleep 100000"
MEMORY = 'awk \'BEGIN {{ s = sprintf("%{n}s", ""); system("sleep 100000") }}\' & exec sleep 100000'


@pytest.fixture
def attacker_desktop(lab, make_fleet):
    """attacker_desktop(script): a labelled desktop of tenant ``evil`` whose init runs ``script``."""
    made: list[str] = []

    def make(script: str) -> str:
        name = f"{make_fleet.prefix}-evil"
        made.append(name)
        labels = [f"drsvc.desktop={name}", f"drsvc.volume=rados://desktops/{name}", "drsvc.tenant=evil"]
        image = "localhost/drsvc-desk:busybox"
        _podman(
            lab,
            "run",
            "-d",
            "--name",
            name,
            *(a for label in labels for a in ("--label", label)),
            image,
            "sh",
            "-c",
            script,
        )
        return name

    yield make
    for name in made:
        subprocess.run(
            ["podman", "rm", "-f", "-t", "0", name],
            env={"CONTAINER_HOST": f"unix://{lab.podman_socket}", "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"},
            capture_output=True,
            timeout=120,
        )


@pytest.mark.parametrize(("attack", "n"), [("processes", 1500), ("memory", 1 << 30)])
def test_a_desktop_heavy_to_dump_does_not_freeze_its_batch_mates_longer(
    drsvc_env, make_fleet, lab, attacker_desktop, attack, n
):
    (victim,) = make_fleet(1)
    attacker = attacker_desktop((FORK if attack == "processes" else MEMORY).format(n=n))
    deadline = time.monotonic() + 120
    while _load(lab, attacker)[0 if attack == "processes" else 1] < n:
        assert time.monotonic() < deadline, _load(lab, attacker)
        time.sleep(0.5)
    started = time.monotonic()
    result = drsvc_env.cli("--json", "backup", victim, attacker)
    took = time.monotonic() - started
    by_desktop = {o["desktop"]: o for o in result.json()["results"]}
    v, a = by_desktop[victim], by_desktop[attacker]
    print(
        f"\n{attack} {n}: run {took:.1f} s, exit {result.code}; victim {v['status']}/{v['consistency']} "
        f"freeze {v['freeze_ms']:.0f} ms; attacker {a['status']}/{a['consistency']} "
        f"checkpoint {a.get('checkpoint_ms') or 0:.0f} ms, {a['bytes'] >> 20} MiB, "
        f"reason {a.get('reason') or a.get('error')!r}"
    )
    assert result.code in (0, 6), result.output
    assert v["status"] == "complete" and v["consistency"] == "paired", v
    assert v["freeze_ms"] <= 5000 / 2 + 1000, v  # half the freeze budget (5 s) plus the snapshot's margin
    assert a["status"] in ("complete", "failed"), a
    if a["status"] == "failed" or a["consistency"] != "paired":
        assert a.get("reason") or a.get("error"), a
