"""What a file is, from its first bytes: the only type the server believes.

The sender's file name and ``Content-Type`` are never trusted: a ``.png`` that is HTML stays
HTML here, and HTML, SVG and anything unknown are never served as what they claim (they are not
in any allow-list and would be sent as ``application/octet-stream`` anyway). Small on purpose:
the formats chat tools accept in practice, recognised by their magic numbers.
"""

from __future__ import annotations

from typing import Final

OCTET_STREAM: Final = "application/octet-stream"
# Types shown inline (as <img>) by the widget and the console; everything else is a link.
INLINE_IMAGES: Final = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
KNOWN_TYPES: Final = (
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "application/pdf",
    "application/zip",
    "text/plain",
)
_TEXT_CONTROLS: Final = frozenset(range(0x20)) - {0x09, 0x0A, 0x0C, 0x0D}


def sniff(data: bytes) -> str:
    """The MIME type of ``data`` by content; ``application/octet-stream`` when unknown."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith(b"%PDF-"):
        return "application/pdf"
    if data.startswith(b"PK\x03\x04"):
        return "application/zip"
    if _is_plain_text(data):
        return "text/plain"
    return OCTET_STREAM


def _is_plain_text(data: bytes) -> bool:
    """UTF-8 without control characters, and nothing a browser would sniff as markup."""
    if not data:
        return False
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    if any(ord(ch) in _TEXT_CONTROLS or ord(ch) == 0x7F for ch in text):
        return False
    head = text.lstrip()[:512].lower()
    return not head.startswith(("<", "\ufeff<"))
