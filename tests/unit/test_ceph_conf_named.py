"""A Ceph error names the conf file drsvc connected with (``[hot] ceph_conf``), not ``$CEPH_CONF``
(found following runbook ceph-unavailable: the line sent the operator to the wrong file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from drsvc import ceph
from drsvc.errors import DrsvcError


def test_a_connect_error_names_the_conf_in_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        ceph.rados_module()
    except DrsvcError as e:
        pytest.skip(f"no librados binding here: {e}")
    monkeypatch.setenv("CEPH_CONF", "/etc/ceph/not-this-one.conf")
    conf = tmp_path / "site.conf"
    conf.write_text("[global]\nmon_host = 127.0.0.1:1\nauth_client_required = none\n")
    ceph.set_timeouts(ceph.Timeouts(1, 1))
    try:
        with pytest.raises(DrsvcError) as raised:
            ceph.cluster(str(conf))
    finally:
        ceph.set_timeouts(ceph.Timeouts())
    assert f"ceph ({conf})" in str(raised.value), raised.value
    assert "not-this-one" not in str(raised.value)
