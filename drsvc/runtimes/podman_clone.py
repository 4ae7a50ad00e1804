"""Podman clones that share nothing with their original but the image.

A clone (``restore --as``, drills) runs the desktop's processes, which still hold the original's
paths in memory: restored with the original's mounts it would write into production data. Podman's
restore API has no option for this, so the archive's ``config.dump`` and ``spec.dump`` are
rewritten on their way to Podman (measured on Podman 4.3, whose restore uses ``spec.dump``'s mounts
as they are and re-creates named volumes from ``config.dump`` and ``volumes/NAME.tar``):

- every named volume gets a new name of the clone's own (``drsvc-clone-<clone>-<n>``), its mount
  source and its ``volumes/`` member follow, so the clone's volume starts with the checkpoint's
  copy of the content and the original's volume is never mounted;
- every bind mount the desktop was given (``userVolumes``) gets an empty directory (or file) of the
  clone's own under ``CLONE_ROOT/<clone>/`` instead of the host path;
- no host PID or IPC namespace, and none shared with another container.

``remove_clone_storage`` deletes both kinds when the clone is removed.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drsvc.containment import Escape, clean

CLONE_ROOT = Path(os.environ.get("DRSVC_CLONE_ROOT") or "/var/lib/drsvc/clones")
VOLUME_PREFIX = "drsvc-clone-"


@dataclass
class CloneRewrite:
    """The rewrites of one clone's archive; ``config`` must see ``config.dump`` before ``volumes/`` pass."""

    name: str
    root: Path = CLONE_ROOT
    renames: dict[str, str] = field(default_factory=dict)  # archive member -> its new name
    sources: dict[str, str] = field(default_factory=dict)  # mount destination -> the clone's source
    volumes: dict[str, str] = field(default_factory=dict)  # original volume -> the clone's volume
    _named: dict[str, tuple[str, str]] = field(default_factory=dict)  # destination -> (old, new) volume

    @property
    def own_dir(self) -> Path:
        return self.root / clean(self.name, what="clone name")

    def config(self, data: bytes) -> bytes:
        """``config.dump``: named volumes renamed, binds remapped in its spec, no shared namespaces."""
        cfg = json.loads(data)
        named = {}
        for i, v in enumerate(cfg.get("namedVolumes") or []):
            new = f"{VOLUME_PREFIX}{self.name}-{i}"
            self.volumes[v["volumeName"]] = new
            self.renames[f"volumes/{v['volumeName']}.tar"] = f"volumes/{new}.tar"
            named[v["dest"]] = (v["volumeName"], new)
            v["volumeName"] = new
        for n, dest in enumerate(sorted(set(cfg.get("userVolumes") or []) - set(named))):
            self.sources[dest] = str(self.own_dir / str(n))
        self._named = named
        for key in ("pidNsCtr", "ipcNsCtr", "utsNsCtr"):
            cfg.pop(key, None)
        if isinstance(cfg.get("spec"), dict):
            cfg["spec"] = self._spec(cfg["spec"])
        return json.dumps(cfg).encode()

    def spec(self, data: bytes) -> bytes:
        """``spec.dump``: the same mounts and namespaces as ``config.dump``'s spec."""
        return json.dumps(self._spec(json.loads(data))).encode()

    def _spec(self, spec: dict[str, Any]) -> dict[str, Any]:
        for m in spec.get("mounts") or []:
            dest = m.get("destination")
            if m.get("type") != "bind":
                continue
            if dest in self._named:
                old, new = self._named[dest]
                source = str(m.get("source") or "")
                suffix = f"/{old}/_data"
                if source.endswith(suffix):
                    m["source"] = source[: -len(suffix)] + f"/{new}/_data"
            elif dest in self.sources:
                self._make_source(str(m.get("source") or ""), self.sources[dest])
                m["source"] = self.sources[dest]
        linux = spec.setdefault("linux", {})
        namespaces = linux.setdefault("namespaces", [])
        kinds = {ns.get("type") for ns in namespaces}
        for kind in ("pid", "ipc"):
            if kind not in kinds:
                namespaces.append({"type": kind})  # was the host's: the clone gets its own
        for ns in namespaces:
            if ns.get("type") in ("pid", "ipc", "uts") and ns.get("path"):
                ns.pop("path")  # another container's namespace: not the clone's to join
        return spec

    def _make_source(self, original: str, own: str) -> None:
        """An empty directory, or an empty file where the original bind was a file."""
        path = Path(own)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            is_file = stat.S_ISREG(os.stat(original).st_mode)
        except OSError:
            is_file = False
        if is_file:
            path.touch(mode=0o600, exist_ok=True)
        else:
            path.mkdir(mode=0o755, exist_ok=True)


def clone_volume(name: str, volume: str) -> bool:
    """Whether ``volume`` is one ``CloneRewrite`` made for clone ``name``."""
    prefix = f"{VOLUME_PREFIX}{name}-"
    return volume.startswith(prefix) and volume[len(prefix) :].isdigit()


def remove_clone_storage(name: str, root: Path = CLONE_ROOT) -> None:
    """The clone's own bind sources: its directory under ``root``."""
    try:
        own = root / clean(name, what="clone name")
    except Escape:
        return
    if own != root and own.parent == root:
        shutil.rmtree(own, ignore_errors=True)
