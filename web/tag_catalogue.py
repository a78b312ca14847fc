"""The workspace's tag catalogue: when it is not empty, chats may carry only its tags.

An empty catalogue (a new workspace, or one that never set ``PUT /tags``) accepts any tag, so
tagging works before an admin has curated a list. Checked at the edge (HTTP and WebSocket)
before the command reaches the engine; removing a tag is always allowed, so tags left over from
before a catalogue change can be cleaned up.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

UNKNOWN_TAG = "unknown_tag"  # stable wire code, docs/protocol.md and docs/admin-api.md


def catalogue(settings: Mapping[str, Any]) -> frozenset[str]:
    return frozenset(str(t) for t in settings.get("tags") or ())


def uncatalogued(settings: Mapping[str, Any], tags: Iterable[str]) -> list[str]:
    """Tags not in a non-empty catalogue, in the order given; [] when all may be added."""
    allowed = catalogue(settings)
    if not allowed:
        return []
    return [t for t in tags if t not in allowed]


def unknown_tag_message(missing: list[str]) -> str:
    return "not in the tag catalogue: " + ", ".join(repr(t) for t in missing[:5])
