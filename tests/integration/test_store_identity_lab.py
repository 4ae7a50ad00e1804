"""A tier's store is the one its copies went to, on the lab's radosgw and RADOS (drsvc.store_identity).

A mistyped ``[cold]`` bucket used to be created by the first command that opened it and filled by
``tier``; now every command refuses it (exit 2, naming both buckets) and radosgw never sees a
create. A hot store emptied under drsvc (the pool lost and recreated) is refused until
``drsvc catalog adopt-store hot`` says a new one is wanted (runbook ceph-pool-lost).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import botocore.exceptions
import pytest
from test_cold_tier import _purge_bucket, backup, cold_env, s3


@pytest.fixture
def bucket(lab: Any) -> Iterator[str]:
    name = f"drsvc-it-{uuid.uuid4().hex[:10]}"
    yield name
    _purge_bucket(lab, name)
    _purge_bucket(lab, name + "x")  # only if the test failed: a refused bucket is never created


def _exists(bucket: str) -> bool:
    try:
        s3().head_bucket(Bucket=bucket)
    except botocore.exceptions.ClientError:
        return False
    return True


def test_a_mistyped_cold_bucket_is_refused_and_never_created(drsvc_env: Any, make_fleet: Any, bucket: str) -> None:
    [desk] = make_fleet(1)
    cold_env(drsvc_env, bucket)
    drsvc_env.policy("std", [desk], tiering={"after": "1s"})
    [first] = backup(drsvc_env, desk)
    drsvc_env.wait_due_for_tier(first["point_id"])
    assert drsvc_env.cli("tier").code == 0
    assert s3().head_object(Bucket=bucket, Key="fleet/identity")["ContentLength"] > 0

    cold_env(drsvc_env, bucket + "x")  # one letter more
    [second] = backup(drsvc_env, desk)
    drsvc_env.wait_due_for_tier(second["point_id"])
    for args, code in ((("tier",), 2), (("verify", "--all"), 6)):  # verify checks the hot copies, names the cold
        r = drsvc_env.cli(*args)
        assert r.code == code, r.output
        [line] = [ln for ln in r.stderr.splitlines() if ln.startswith("drsvc: error:")]
        assert f"s3://{bucket}x/fleet" in line and f"s3://{bucket}/fleet" in line, line
        assert "drsvc catalog adopt-store cold" in line, line
    assert not _exists(bucket + "x"), "radosgw never got a create for the mistyped bucket"

    cold_env(drsvc_env, bucket)
    assert drsvc_env.cli("tier").code == 0
    assert drsvc_env.cli("verify", "--all").code == 0


def test_an_emptied_hot_store_is_refused_until_adopted(drsvc_env: Any, make_fleet: Any) -> None:
    [desk] = make_fleet(1)
    drsvc_env.policy("std", [desk])
    backup(drsvc_env, desk)
    services = drsvc_env.services()
    store = services.hot.store
    store.delete_many(list(store.list("")))  # the pool lost and recreated: empty
    services.catalog.close()
    r = drsvc_env.cli("backup", desk)
    assert r.code == 2 and "holds no drsvc store" in r.stderr and "adopt-store hot" in r.stderr, r.output
    checked = drsvc_env.cli("verify", "--all")  # runbook ceph-pool-lost: the hot copies named as not checked
    assert checked.code == 6 and "hot copies could not be checked" in checked.stderr, checked.output
    assert drsvc_env.cli("catalog", "adopt-store", "hot").code == 0
    backup(drsvc_env, desk)
    backup(drsvc_env, desk)
