"""Names a tenant chooses, as drsvc decodes and shows them.

A desktop's processes name their RADOS objects, xattrs and omap keys (any bytes) and the files of
their checkpoint archives (any bytes but ``/`` and NUL). Such a name must fail its own desktop with
a one-line error, never a traceback that ends the run for every desktop (the lab proof:
``tests/integration/test_hostile_volumes_lab.py``).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drsvc import ceph
from drsvc.errors import DrsvcError
from drsvc.log import event, setup


def test_a_name_the_binding_cannot_decode_is_a_drsvc_error_naming_its_bytes() -> None:
    pytest.importorskip("rados", reason="python3-rados is not importable here: ceph_errors needs it")
    refused = pytest.raises(DrsvcError, match=r"list rados://desktops/t1: the name 'bad\\\\xffname' is not UTF-8")
    with refused, ceph.ceph_errors("list rados://desktops/t1"):
        b"bad\xffname".decode()  # what the binding does with every name it returns


def test_a_name_from_the_c_api_is_decoded_or_refused_by_name() -> None:
    assert ceph.text("ok/é".encode(), "read xattrs of x") == "ok/é"
    with pytest.raises(ceph.NotUtf8Name, match=r"read omap of x: the name 'k\\\\xfe' is not UTF-8"):
        ceph.text(b"k\xfe", "read omap of x")


# ---------------------------------------------------------------- names shown to an operator
# A name from a desktop (an archive member, a held file, an object named in an error) reaches log
# lines, the CLI's error line and its tables. It may hold a newline (a forged log line), terminal
# escapes (clear the screen, retitle the window, hide text), rich markup (``[/bold]`` made the
# console raise instead of printing) and, from an archive, bytes that are not UTF-8 (surrogates
# a UTF-8 stream refuses to write).
HOSTILE = "x[/bold]\x1b[2J\x9b31m\nforged error line\udcff\u202e"


def _harmless(text: str, lines: int = 1) -> None:
    assert text.count("\n") == lines, text
    assert not any(c in text for c in "\x1b\x9b\u202e"), text
    text.encode("utf-8")  # no lone surrogate left
    assert "\\x1b" in text and "\\n" in text and "\\xff" in text, text


@contextlib.contextmanager
def _drsvc_log(fmt: str) -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger that writes through drsvc's own handler (``fmt``) and nowhere else.

    pytest hangs its log capture on every logger that does not propagate, once it exists; a
    record holding a lone surrogate would reach the test report there, which pytest-xdist cannot
    send to its controller.
    """
    stream = io.StringIO()
    handler = setup(logging.INFO, fmt, stream)
    logging.getLogger("drsvc").removeHandler(handler)
    logger = logging.getLogger("drsvc.hostile-names")
    saved = logger.handlers[:]
    logger.handlers = [handler]
    logger.propagate = False
    try:
        yield logger, stream
    finally:
        logger.handlers = saved
        setup(logging.WARNING, "text")


def test_a_text_log_line_shows_a_hostile_name_on_one_line() -> None:
    with _drsvc_log("text") as (logger, stream):
        event(logger, logging.WARNING, "backup.desktop", f"stat {HOSTILE}: gone", error=HOSTILE)
    _harmless(stream.getvalue())


def test_a_json_log_line_can_be_written_whatever_the_name() -> None:
    with _drsvc_log("json") as (logger, stream):
        event(logger, logging.WARNING, "backup.desktop", f"stat {HOSTILE}", desktop="d1")
    line = stream.getvalue()
    line.encode("utf-8")
    assert "\x9b" not in line and "\u202e" not in line
    assert json.loads(line)["message"].startswith("stat x[/bold]")


def test_the_cli_error_line_shows_a_hostile_name_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from drsvc.cli.main import _report

    _report(DrsvcError(f"stat rados://desktops/t1/{HOSTILE}: gone"), False, False)
    _harmless(capsys.readouterr().err)


