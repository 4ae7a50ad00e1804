"""What a backup's checkpoints leave outside the catalog, written down before it exists (``drsvc.intents``).

A Docker checkpoint is a directory under Docker's data root holding every memory page of the
desktop; the adapter deletes it when the archive has streamed, but a kill -9 in between skips that.
So the backup asks the runtime what a checkpoint would leave (``checkpoint_artifact``), records a
``checkpoint-dir`` intent under an owner lease of its own, and only then checkpoints with that
token. A live backup's intent has a live owner; a killed one's owner lapses at once (its pid is
gone), and ``drsvc cleanup`` (also the next backup) asks the runtime to ``forget`` exactly that
directory. A runtime that leaves nothing (Podman streams its export) records nothing.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

from drsvc.catalog import Catalog
from drsvc.intents import Intents, Owner
from drsvc.leftovers import recorded
from drsvc.runtimes.base import ContainerRuntime, checkpoint_artifact


class RecordedCheckpoints:
    """The checkpoints of one backup run, each recorded before it is made (a context manager around the run).

    The owner lease is taken at the first checkpoint that leaves something and released when the
    run ends.
    """

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.owner: Owner | None = None
        self._intents: Intents | None = None
        self._lock = threading.Lock()  # checkpoints of a batch start together, in threads

    def __enter__(self) -> RecordedCheckpoints:
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            if self.owner is not None:
                self.owner.__exit__(None, None, None)
                self.owner = self._intents = None  # a next run takes an owner of its own

    def _recorder(self) -> Intents:
        with self._lock:
            if self._intents is None:
                self.owner = Owner(self.catalog)
                self.owner.__enter__()
                self._intents = Intents(self.catalog, self.owner.name)
            return self._intents

    @contextmanager
    def checkpoint(self, runtime: ContainerRuntime, name: str) -> Iterator[BinaryIO]:
        """``runtime.checkpoint(name)``, its leftover recorded first and resolved ``done`` after it.

        A forget that fails leaves the intent pending: cleanup retries once this process is gone.
        """
        token = uuid.uuid4().hex[:16]
        left = checkpoint_artifact(runtime, token)
        if left is None:
            with runtime.checkpoint(name) as stream:
                yield stream
            return
        with (
            recorded(self._recorder(), runtime, left, "backup.checkpoint-kept", container=name, token=token),
            runtime.checkpoint(name, token=token) as stream,  # type: ignore[call-arg]
        ):
            yield stream
