"""Bodies of files in chats (``web.files``): settings, usage, uploads and downloads."""

from __future__ import annotations

import attrs

from web.wire import items, number, text

# ---------------------------------------------------------------- files in chats


@attrs.frozen(kw_only=True)
class FileSettings:
    """A workspace's limits for files in chats; the server's own limits cap them."""

    max_file_bytes: int = attrs.field(**number(minimum=1, maximum=2**40))
    max_storage_bytes: int = attrs.field(**number(minimum=0, maximum=2**50))
    allowed_types: tuple[str, ...] = attrs.field(**items(max_items=20, max_len=100))


@attrs.frozen(kw_only=True)
class FileUsage:
    """How much of the workspace's file quota its files take."""

    used_bytes: int
    max_storage_bytes: int


@attrs.frozen(kw_only=True)
class FileOut:
    """An uploaded file: send its ``id`` in ``send_message.attachments``."""

    id: str
    name: str
    type: str  # sniffed from the bytes
    size: int
    conversation_id: str | None


@attrs.frozen(kw_only=True)
class FileUploadQuery:
    name: str = attrs.field(**text(max_len=200, min_len=1))


@attrs.frozen(kw_only=True)
class WidgetFileUploadQuery:
    key: str = attrs.field(**text(max_len=200, min_len=1))
    name: str = attrs.field(**text(max_len=200, min_len=1))


@attrs.frozen(kw_only=True)
class WidgetFileQuery:
    key: str = attrs.field(**text(max_len=200, min_len=1))