def test_backup_progress_and_table_print_a_hostile_error_as_text() -> None:
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from drsvc.backup import BackupReport
    from drsvc.backup_commit import Outcome
    from drsvc.cli.backup_cmd import progress_printer, render_report

    stream = io.StringIO()
    console = Console(file=stream, highlight=False, width=400)
    outcome = Outcome(desktop="d1", point_id="p1", status="failed", error=f"member {HOSTILE} refused")
    progress_printer(SimpleNamespace(err=console))("desktop", outcome=outcome)
    assert "x[/bold]" in stream.getvalue()
    _harmless(stream.getvalue())
    table = io.StringIO()
    render_report(BackupReport(job_id=1, policy=None, outcomes=[outcome]), Console(file=table, width=400))
    assert "x[/bold]" in table.getvalue()
    assert "\x1b" not in table.getvalue() and "forged error line" in table.getvalue().splitlines()[1]


def test_points_show_prints_a_hostile_reason_as_text(deploy) -> None:
    """A failed point's reason quotes what failed, names from the desktop included; ``points show``
    printed it as rich markup (``[/bold]`` raised instead of printing) with its escapes live."""
    deploy.desktop("alice")
    deploy.world.set_knobs("alice", read_error=f"object {HOSTILE.replace(chr(0xDCFF), '')}")  # knobs are JSON
    assert deploy.cli("backup", "alice").code == 1
    (point,) = deploy.cli("--json", "points", "list").json()
    result = deploy.cli("points", "show", point["id"])
    assert result.code == 0, result.output
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("reason")]
    assert "x[/bold]" in line and "forged error line" in line
    assert not any(c in result.stdout for c in "\x1b\x9b\u202e")
    result.stdout.encode("utf-8")


def test_status_prints_a_hostile_last_error_as_text(deploy) -> None:
    """``status`` shows each failing desktop's last error, which quotes names from the desktop, in a
    rich table cell: as markup (``[/bold]`` made the operator's ``status`` raise, for every
    desktop) with its escapes live. It goes through ``shown`` like every other view."""
    deploy.desktop("alice")
    deploy.world.set_knobs("alice", read_error=f"x{HOSTILE.replace(chr(0xDCFF), '')}"[:70])
    assert deploy.cli("backup", "--policy", "standard").code == 1
    result = deploy.cli("status", "--all")
    assert "Traceback" not in result.output and result.code in (0, 5), result.output
    assert "x[/bold]" in result.stdout, result.stdout
    assert "PROBLEM" in result.stdout and result.stdout.count("forged error lin") == 2, result.stdout  # table, problem
    assert not any(c in result.stdout for c in "\x1b\x9b\u202e")


def test_drill_prints_a_hostile_reason_as_text(deploy) -> None:
    """A drill's table shows each failed drill's reason, which quotes what failed (CRIU's words on
    a file of the desktop, an archive member): as markup it made ``drill`` raise after every
    drill had run, so the operator saw no result at all."""
    deploy.desktop("alice")
    assert deploy.cli("backup", "alice").code == 0
    deploy.world.set_knobs("alice", restore_error=f"file {HOSTILE.replace(chr(0xDCFF), '')}")
    result = deploy.cli("drill", "alice")
    assert "Traceback" not in result.output and result.code == 1, result.output
    assert "x[/bold]" in result.stdout and "forged error line" in result.stdout, result.stdout
    assert not any(c in result.stdout for c in "\x1b\x9b\u202e")


def test_a_restore_storm_prints_a_hostile_reason_as_text(deploy) -> None:
    """A storm's table (``restore --all``, ``site recover``, ``site drill``) showed each failed
    desktop's error as markup: one tenant's ``[/bold]`` made the whole report raise once every
    desktop had been restored, in the hour an operator needs it most."""
    deploy.desktop("alice")
    deploy.desktop("bob", seed=2)
    assert deploy.cli("backup", "alice", "bob").code == 0
    deploy.world.set_knobs("bob", restore_error=f"file {HOSTILE.replace(chr(0xDCFF), '')}")
    result = deploy.cli("restore", "--all", "--force")
    assert "Traceback" not in result.output and result.code == 6, result.output
    assert "x[/bold]" in result.stdout and "forged error line" in result.stdout, result.stdout
    assert not any(c in result.stdout for c in "\x1b\x9b\u202e")


