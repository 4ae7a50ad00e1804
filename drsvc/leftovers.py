"""A runtime's leftover on the host (a checkpoint directory, an archive, a loaded image), recorded
before it exists and forgotten after the work that makes it, however that work ends.

Shared by a backup's checkpoints (``checkpoint_effects``) and a restore's runtime call
(``restore_effects.leaving``): the runtime names what it would leave (``checkpoint_artifact``,
``restore_artifact``), the caller records that as an intent (``drsvc.intents``), and a run killed in
between leaves the intent pending for ``drsvc cleanup`` to ``forget``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from drsvc.errors import DrsvcError
from drsvc.intents import Intents
from drsvc.log import event
from drsvc.runtimes.base import forget

log = logging.getLogger(__name__)


@contextmanager
def recorded(
    intents: Intents, runtime: object, left: tuple[str, str], kept_event: str, **detail: object
) -> Iterator[None]:
    """Record ``left`` (kind, target) as an intent before the block; after it, the runtime forgets
    it and the intent is resolved ``done``. A forget that fails leaves the intent pending (cleanup
    retries once this process is gone, ``catalog check`` lists it) and logs ``kept_event``."""
    kind, target = left
    intent_id = intents.record(kind, target, **detail)
    try:
        yield
    finally:
        try:
            forget(runtime, kind, target)  # the adapter removed it already, usually: a cheap check
        except DrsvcError as e:
            event(log, logging.WARNING, kept_event, f"{kind} {target} kept: {e}")
        else:
            intents.resolve(intent_id, "done")
