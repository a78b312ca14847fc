"""The file type comes from the bytes: names and headers are never believed."""

from __future__ import annotations

import pytest

from web.sniff import OCTET_STREAM, sniff


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"\x89PNG\r\n\x1a\n....", "image/png"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "image/jpeg"),
        (b"GIF89a\x01\x00", "image/gif"),
        (b"RIFF\x10\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"%PDF-1.7\n", "application/pdf"),
        (b"PK\x03\x04rest", "application/zip"),
        ("order #42: déjà vu\n".encode(), "text/plain"),
        # Markup is never plain text (a browser could sniff it as HTML), nor anything else.
        (b"<!doctype html><script>alert(1)</script>", OCTET_STREAM),
        (b"  \n<svg xmlns='http://www.w3.org/2000/svg'/>", OCTET_STREAM),
        ("\ufeff<html>".encode(), OCTET_STREAM),
        (b"text with a NUL \x00 byte", OCTET_STREAM),
        (b"\xc3\x28 invalid utf-8", OCTET_STREAM),
        (b"", OCTET_STREAM),
    ],
)
def test_sniff_recognises_by_content(data: bytes, kind: str) -> None:
    assert sniff(data) == kind
