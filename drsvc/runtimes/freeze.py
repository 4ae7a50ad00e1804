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
``timeout`` file says (the batch timeout), whatever drsvc does, and always exits 0. It waits by
blocking on ``hold.lock``, which the batch holds until its release (the kernel lets go of it
when this process dies), so a desktop thaws the moment it is released; a directory without
``hold.lock`` (an older drsvc) is looked at every 1/20 s.
"""

from __future__ import annotations

import concurrent.futures as cf
import fcntl
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Generic, TypeVar, cast

from drsvc import data, faults
from drsvc.errors import BackendError, BackendTimeout, DrsvcError, InvalidInput
from drsvc.runtimes import archive, heldfiles
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
        self._holds: list[int] = []

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
                # Held until the release (or this process's end): a hook blocks on it, so it
                # wakes the moment the batch is released instead of at its next look.
                hold = os.open(d / "hold.lock", os.O_CREAT | os.O_RDWR, 0o600)
                fcntl.flock(hold, fcntl.LOCK_EX)
                self._holds.append(hold)
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
        self._let_go()
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
        self._let_go()  # after every `release` exists: a hook that wakes finds it

    def _let_go(self) -> None:
        for fd in self._holds:
            os.close(fd)  # closing drops the flock: the hooks blocked on it wake
        self._holds.clear()

    def stamp(self, container_id: str, action: str) -> float | None:
        """The wall-clock time the hook stamped ``action`` for one container, if it did."""
        try:
            return float((self.dir(container_id) / action).read_text())
        except (OSError, ValueError):
            return None

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
            if f.name in ("frozen", "release", "timeout", "init-pid", "owner.lock", "hold.lock") or f.name.startswith(
                "."
            ):
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
# Kept between the release and the end of the budget: the hook sees a release at once (blocked on
# `hold.lock`; an older hook within 50 ms), then
# CRIU unlocks the network and resumes the processes.
RELEASE_MARGIN = 0.25


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
    budget: float | None = None  # the freeze budget it ran under (seconds), if any
    # The runtime dumped it again after the release (Docker retries a checkpoint containerd
    # refused, moby#42900, with a second CRIU dump): the archive's memory is later than the pool
    # snapshot and the held files, read in the first freeze, do not describe it.
    redumped: bool = False

    @property
    def overran(self) -> bool:
        """It stood still longer than its freeze budget (then memory and disk are not called paired)."""
        return self.budget is not None and self.freeze_window is not None and self.freeze_window > self.budget


class FreezeBudgetExceeded(BackendTimeout):
    """``while_frozen`` (the pool snapshot) did not finish inside the freeze budget.

    The desktops were thawed at the budget without it; ``results`` holds what each checkpoint
    gave (their archives were still streamed), ``pending`` the still running ``while_frozen``,
    which the caller may wait for to clean up what it creates.
    """

    def __init__(self, budget: float, frozen: int, results: dict[str, Any], pending: Future[None]) -> None:
        super().__init__(
            "freeze",
            f"pool snapshot while {frozen} desktop(s) stood frozen",
            f"not done within the freeze budget of {budget:g} s; the desktops were thawed without it",
            runbook="ceph-unavailable",
        )
        self.results = results
        self.pending = pending


def checkpoint_batch(
    runtime: ContainerRuntime,
    desktops: Sequence[DesktopRef],
    consume: Callable[[DesktopRef, BinaryIO], T],
    *,
    while_frozen: Callable[[set[str]], None] = lambda _frozen: None,
    freeze_timeout: float = 20.0,
    freeze_budget: float | None = None,
    held_budget: int = heldfiles.BUDGET,
    while_dumping: Callable[[], None] | None = None,
    open_checkpoint: Callable[[ContainerRuntime, str], AbstractContextManager[BinaryIO]] | None = None,
) -> dict[str, FrozenCheckpoint[T]]:
    """Checkpoint ``desktops`` together and run ``while_frozen`` while all of them stand still.

    The checkpoints start at once; each desktop is frozen by the hook after its memory dump. As
    each one freezes, the files it holds in its root filesystem are copied (``heldfiles``);
    once every desktop is frozen, ``while_frozen(frozen ids)`` runs (the pool snapshot) and all
    are released. Each archive, with its held files patched in, is handed to ``consume`` in its
    own thread. The result maps container ids to outcomes; an exception from ``while_frozen``
    propagates after the release.

    ``freeze_timeout`` bounds the wait for the first desktop to freeze. ``freeze_budget`` (seconds)
    bounds how long any desktop stands still, counted from the first one's freeze: stragglers
    are left out after half of it, and at its end (less ``RELEASE_MARGIN``) every desktop is
    released, whatever ``while_frozen`` is doing; it then raises ``FreezeBudgetExceeded`` (after
    every checkpoint ended). The hook's own timeout is set just above the budget, so the desktops
    thaw even if this process stops responding.

    ``while_dumping`` is called once, on this thread, when the first desktop's dump has begun (its
    ``pre-dump`` stamp): work of the caller's that would only slow the checkpoints' start (a big
    manifest's parse holds the GIL) is handed to other threads there; it must return at once.

    ``open_checkpoint(runtime, container)`` takes each checkpoint (default ``runtime.checkpoint``):
    a backup passes one that records what the checkpoint leaves (``drsvc.checkpoint_effects``).
    """
    results = {d.container_id: FrozenCheckpoint[T](d, budget=freeze_budget) for d in desktops}
    hook_timeout = freeze_budget + 1.0 if freeze_budget is not None else freeze_timeout + 10
    with (
        FreezeBatch(results, timeout=hook_timeout) as batch,
        cf.ThreadPoolExecutor(len(results), thread_name_prefix="checkpoint") as pool,
        cf.ThreadPoolExecutor(2, thread_name_prefix="held-files") as readers,
    ):
        run = _BatchRun(batch, results, freeze_budget, held_budget, while_dumping, open_checkpoint)
        run.start(runtime, consume, pool, readers)
        late: Future[None] | None = None
        try:
            frozen = run.wait_frozen(freeze_timeout)
            faults.point("after-freeze")
            late = run.snapshot(while_frozen, frozen)
        finally:
            run.release()
        faults.point("after-release")
    # every checkpoint has ended; the batch kept each desktop's timings when it cleaned up
    run.collect()
    if late is not None:
        assert freeze_budget is not None
        raise FreezeBudgetExceeded(freeze_budget, len(run.frozen), dict(results), late)
    return results


class _BatchRun(Generic[T]):
    """The state one ``checkpoint_batch`` shares between its steps: start, wait, snapshot, release."""

    def __init__(
        self,
        batch: FreezeBatch,
        results: dict[str, FrozenCheckpoint[T]],
        budget: float | None,
        held_budget: int,
        while_dumping: Callable[[], None] | None = None,
        open_checkpoint: Callable[[ContainerRuntime, str], AbstractContextManager[BinaryIO]] | None = None,
    ) -> None:
        self.batch = batch
        self.while_dumping = while_dumping
        self.open_checkpoint = open_checkpoint or (lambda runtime, name: runtime.checkpoint(name))
        self.results = results
        self.budget = budget
        self.held_budget = held_budget
        self.ready: dict[str, Future[heldfiles.HeldFiles | None]] = {cid: Future() for cid in results}
        self.futures: dict[str, Future[None]] = {}
        self.captures: dict[str, Future[heldfiles.HeldFiles]] = {}
        self.abandoned: set[str] = set()  # held-file reads the budget did not wait for
        self.frozen: set[str] = set()
        self.first_freeze: float | None = None  # wall clock of the first desktop's pre-dump
        self._readers: cf.Executor | None = None

    def start(
        self,
        runtime: ContainerRuntime,
        consume: Callable[[DesktopRef, BinaryIO], T],
        pool: cf.Executor,
        readers: cf.Executor,
    ) -> None:
        self._readers = readers
        for cid, r in self.results.items():
            self.futures[cid] = pool.submit(self._one, runtime, consume, r)

    def _one(
        self, runtime: ContainerRuntime, consume: Callable[[DesktopRef, BinaryIO], T], r: FrozenCheckpoint[T]
    ) -> None:
        started = time.monotonic()
        held: heldfiles.HeldFiles | None = None
        try:
            with self.open_checkpoint(runtime, r.desktop.container) as stream:
                held = self.ready[r.desktop.container_id].result()  # set at the release at the latest
                r.redumped = self._dumped_after_release(r.desktop.container_id)
                pieces: Iterable[bytes] = iter(lambda: stream.read(1 << 20), b"")
                if held is not None and held.files and not r.redumped:
                    pieces = heldfiles.patch_archive(stream, held)
                # what the runtime archived of a tenant's root filesystem is held to the archive
                # rules before it is stored: a diff naming a path beneath its own symlink (a host
                # file read through a swapped directory) fails the checkpoint, not a later restore
                source = cast(
                    BinaryIO, IterReader(archive.checked(pieces, what=f"checkpoint of {r.desktop.container}"))
                )
                r.value = consume(r.desktop, source)
        except DrsvcError as e:
            r.error = e
        finally:
            if held is not None:
                held.close()
            r.seconds = time.monotonic() - started

    def _dumped_after_release(self, cid: str) -> bool:
        """Whether the dump that made this archive began after the release, though the desktop
        stood frozen for the snapshot (the hook stamps every ``pre-dump``; the last one wins)."""
        released, began = self.batch.released_at, self.batch.stamp(cid, "pre-dump")
        return cid in self.frozen and released is not None and began is not None and began > released

    def _poll(self) -> None:
        self.frozen = self.batch.frozen()
        assert self._readers is not None
        for cid in self.frozen - self.captures.keys():
            self.captures[cid] = self._readers.submit(_read_held, self.batch, cid, self.held_budget)
        if self.first_freeze is None:
            stamps = [t for t in (self.batch.stamp(cid, "pre-dump") for cid in self.results) if t is not None]
            self.first_freeze = min(stamps, default=None)
            if self.first_freeze is not None and self.while_dumping is not None:
                self.while_dumping()

    def release_at(self) -> float | None:
        """Wall-clock time by which every desktop must be released (None: no budget)."""
        if self.budget is None:
            return None
        first = self.first_freeze if self.first_freeze is not None else _now()
        return first + self.budget - RELEASE_MARGIN

    def wait_frozen(self, wait_limit: float) -> set[str]:
        """Wait until every desktop is frozen (or its checkpoint ended); return the frozen ids.

        Without a budget, at most ``wait_limit`` seconds. With one, at most ``wait_limit`` for the
        first freeze, then until half the budget has passed since it: the snapshot gets the rest.
        """
        started = time.monotonic()
        while True:
            self._poll()
            if all(cid in self.frozen or f.done() for cid, f in self.futures.items()):
                return self.frozen
            if self.budget is None or self.first_freeze is None:
                if time.monotonic() - started >= wait_limit:
                    return self.frozen
            elif _now() >= self.first_freeze + self.budget / 2:
                return self.frozen  # stragglers: their memory would be later than the snapshot
            time.sleep(0.01)

    def snapshot(self, while_frozen: Callable[[set[str]], None], frozen: set[str]) -> Future[None] | None:
        """Run ``while_frozen``; with a budget, in a thread, abandoned at the release deadline.

        Returns the still running call when the deadline came first, else None (its exception,
        if it raised in time, propagates).
        """
        deadline = self.release_at()
        if deadline is None:
            while_frozen(set(frozen))
            return None
        if not frozen:
            self.release()  # nobody stands still for it: nothing to pair, nothing to hold
            while_frozen(set())
            return None
        done: Future[None] = Future()
        threading.Thread(target=_call_into, args=(done, while_frozen, set(frozen)), daemon=True).start()
        try:
            done.result(timeout=max(0.0, deadline - _now()))
        except cf.TimeoutError:
            return done
        return None

    def release(self) -> None:
        """Hand each checkpoint its held files (read before the release: only then is nothing moving), release."""
        if self.batch.released_at is not None:
            return
        deadline = self.release_at()
        for cid, capture in self.captures.items():
            try:
                timeout = None if deadline is None else max(0.0, deadline - _now())
                self.ready[cid].set_result(capture.result(timeout=timeout))
            except cf.TimeoutError:
                self.abandoned.add(cid)  # not waited for: the archive stays as the runtime made it
        self.batch.release()
        for future in self.ready.values():
            if not future.done():
                future.set_result(None)

    def collect(self) -> None:
        """After every checkpoint ended: each outcome's freeze facts and held-file summary."""
        for cid, r in self.results.items():
            self.futures[cid].result()
            r.frozen = cid in self.frozen
            r.released_early = bool({"timed-out", "owner-gone"} & set(self.batch.timings(cid)))
            r.freeze_window = self.batch.freeze_window(cid)
            if cid in self.captures:
                held = self.captures[cid].result()
                r.held = held.summary()
                held.close()  # consumed by `_one` already, unless its checkpoint failed first
                if cid in self.abandoned:
                    r.held = {"files": [], "notes": ["root filesystem files not read: the freeze budget ran out"]}


def _call_into(done: Future[None], fn: Callable[[set[str]], None], arg: set[str]) -> None:
    try:
        fn(arg)
    except BaseException as e:
        done.set_exception(e)
    else:
        done.set_result(None)


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
