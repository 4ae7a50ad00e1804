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

``checkpoint_batch`` is that choreography as backups run it, plus the files each frozen desktop
holds open in its root filesystem, copied before the release and patched into its archive
(``heldfiles``).

While a checkpoint stands frozen, Podman holds that container's lock: ``inspect``, ``list`` (even
of other containers), ``exec`` and friends block until the release or the hook's timeout
(measured: a list during a freeze waited 8.9 s, until the 10 s timeout). Gather what the batch needs
(ids, names, rootfs paths) before it starts and take the snapshot without talking to the runtime.

The hook only acts for containers that have a rendezvous directory ``ROOT/<container id>``;
every other checkpoint on the host passes through untouched. It never waits longer than the
``timeout`` file says (the batch timeout), whatever drsvc does, and always exits 0.
"""

from __future__ import annotations

import concurrent.futures as cf
import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Generic, TypeVar, cast

from drsvc import data, faults
from drsvc.errors import BackendError, DrsvcError, InvalidInput
from drsvc.runtimes import heldfiles
from drsvc.runtimes.base import ContainerRuntime, DesktopRef, is_full_id
from drsvc.streams import IterReader

T = TypeVar("T")

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

    def init_pid(self, container_id: str) -> int | None:
        """Host pid of a frozen container's init, as the hook read it from CRIU (None if it did not say)."""
        try:
            return int((self.dir(container_id) / "init-pid").read_text())
        except (OSError, ValueError):
            return None

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
            if f.name in ("frozen", "release", "timeout", "init-pid") or f.name.startswith("."):
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


# ---------------------------------------------------------------------- a frozen batch of checkpoints
@dataclass
class FrozenCheckpoint(Generic[T]):
    """What one desktop's checkpoint in a frozen batch gave."""

    desktop: DesktopRef
    value: T | None = None  # what ``consume`` returned; None when the checkpoint failed
    error: DrsvcError | None = None
    frozen: bool = False  # it stood frozen when ``while_frozen`` ran
    released_early: bool = False  # the hook let it go before the release (timed out, drsvc gone)
    freeze_window: float | None = None  # seconds its processes stood still
    seconds: float = 0.0  # the checkpoint call, from its start until ``consume`` returned
    held: dict[str, Any] = field(default_factory=dict)  # HeldFiles.summary() of what was read in the freeze


def checkpoint_batch(
    runtime: ContainerRuntime,
    desktops: Sequence[DesktopRef],
    consume: Callable[[DesktopRef, BinaryIO], T],
    *,
    while_frozen: Callable[[set[str]], None] = lambda _frozen: None,
    freeze_timeout: float = 20.0,
    held_budget: int = heldfiles.BUDGET,
) -> dict[str, FrozenCheckpoint[T]]:
    """Checkpoint ``desktops`` together and run ``while_frozen`` while all of them stand still.

    The checkpoints start at once; each desktop is frozen by the hook after its memory dump. As
    each one freezes, the files it holds in its root filesystem are copied (``heldfiles``);
    once every desktop is frozen, or ``freeze_timeout`` has passed, ``while_frozen(frozen ids)``
    runs (the pool snapshot) and all are released. Each archive, with its held files patched
    in, is handed to ``consume`` in its own thread. The result maps container ids to outcomes;
    an exception from ``while_frozen`` propagates after the release.
    """
    results = {d.container_id: FrozenCheckpoint[T](d) for d in desktops}
    ready: dict[str, Future[heldfiles.HeldFiles | None]] = {cid: Future() for cid in results}

    def one(r: FrozenCheckpoint[T]) -> None:
        started = time.monotonic()
        held: heldfiles.HeldFiles | None = None
        try:
            with runtime.checkpoint(r.desktop.container) as stream:
                held = ready[r.desktop.container_id].result()  # set at the release at the latest
                source = stream
                if held is not None and held.files:
                    source = cast(BinaryIO, IterReader(heldfiles.patch_archive(stream, held)))
                r.value = consume(r.desktop, source)
        except DrsvcError as e:
            r.error = e
        finally:
            if held is not None:
                held.close()
            r.seconds = time.monotonic() - started

    with (
        FreezeBatch(results, timeout=freeze_timeout + 10) as batch,
        cf.ThreadPoolExecutor(len(results), thread_name_prefix="checkpoint") as pool,
        cf.ThreadPoolExecutor(2, thread_name_prefix="held-files") as readers,
    ):
        futures = {cid: pool.submit(one, r) for cid, r in results.items()}
        captures: dict[str, Future[heldfiles.HeldFiles]] = {}
        deadline = time.monotonic() + freeze_timeout
        frozen: set[str] = set()
        try:
            while True:
                frozen = batch.frozen()
                for cid in frozen - captures.keys():
                    captures[cid] = readers.submit(_read_held, batch, cid, held_budget)
                if all(cid in frozen or f.done() for cid, f in futures.items()) or time.monotonic() >= deadline:
                    break
                time.sleep(0.01)
            faults.point("after-freeze")
            while_frozen(set(frozen))
        finally:
            for cid, capture in captures.items():  # read before the release: only then is nothing moving
                ready[cid].set_result(capture.result())
            batch.release()
            for future in ready.values():
                if not future.done():
                    future.set_result(None)
        faults.point("after-release")
    # every checkpoint has ended; the batch kept each desktop's timings when it cleaned up
    for cid, r in results.items():
        futures[cid].result()
        r.frozen = cid in frozen
        r.released_early = bool({"timed-out", "owner-gone"} & set(batch.timings(cid)))
        r.freeze_window = batch.freeze_window(cid)
        if cid in captures:
            held = captures[cid].result()
            r.held = held.summary()
            held.close()  # consumed by `one` already, unless its checkpoint failed first
    return results


def _read_held(batch: FreezeBatch, container_id: str, budget: int) -> heldfiles.HeldFiles:
    pid = batch.init_pid(container_id)
    if pid is None:
        return heldfiles.HeldFiles(
            notes=["root filesystem files not read: the freeze hook gave no init pid (update it)"]
        )
    try:
        return heldfiles.capture(pid, budget=budget)
    except Exception as e:  # never let reading fail a checkpoint: it is as it was without
        return heldfiles.HeldFiles(notes=[f"root filesystem files not read: {e}"])


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
    """The hook script shipped with drsvc (``drsvc/data/criu/drsvc-freeze-hook``; ``deploy/criu/`` in a checkout).

    ``$DRSVC_SHARE/criu/`` is looked at first, for distribution packages that keep it apart.
    """
    candidates = [data.path("criu", HOOK_NAME)]
    if os.environ.get("DRSVC_SHARE"):
        candidates.insert(0, Path(os.environ["DRSVC_SHARE"]) / "criu" / HOOK_NAME)
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
