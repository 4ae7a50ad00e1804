"""Key providers: who holds the key that wraps the tenants' data keys (envelope encryption).

drsvc encrypts a tenant's objects with the tenant's **data key**; a data key is stored in the
chunk store itself, *wrapped* (encrypted and authenticated) by the **key-encryption key** a
provider holds (``drsvc.chunks.keyring``). The provider is the seam for an external KMS: it only
wraps and unwraps small payloads, so a HashiCorp Vault provider would call Transit's
``encrypt``/``decrypt`` on ``keys/<name>`` with the same associated data (Vault's "context"),
and Vault's policies would decide who may unwrap which tenant's key.

Built here, because it can be tested for real here: ``FileKeyProvider``, the master key in the key
file (``[keys] file``). It also supplies the **fleet key** -- the master key itself used as a data
key: the store config, node-agent result documents, every object of a ``[keys] scope = "fleet"``
installation and everything written before per-tenant keys are sealed with it. A provider without
a fleet key (an external KMS that never releases its key) could serve tenant scope only, and the
store config would need a wrapped store key of its own: not built, and said so in docs/security.md.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from drsvc.crypto import Cipher, Keys

_WRAP_PURPOSE = "data key wrapping"


@runtime_checkable
class KeyProvider(Protocol):
    """Wraps and unwraps data keys with a key-encryption key it holds."""

    @property
    def name(self) -> str:
        """What kind of provider this is (``file``; later ``vault``), recorded beside each wrapped key."""
        ...

    @property
    def fingerprint(self) -> str:
        """A public id of the key-encryption key (a wrapped key names the one that unwraps it)."""
        ...

    def wrap(self, payload: bytes, aad: bytes) -> bytes:
        """Encrypt and authenticate ``payload`` (a data key and its metadata) bound to ``aad``."""
        ...

    def unwrap(self, blob: bytes, aad: bytes) -> bytes:
        """The payload ``wrap`` sealed for ``aad``; ``IntegrityError`` if tampered or not this KEK's."""
        ...

    def fleet_keys(self) -> Keys:
        """The fleet key (see the module docstring)."""
        ...


class FileKeyProvider:
    """The master key of the key file: wraps with an AES-256-GCM subkey derived for that alone."""

    name = "file"

    def __init__(self, master: Keys) -> None:
        if master.tagged:
            raise ValueError("the master key is the fleet key, not a tenant's data key")
        self._master = master
        self._wrap = Cipher(master.derive(_WRAP_PURPOSE))

    @property
    def fingerprint(self) -> str:
        """The master key's fingerprint (also in every store's config)."""
        return self._master.fingerprint

    def wrap(self, payload: bytes, aad: bytes) -> bytes:
        """Seal ``payload`` with the wrapping subkey, bound to ``aad``."""
        return self._wrap.seal(payload, aad)

    def unwrap(self, blob: bytes, aad: bytes) -> bytes:
        """Open what ``wrap`` sealed for ``aad``."""
        return self._wrap.open_(blob, aad)

    def fleet_keys(self) -> Keys:
        """The master key itself."""
        return self._master
