"""Backups through the server: private files, and the last good backup in /metrics and the API."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import trio

from tests.web.client import Http, bearer
from tests.web.server import TestServer
from web.storage_commands import register


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="livechat")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    status: int = args.handler(args)
    return status


def metric(text: str, name: str) -> float:
    values = [line.split()[1] for line in text.splitlines() if line.startswith(name + " ")]
    assert len(values) == 1, text
    return float(values[0])


async def test_api_backup_is_0600_in_a_0700_directory_whatever_the_umask(
    srv: TestServer, tmp_path: Path
) -> None:
    owner = bearer(srv.base_url, srv.acme.owner.token)
    directory = tmp_path / "backups"
    directory.mkdir(mode=0o755)  # an existing, open backup directory is closed too
    directory.chmod(0o755)
    old = os.umask(0)
    try:
        created = await owner.post("/api/v1/backups")
    finally:
        os.umask(old)
    assert created.status == 201, created.body
    path = Path(created.json()["path"])
    assert path.parent == directory.resolve()
    assert path.stat().st_mode & 0o777 == 0o600
    assert directory.stat().st_mode & 0o777 == 0o700


async def test_last_good_backup_shows_in_metrics_and_the_operator_api(
    srv: TestServer, tmp_path: Path
) -> None:
    operator = bearer(srv.base_url, srv.acme.owner.token)
    anon = Http(srv.base_url)
    assert (await operator.get("/api/v1/backups/last")).json() == {
        "path": None,
        "size_bytes": None,
        "finished_at": None,
        "age_s": None,
    }
    text = (await anon.get("/metrics")).body.decode()
    assert metric(text, "livechat_backup_last_success_timestamp_seconds") == 0

    out = tmp_path / "nightly" / "livechat.db"
    argv = ("backup", "--database-url", srv.database_url, "--out", str(out))
    assert await trio.to_thread.run_sync(lambda: run_cli(*argv)) == 0

    last = (await operator.get("/api/v1/backups/last")).json()
    assert last["path"] == str(out) and last["size_bytes"] == out.stat().st_size
    assert 0 <= last["age_s"] < 600
    text = (await anon.get("/metrics")).body.decode()
    assert metric(text, "livechat_backup_last_success_timestamp_seconds") == round(
        last["finished_at"], 3
    )
    assert metric(text, "livechat_backup_last_size_bytes") == out.stat().st_size
    # Only a server operator sees where backups go.
    globex = bearer(srv.base_url, srv.globex.owner.token)
    assert (await globex.get("/api/v1/backups/last")).status == 403
