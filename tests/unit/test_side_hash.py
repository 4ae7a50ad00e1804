"""The stream hash on a thread of its own (drsvc/chunks/sidehash.py): same digest, bounded, errors surface."""

from __future__ import annotations

import random
import threading
import time

import blake3
import pytest

from drsvc.chunks.sidehash import SideHasher


def test_the_digest_is_the_sequential_one_whatever_the_pieces() -> None:
    rng = random.Random(3)
    for _ in range(50):
        pieces = [rng.randbytes(rng.randint(0, 3000)) for _ in range(rng.randint(0, 40))]
        with SideHasher(blake3.blake3(), batch=rng.randint(1, 5000), window=rng.randint(1, 3)) as side:
            for p in pieces:
                side.update(p)
            assert side.hexdigest() == blake3.blake3(b"".join(pieces)).hexdigest()


class Slow:
    """A hasher that records how many batches are queued while it works, and can fail."""

    def __init__(self, fail_at: int = -1) -> None:
        self.calls = 0
        self.fail_at = fail_at
        self.inner = blake3.blake3()

    def update(self, data: bytes) -> None:
        time.sleep(0.002)
        if self.calls == self.fail_at:
            raise OSError("hash worker failed")
        self.calls += 1
        self.inner.update(data)

    def hexdigest(self) -> str:
        return self.inner.hexdigest()


def test_the_queue_never_holds_more_than_the_window() -> None:
    side = SideHasher(Slow(), batch=10, window=2)
    most = 0
    with side:
        for _ in range(40):
            side.update(b"x" * 10)  # each update is one batch
            most = max(most, len(side._pending))
        side.hexdigest()
    assert most <= 2


def test_a_failing_hash_surfaces_as_its_error_and_stops_the_worker() -> None:
    side = SideHasher(Slow(fail_at=3), batch=1, window=2)
    with pytest.raises(OSError, match="hash worker failed"), side:
        for _ in range(20):
            side.update(b"ab")
        side.hexdigest()
    assert not [t for t in threading.enumerate() if t.name.startswith("drsvc-hash") and t.is_alive()]