def test_a_markdown_report_cell_keeps_a_hostile_error_in_its_row() -> None:
    pytest.importorskip("jinja2", reason="the report extra (jinja2) is not installed")
    from drsvc.report.render import _md_cell

    cell = _md_cell("restore failed: member a\r# All drills passed\x1b[8m|b")
    assert "\r" not in cell and "\x1b" not in cell and "\n" not in cell
    assert cell.endswith("\\|b") and "\\r# All drills passed" in cell


def _read_back(shown: str) -> str:
    """What an operator reads ``printable``'s text as: each escape undone (the test's own reading,
    not drsvc's). ``\\xNN`` of 0x80 or more is a byte that was not UTF-8 (kept by surrogateescape)."""
    out, i = [], 0
    while i < len(shown):
        ch = shown[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        kind = shown[i + 1]
        if kind in "\\nrt":
            out.append({"\\": "\\", "n": "\n", "r": "\r", "t": "\t"}[kind])
            i += 2
            continue
        width = {"x": 2, "u": 4, "U": 8}[kind]
        code = int(shown[i + 2 : i + 2 + width], 16)
        out.append(chr(0xDC00 + code) if kind == "x" and code >= 0x80 else chr(code))
        i += 2 + width
    return "".join(out)


def test_a_name_that_spells_an_escape_never_reads_as_the_character_it_spells() -> None:
    from drsvc.printable import printable

    # a tenant names an object with the text of an escape, beside another it wants to pass for
    assert printable("report\\x1b") != printable("report\x1b")
    assert printable("a\\nb") != printable("a\nb")
    assert printable("\\u202e") != printable("\u202e")
    # a byte that was not UTF-8 and the code point of the same number are two names
    assert printable("\udc9b") != printable("\x9b")
    assert printable("\udca0") != printable("\xa0")
    for name in ("report\\x1b", "a\\nb", "\\", "x\\\\y", "\udc9b\x9b\xa0", HOSTILE):
        assert _read_back(printable(name)) == name, name


@given(st.text(alphabet=st.characters(codec=None)))
def test_every_name_shows_as_text_that_reads_back_as_that_name_alone(name: str) -> None:
    from drsvc.printable import printable

    shown = printable(name)
    assert shown.isprintable(), shown
    assert _read_back(shown) == name  # so no two names show the same


# what ``str.isprintable`` calls printable: every category but Other and Separator (space excepted)
PLAIN = st.characters(blacklist_characters="\\", blacklist_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"))


@given(st.text(alphabet=PLAIN))
def test_a_plain_name_shows_as_it_is(name: str) -> None:
    from drsvc.printable import printable

    assert printable(name) == name
    assert printable(f"desk 1/{name}.img") == f"desk 1/{name}.img"


# ---------------------------------------------------------------- metadata a desktop writes
def test_the_metadata_budget_bounds_one_object_and_the_volume(monkeypatch: pytest.MonkeyPatch) -> None:
    from drsvc.volumes import base

    monkeypatch.setattr(base, "OBJECT_METADATA_MAX", 1000)
    monkeypatch.setattr(base, "VOLUME_METADATA_MAX", 2500)
    budget = base.MetadataBudget("rados://desktops/t1 at snapshot s")
    budget.check("a", 1000)  # at the bound: taken
    with pytest.raises(base.MetadataTooLarge, match=r"rados://desktops/t1 at snapshot s/big: more than"):
        budget.check("big", 1001)  # a reader stops paging here
    with pytest.raises(base.MetadataTooLarge, match="/x: more than"):
        budget.take("x", {"k": b"v" * 600}, {"o": b"w" * 600})  # xattrs and omap together
    for name in "abc":
        budget.take(name, {}, {"é": b"v" * (798 - base.ENTRY_COST)})  # names count in UTF-8 bytes: 800 each
    with pytest.raises(base.MetadataTooLarge, match=r"in the volume \(at d\)"):
        budget.take("d", {}, {"k": b"v" * 100})


def test_many_tiny_omap_keys_count_as_the_memory_they_take(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bounds counted names and values alone, but drsvc holds each key and value as Python
    objects in a dict: 2 million omap keys of 8 bytes and empty values (15 MiB as stored) grew the
    capture's memory by 195 MiB in the lab, so a desktop within the 128 MiB volume bound made the
    backup process hold about 1.7 GiB. Each entry now also costs ``ENTRY_COST``."""
    from drsvc.volumes import base

    monkeypatch.setattr(base, "OBJECT_METADATA_MAX", 64 << 20)
    tiny = {f"{n:08x}": b"" for n in range(100_000)}  # 0.8 MB as stored
    assert base.metadata_bytes(tiny) >= 100_000 * (8 + 64)
    budget = base.MetadataBudget("rados://desktops/t1 at snapshot s")
    monkeypatch.setattr(base, "VOLUME_METADATA_MAX", 4 << 20)
    with pytest.raises(base.MetadataTooLarge, match="in the volume"):
        budget.take("many-keys", {}, tiny)


def test_a_captures_listing_is_bounded_a_restores_is_not(monkeypatch: pytest.MonkeyPatch) -> None:
    """A capture stops listing past ``VOLUME_OBJECTS_MAX`` names; a restore that removes what is extra
    (rollback, write, purge) must see every name, or a desktop that made millions could not be
    restored. The lab proof of the capture: ``tests/integration/test_hostile_volumes_lab.py``."""
    from types import SimpleNamespace

    from drsvc.volumes import base
    from drsvc.volumes.rados_scan import list_names

    pytest.importorskip("rados", reason="python3-rados is not importable here: ceph_errors needs it")
    monkeypatch.setattr(base, "VOLUME_OBJECTS_MAX", 3)
    io = SimpleNamespace(list_objects=lambda: iter(SimpleNamespace(key=f"o{i}", locator_key=None) for i in range(5)))
    assert list_names(io, "rados://desktops/t1") == [f"o{i}" for i in range(5)]
    with pytest.raises(base.TooManyObjects, match="rados://desktops/t1: more than 3 objects"):
        list_names(io, "rados://desktops/t1", bounded=True)


class _Listing:
    """The pacific binding's object iterator: it decodes each name (and locator) after advancing,
    so a name that is not UTF-8 raises, and the next call goes on with the next object."""

    def __init__(self, entries: list[tuple[bytes, bytes | None]]) -> None:
        self._entries = iter(entries)

    def __iter__(self) -> _Listing:
        return self

    def __next__(self) -> object:
        from types import SimpleNamespace

        name, locator = next(self._entries)
        return SimpleNamespace(key=name.decode(), locator_key=locator.decode() if locator else None)


def test_a_capture_refuses_what_the_binding_cannot_address_a_restore_sets_it_apart() -> None:
    """An object with a locator key read as absent by name alone: a backup left it out of the point
    without a word. A capture's listing now refuses it (and a name that is not UTF-8, as before); a
    restore's listing sets both apart for ``rados_odd`` and lists on. The lab proof, with the
    removal through the C API: ``tests/integration/test_hostile_names_lab.py``."""
    from types import SimpleNamespace

    from drsvc.volumes.rados_scan import list_names

    pytest.importorskip("rados", reason="python3-rados is not importable here: ceph_errors needs it")
    entries: list[tuple[bytes, bytes | None]] = [(b"a", None), (b"hid", b"L1"), (b"b\xffc", None), (b"z", None)]
    io = SimpleNamespace(list_objects=lambda: _Listing(entries))
    with pytest.raises(ceph.LocatorKeyed, match=r"the object 'hid' has a locator key \('L1'\)"):
        list_names(io, "rados://desktops/t1", bounded=True)
    entries.pop(1)
    with pytest.raises(ceph.NotUtf8Name, match=r"b\\\\xffc"):
        list_names(io, "rados://desktops/t1")
    entries.insert(1, (b"hid", b"L1"))
    odd: list[str] = []
    assert list_names(io, "rados://desktops/t1", odd=odd) == ["a", "z"]
    assert odd == ["hid", "b\\xffc"]
