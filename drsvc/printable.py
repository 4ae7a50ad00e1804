"""Text from desktops made safe to show: one line, nothing a terminal or a log reader acts on.

Its own module (no imports) so the CLI's entry point can use it without loading logging.
"""

from __future__ import annotations

__all__ = ["printable"]

_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """``text`` with every character a terminal or a log reader would act on written as an escape.

    Names that reach an operator come from desktops (archive members, held files, object names in
    an error): a newline would forge a log line, an escape sequence (C0 or C1) would rewrite the
    screen, a bidi override would reorder what is shown, and a lone surrogate (a byte that was not
    UTF-8, kept by ``surrogateescape``) would make the write itself fail. Those become ``\\n``,
    ``\\x1b``, ``\\u009b``, ``\\u202e``, ``\\xff`` (the original byte); everything printable stays
    as it is.

    No two texts are shown alike, or a tenant could name an object ``a\\x1bb`` (the four
    characters) to pass for another named with a real escape: a backslash is doubled, ``\\xNN``
    is a byte below 0x80 or a byte that was not UTF-8, and a code point from 0x80 up is ``\\uNNNN``.
    Text without a backslash or anything to escape (every ordinary name) is shown unchanged.
    """
    if text.isprintable() and "\\" not in text:
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif 0xDC80 <= code <= 0xDCFF:  # a byte surrogateescape kept
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out)
