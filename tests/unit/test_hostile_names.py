"""Names a tenant chooses, as drsvc decodes and shows them.

A desktop's processes name their RADOS objects, xattrs and omap keys (any bytes) and the files of
their checkpoint archives (any bytes but ``/`` and NUL). Such a name must fail its own desktop with
a one-line error, never a traceback that ends the run for every desktop (the lab proof:
``tests/integration/test_hostile_volumes_lab.py``).
"""

from __future__ import annotations

import pytest

from drsvc import ceph
from drsvc.errors import DrsvcError


def test_a_name_the_binding_cannot_decode_is_a_drsvc_error_naming_its_bytes() -> None:
    pytest.importorskip("rados", reason="python3-rados is not importable here: ceph_errors needs it")
    refused = pytest.raises(DrsvcError, match=r"list rados://desktops/t1: the name 'bad\\\\xffname' is not UTF-8")
    with refused, ceph.ceph_errors("list rados://desktops/t1"):
        b"bad\xffname".decode()  # what the binding does with every name it returns


def test_a_name_from_the_c_api_is_decoded_or_refused_by_name() -> None:
    assert ceph.text("ok/é".encode(), "read xattrs of x") == "ok/é"
    with pytest.raises(ceph.NotUtf8Name, match=r"read omap of x: the name 'k\\\\xfe' is not UTF-8"):
        ceph.text(b"k\xfe", "read omap of x")
