"""drsvc restore DESKTOP --object NAME... | --prefix P: the single-object side of ``restore``.

``restore_cmd`` hands over here when ``--object`` or ``--prefix`` is given; the job is
``drsvc.granular.objects``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from drsvc.cli._common import App
from drsvc.errors import InvalidInput
from drsvc.granular.objects import ObjectPlan, ObjectRestoreJob, ObjectResult
from drsvc.granular.scope import Scope
from drsvc.printable import printable
from drsvc.restore import parse_time
from drsvc.units import format_bytes


def render_plan(plan: ObjectPlan) -> list[str]:
    doc = plan.document()
    where = f"into {doc['target']}" + (" (replacing)" if doc["mode"] == "overwrite" else "")
    if doc["mode"] == "keep":
        where += f" (current objects kept as NAME.drsvc-{doc['point_id']})"
    if doc["mode"] == "to-dir":
        where = f"as files beneath {doc['target']}"
    return [
        f"restore {len(doc['objects'])} object(s), {format_bytes(doc['bytes'])}, of {doc['desktop']} "
        f"from point {doc['point_id']} ({doc['taken_at'][:19]}Z) {where}; copies: {', '.join(doc['tiers'])}"
    ]


def render_result(result: ObjectResult) -> list[str]:
    doc = result.document()
    lines = render_plan(result.plan)
    for o in doc["objects"]:  # names are the desktop's: one escaped line each (printed without markup)
        extra = f", current kept as {printable(o['kept_as'])}" if o.get("kept_as") else ""
        extra += f" -> {printable(o['path'])}" if o.get("path") else ""
        lines.append(f"  {o['status']:<10} {printable(o['name'])} ({format_bytes(o['size'])}{extra})")
    timing = f"{doc['seconds']:.2f} s (plan {doc['plan_seconds']:.2f} s; restore #{doc['restore_id']})"
    if doc["tier"]:
        lines.append(f"restored {format_bytes(doc['bytes'])} from the {doc['tier']} copy in {timing}")
    else:  # every object already as the point holds it: no copy was read
        lines.append(f"nothing to restore, every object is as the point holds it: {timing}")
    return lines


def restore_objects(
    app: App,
    desktop: str,
    *,
    objects: tuple[str, ...],
    prefix: str | None,
    at: str | None,
    point_id: str | None,
    tier: str | None,
    copy: str | None,
    overwrite: bool,
    to_dir: Path | None,
    tenant: str | None,
    dry_run: bool,
    refused: dict[str, Any],
) -> int:
    """Plan and run a single-object restore; ``refused`` = whole-desktop options given alongside."""
    given = [name for name, value in refused.items() if value]
    if given:
        raise InvalidInput(f"{', '.join(given)} restore(s) a whole desktop; not with --object/--prefix")
    job = ObjectRestoreJob(app.services, Scope(app.catalog, tenant, "restore-objects"))
    plan = job.plan(
        desktop,
        objects=list(objects) or None,
        prefix=prefix,
        point_id=point_id,
        at=parse_time(at) if at else None,
        tier=tier,
        copy=copy,
        overwrite=overwrite,
        to_dir=to_dir,
    )
    if dry_run:
        app.emit({**plan.document(), "dry_run": True}, lambda out: out.print("\n".join(render_plan(plan))))
        return 0
    result = job.run(plan)
    app.emit(result.document(), lambda out: out.print("\n".join(render_result(result)), markup=False))
    return 0
