"""Pair memory and disk: hold a batch of checkpoints frozen while the volume snapshot is taken.

Podman refuses to checkpoint a paused container, so "pause → pool snapshot → checkpoint" cannot
work. CRIU calls an *action script* at each step of a dump; runc hands CRIU the config file
``/etc/criu/runc.conf`` (unless the container sets the annotation ``org.criu.config``), and a line
``action-script /usr/local/lib/drsvc/drsvc-freeze-hook`` there makes CRIU run our hook. During
``post-dump`` of a ``leaveRunning`` checkpoint the container's processes are still frozen (measured:
a hook sleeping 2 s kept a counter still for 2 s), so the hook is a rendezvous point:

    with FreezeBatch([d.container_id for d in batch], timeout=30) as fb:
        start runtime.checkpoint(d.container) for each desktop in worker threads
        frozen = fb.wait_frozen(timeout=20)      # every process of the batch now stands still
        take the pool snapshot
        fb.release()                              # CRIU resumes them; the archives stream
        ... consume the streams; fb.freeze_window(id) says how long each desktop stood still

While a checkpoint stands frozen, Podman holds that container's lock: ``inspect``, ``list`` (even
of other containers), ``exec`` and friends block until the release or the hook's timeout
(measured: a list during a freeze waited 8.9 s, until the 10 s timeout). Gather what the batch needs
(ids, names, rootfs paths) before it starts and take the snapshot without talking to the runtime.

The hook only acts for containers that have a rendezvous directory ``ROOT/<container id>``;
every other checkpoint on the host passes through untouched. It never waits longer than the
``timeout`` file says (the batch timeout), whatever drsvc does, and always exits 0.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from drsvc.errors import BackendError, InvalidInput
from drsvc.runtimes.base import is_full_id

DEFAULT_ROOT = Path("/run/drsvc/freeze")
HOOK_NAME = "drsvc-freeze-hook"
DEFAULT_PREFIX = "/usr/local/lib/drsvc"
RUNC_CONF = "/etc/criu/runc.conf"
# CRIU actions the hook timestamps, in the order a leave-running dump calls them
ACTIONS = ("pre-dump", "network-lock", "post-dump", "network-unlock")


def _now() -> float:
    # the hook stamps with `date +%s.%N` (wall clock): compare like with like
    return time.time()


class FreezeBatch:
    """Rendezvous directories for a batch of containers whose checkpoints must freeze together."""

    def __init__(
        self,
        container_ids: Iterable[str],
        *,
        root: str | os.PathLike[str] | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.ids = list(dict.fromkeys(container_ids))
        bad = [c for c in self.ids if not is_full_id(c)]
        if bad:
            raise InvalidInput(f"freeze batch needs full 64-hex container ids, got {', '.join(bad)}")
        if timeout <= 0:
            raise InvalidInput(f"freeze timeout must be positive, got {timeout!r}")
        if root is None:
            root = os.environ.get("DRSVC_FREEZE_ROOT") or DEFAULT_ROOT
        self.root = Path(root)
        self.timeout = timeout
        self.released_at: float | None = None
        self._timings: dict[str, dict[str, float]] = {}
        self._entered = False
        self._locks: list[int] = []

    def dir(self, container_id: str) -> Path:
        """The rendezvous directory of one container."""
        return self.root / container_id

    def __enter__(self) -> FreezeBatch:
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            for cid in self.ids:
                d = self.dir(cid)
                if d.exists():  # stale leftovers of a crashed run: a stale `release` would not hold
                    shutil.rmtree(d, ignore_errors=True)
                d.mkdir(mode=0o700)
                (d / "timeout").write_text(f"{self.timeout:g}\n")
                # Held until exit: the hook stops waiting as soon as this process is gone
                # (kill -9 mid-backup), which it sees because the lock becomes free.
                lock = os.open(d / "owner.lock", os.O_CREAT | os.O_RDWR, 0o600)
                fcntl.flock(lock, fcntl.LOCK_EX)
                self._locks.append(lock)
        except OSError as e:
            self._cleanup()
            raise BackendError(f"freeze batch: cannot create rendezvous dirs under {self.root}: {e}") from e
        self._entered = True
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # never leave a desktop waiting, whatever happened
        self.release()
        for cid in self.ids:
            self._timings[cid] = self._read_timings(cid)
        self._cleanup()

    def _cleanup(self) -> None:
        for fd in self._locks:
            os.close(fd)
        self._locks.clear()
        for cid in self.ids:
            shutil.rmtree(self.dir(cid), ignore_errors=True)

    def frozen(self) -> set[str]:
        """Ids whose checkpoint is now waiting in ``post-dump`` (processes frozen)."""
        if self.released_at is not None:
            return set()
        return {cid for cid in self.ids if (self.dir(cid) / "frozen").exists()}

    def wait_frozen(
        self, deadline: float | None = None, *, timeout: float | None = None, poll: float = 0.01
    ) -> set[str]:
        """Wait until every container is frozen or the deadline passes; return the frozen ids.

        ``deadline`` is a ``time.monotonic()`` instant; ``timeout`` (seconds from now) is the
        alternative; with neither, the batch timeout applies.
        """
        if deadline is None:
            deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        want = set(self.ids)
        while True:
            done = self.frozen()
            if done >= want or time.monotonic() >= deadline:
                return done
            time.sleep(poll)

    def release(self) -> None:
        """Let every waiting hook return (CRIU resumes the containers); idempotent."""
        if self.released_at is not None:
            return
        self.released_at = _now()
        for cid in self.ids:
            d = self.dir(cid)
            try:
                if d.is_dir():
                    (d / "release").touch()
            except OSError:
                pass  # the hook's own timeout still ends the wait

    def timings(self, container_id: str) -> dict[str, float]:
        """Wall-clock timestamps the hook wrote per CRIU action (``pre-dump``, ``post-dump`` …)."""
        if container_id in self._timings:
            return dict(self._timings[container_id])
        return self._read_timings(container_id)

    def _read_timings(self, container_id: str) -> dict[str, float]:
        out: dict[str, float] = {}
        d = self.dir(container_id)
        if not d.is_dir():
            return out
        for f in d.iterdir():
            if f.name in ("frozen", "release", "timeout") or f.name.startswith("."):
                continue
            try:
                out[f.name] = float(f.read_text().strip())
            except (OSError, ValueError):
                continue  # being written right now, or not ours
        return out

    def freeze_window(self, container_id: str) -> float | None:
        """Seconds the container stood still: ``pre-dump`` → ``network-unlock`` (else → release)."""
        t = self.timings(container_id)
        start = t.get("pre-dump")
        if start is None:
            return None
        end = t.get("network-unlock")
        if end is None:
            # not unlocked (yet): the hook let CRIU go at the release or at its own timeout
            post = t.get("post-dump")
            ends = [x for x in (self.released_at, t.get("timed-out")) if x is not None]
            if post is None or not ends:
                return None
            end = max(post, min(ends))
        return max(0.0, end - start)


# ---------------------------------------------------------------------- installation
def _conf_hooks(conf: str | os.PathLike[str]) -> list[str]:
    try:
        text = Path(conf).read_text()
    except OSError:
        return []
    hooks = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) >= 2 and words[0].lstrip("-") == "action-script":
            hooks.append(words[1].strip("\"'"))
    return hooks


def hook_installed(conf: str | os.PathLike[str] = RUNC_CONF) -> bool:
    """Whether the CRIU config runc uses names an executable drsvc freeze hook."""
    return any(Path(h).name == HOOK_NAME and os.access(h, os.X_OK) for h in _conf_hooks(conf))


def hook_source() -> Path:
    """The hook script shipped with drsvc (``deploy/criu/drsvc-freeze-hook``)."""
    here = Path(__file__).resolve()
    candidates = [
        here.parents[2] / "deploy" / "criu" / HOOK_NAME,  # source checkout
        Path(os.environ.get("DRSVC_SHARE", "/usr/share/drsvc")) / "criu" / HOOK_NAME,  # packaged
    ]
    for c in candidates:
        if c.is_file():
            return c
    raise BackendError(f"the drsvc freeze hook script is not found (looked in {', '.join(map(str, candidates))})")


def install_hook(
    prefix: str | os.PathLike[str] = DEFAULT_PREFIX,
    conf: str | os.PathLike[str] = RUNC_CONF,
    *,
    source: str | os.PathLike[str] | None = None,
) -> bool:
    """Install the hook under ``prefix`` and name it in runc's CRIU config (idempotent); True if changed.

    Other lines of an existing config (other action scripts included) are kept.
    """
    src = Path(source) if source else hook_source()
    dest = Path(prefix) / HOOK_NAME
    changed = False
    try:
        new = src.read_bytes()
        if not dest.is_file() or dest.read_bytes() != new or not os.access(dest, os.X_OK):
            _atomic_write(dest, new, 0o755)
            changed = True
        conf_path = Path(conf)
        old = conf_path.read_text() if conf_path.exists() else ""
        if str(dest) not in _conf_hooks(conf_path):
            text = old if not old or old.endswith("\n") else old + "\n"
            text += (
                "# drsvc: pair container checkpoints with volume snapshots (holds frozen only the\n"
                "# checkpoints drsvc asked for, see drsvc.runtimes.freeze)\n"
                f"action-script {dest}\n"
            )
            _atomic_write(conf_path, text.encode(), 0o644)
            changed = True
    except OSError as e:
        raise BackendError(f"installing the freeze hook ({dest}, {conf}) failed: {e}") from e
    return changed


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
