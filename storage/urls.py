"""Database URLs: which backend a URL names (a leaf module: storage.crypto needs it too)."""

from __future__ import annotations

from storage.errors import InvalidDatabaseURL

__all__ = ["backend_of"]


def backend_of(url: str) -> tuple[str, str]:
    """("sqlite", path) or ("postgresql", dsn) for a database URL; ``InvalidDatabaseURL``.

    ``sqlite:///rel/path`` is relative to the working directory, ``sqlite:////abs/path``
    absolute.
    """
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if not path or path == ":memory:":
            raise InvalidDatabaseURL(f"{url!r}: give a file path, e.g. sqlite:///data/livechat.db")
        return "sqlite", path
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql", url
    raise InvalidDatabaseURL(
        f"unsupported database URL {url!r}: use sqlite:///path or postgresql://user@host/db"
    )
