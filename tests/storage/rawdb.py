"""The raw bytes a database holds, for tests that grep them for plaintext."""

from __future__ import annotations

import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlsplit


def raw_database(database_url: str, tmp_path: Path) -> bytes:
    """Every byte the database holds: SQLite's files (main, -wal, -shm) and the file store, or
    PostgreSQL's test schema as ``pg_dump`` writes it (data of every table)."""
    if database_url.startswith("sqlite"):
        paths = [p for p in tmp_path.iterdir() if p.is_file() and p.name.startswith("test.db")]
        paths += list((tmp_path / "files").glob("*"))
        return b"".join(p.read_bytes() for p in paths)
    parts = urlsplit(database_url)
    schema = parse_qs(parts.query)["search_path"][0]
    done = subprocess.run(
        ["pg_dump", "--data-only", "--schema", schema, database_url.split("?", 1)[0]],
        capture_output=True,
        timeout=60,
        check=True,
    )
    return done.stdout + b"".join(p.read_bytes() for p in (tmp_path / "files").glob("*"))
