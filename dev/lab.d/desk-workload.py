#!/usr/bin/python3
"""Desktop-like workload of the lab's `localhost/drsvc-desk:desktop` image (baked in by dev/lab).

Xvfb :N + x11vnc on VNC_PORT (host network: each desktop has its own port/display), and an
in-memory counter with a boot id generated at start: every 0.2 s it writes "<i> <boot>" to
/data/counter and to the RADOS object `counter` in pool `desktops`, namespace = desktop id,
as client.desk (conf + keyring mounted read-only at /etc/ceph).

The counter in memory only advances once its RADOS write succeeded (a failed write is retried
with the same value), so memory equals what is on disk, or is one behind while a write is in
flight. Memory is also kept, in place, in one bytearray "<BOOT>:NNNNNNNNNN" that a test can find
in the checkpoint's memory pages (checkpoint/pages-*.img): the counter *in the checkpoint* must
equal the `counter` object *in the pool snapshot* of the same recovery point.

(Restoring this process while its original kept running is a trap worth knowing: the restored
librados client re-sends request ids the original already used after the checkpoint, and the
OSDs answer them as duplicates without applying them, until its ids pass the original's.)

A checkpoint/restore must keep `boot` and continue `i`; a fresh start changes `boot`.
"""

import os
import subprocess
import sys
import time
import uuid

DESK = os.environ.get("DRSVC_DESKTOP") or os.uname().nodename
PORT = os.environ.get("VNC_PORT", "5900")
DISP = os.environ.get("DISPLAY_NUM", "1")
TICK = float(os.environ.get("TICK", "0.2"))


def log(msg):
    print(f"[desk-workload {DESK}] {msg}", flush=True)


def start_x():
    os.makedirs("/tmp/.X11-unix", exist_ok=True)
    # -nolisten tcp: host network would expose port 6000+N; the abstract unix socket is per
    # network namespace (shared with the host here), hence a display number per desktop.
    xvfb = subprocess.Popen(
        ["Xvfb", f":{DISP}", "-screen", "0", "1024x768x16", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=open("/tmp/xvfb.log", "w"),  # noqa: SIM115 (lives with the child)
    )
    for _ in range(100):
        if os.path.exists(f"/tmp/.X11-unix/X{DISP}"):
            break
        time.sleep(0.05)
    vnc = subprocess.Popen(
        [
            "x11vnc",
            "-display",
            f":{DISP}",
            "-rfbport",
            PORT,
            "-localhost",
            "-forever",
            "-shared",
            "-nopw",
            "-quiet",
            "-noxdamage",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open("/tmp/x11vnc.log", "w"),  # noqa: SIM115
    )
    return xvfb, vnc


def connect():
    import rados

    cluster = rados.Rados(conffile="/etc/ceph/ceph.conf", name="client.desk")
    cluster.connect(timeout=15)
    io = cluster.open_ioctx("desktops")
    io.set_namespace(DESK)
    return cluster, io


def main():
    boot = str(uuid.uuid4())
    os.makedirs("/data", exist_ok=True)
    start_x()
    io = None
    try:
        _, io = connect()
    except Exception as e:  # keep counting locally; the counter file still proves continuity
        log(f"rados connect failed: {e}")
    log(f"boot {boot}, vnc :{PORT}, display :{DISP}, rados {'ok' if io else 'off'}")
    i = 0
    memory = bytearray(f"<{boot}>:{i:010d}".encode())  # updated in place: one copy in memory
    while True:
        line = f"{i + 1} {boot}\n"
        with open("/data/counter.tmp", "w") as f:
            f.write(line)
        os.replace("/data/counter.tmp", "/data/counter")
        if io is None:
            i += 1
            memory[-10:] = b"%010d" % i
        else:
            try:
                io.write_full("counter", line.encode())
                i += 1  # only what reached the disk counts
                memory[-10:] = b"%010d" % i
            except Exception as e:
                log(f"rados write failed at {i + 1}: {e}")
        time.sleep(TICK)


if __name__ == "__main__":
    sys.exit(main())
