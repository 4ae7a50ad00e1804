"""What reading held files inside the freeze costs: freeze windows with and without it, on the real lab.

A busybox desktop holds one file of N MiB open for writing in its root filesystem (the files
CRIU checks at restore; drsvc copies them while the desktop stands frozen, see
drsvc/runtimes/heldfiles.py). For each N, rounds alternate between drsvc's checkpoint as backups
take it (``checkpoint_batch``) and the same checkpoint with the held-file read switched off (the
way before), so both meet the same machine. Printed: median and max freeze window of each, the
difference, and what was copied. Each checkpoint is restored as a clone, which must come back.

    eval "$(dev/lab env)"; .venv/bin/python bench/heldfiles.py [--mib 0 1 16 64] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
from typing import Any

import _lab  # noqa: F401  (the checkout first on sys.path)

from drsvc.runtimes import freeze, heldfiles, open_runtime
from drsvc.runtimes.base import ContainerRuntime, DesktopRef

IMAGE = "localhost/drsvc-desk:busybox"


def start(name: str, mib: int) -> None:
    subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True)
    # the file is made, then held open read-write while a shell writes to it in place now and then
    script = (
        f"dd if=/dev/urandom of=/root/held bs=1M count={mib} 2>/dev/null; exec 3<>/root/held; "
        "while true; do printf x >&3; sleep 0.2; done"
    )
    subprocess.run(["podman", "run", "-d", "--name", name, IMAGE, "sh", "-c", script], check=True, capture_output=True)


def one_round(rt: ContainerRuntime, ref: DesktopRef, read_held: bool) -> tuple[float, dict[str, Any], bool]:
    """(freeze window in ms, what was copied, whether the clone came back)."""
    clone = f"{ref.container}-clone"
    original = freeze._read_held
    if not read_held:
        freeze._read_held = lambda *_a: heldfiles.HeldFiles()  # type: ignore[assignment]
    try:
        result = freeze.checkpoint_batch(rt, [ref], lambda _d, s: rt.restore(s, name=clone))
    finally:
        freeze._read_held = original  # type: ignore[assignment]
        rt.remove(clone)
    r = result[ref.container_id]
    if r.freeze_window is None:
        raise SystemExit(f"the checkpoint did not freeze: {r.error}")
    return r.freeze_window * 1000, r.held, r.error is None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, nargs="+", default=[0, 1, 16, 64])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    rt = open_runtime("podman://" + os.environ.get("DRSVC_PODMAN_SOCKET", "/run/podman/podman.sock"))
    name = "bench-held"
    print(
        f"{'held MiB':>8} | {'freeze ms, read':>16} | {'freeze ms, not read':>20} | {'+ms':>6} "
        f"| restored (read / not read) | copied"
    )
    try:
        for mib in args.mib:
            start(name, mib)
            ref = rt.inspect(name)
            one_round(rt, ref, True)  # warm-up: page cache, first checkpoint of the container
            with_read, without = [], []
            ok_read = ok_not = 0
            copied = ""
            for _ in range(args.rounds):
                ms, held, ok = one_round(rt, ref, True)
                with_read.append(ms)
                ok_read += ok
                copied = ", ".join(f"/{f['path']} {f['size'] / 2**20:.1f} MiB" for f in held.get("files", []))
                ms, _, ok = one_round(rt, ref, False)
                without.append(ms)
                ok_not += ok
            a, b = statistics.median(with_read), statistics.median(without)
            print(
                f"{mib:>8} | {a:>7.0f} (max {max(with_read):>4.0f}) | {b:>11.0f} (max {max(without):>4.0f}) "
                f"| {a - b:>+6.0f} | {ok_read}/{args.rounds} / {ok_not}/{args.rounds} | {copied or '-'}"
            )
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True)


if __name__ == "__main__":
    main()
