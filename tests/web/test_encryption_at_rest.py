"""The server encrypts visitors' personal data at rest with a master key it generates on SQLite."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from storage import MasterKeyRing, open_backend
from storage._vault import read_vault_file
from storage.crypto import new_master_key_text, parse_master_keys
from tests.web.client import bearer, open_peer, visitor
from tests.web.server import TestServer, free_port, run_test_server, test_settings
from web.errors import ConfigError
from web.services import master_keys

EMAIL = "quintessa.plaintext@example.org"
NAME = "Quintessa Unmistakable"


async def test_first_start_generates_a_private_master_key_and_personal_data_is_sealed(
    tmp_path: Path,
) -> None:
    async with run_test_server(tmp_path) as srv:
        key_file = tmp_path / "livechat.db.master-key"
        assert key_file.is_file() and oct(key_file.stat().st_mode & 0o777) == "0o600"
        async with open_peer(
            srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin
        ) as vis:
            hello = await visitor(srv, vis)
            reply = await vis.request("update_profile", email=EMAIL, name=NAME)
            assert reply["type"] == "result", reply
        visitor_id = hello["visitor_id"]
        owner = bearer(srv.base_url, srv.acme.owner.token)
        profile = (await owner.get(f"/api/v1/visitors/{visitor_id}")).json()
        assert EMAIL in str(profile) and NAME in str(profile)  # agents read it as before
        assert await _seen_in(tmp_path, srv) == []
    assert await _seen_in(tmp_path, srv) == []  # and after shutdown (WAL checkpointed)


async def _seen_in(directory: Path, srv: TestServer) -> list[str]:
    found = []
    for path in directory.iterdir():
        if path.is_file() and path.name.startswith("livechat.db"):
            data = path.read_bytes()
            found += [f"{path.name}: {s}" for s in (EMAIL, NAME) if s.encode() in data]
    return found


def test_postgresql_without_a_master_key_refuses_to_start(tmp_path: Path) -> None:
    settings = test_settings(
        tmp_path, database_url="postgresql://nobody@127.0.0.1:1/none", master_key=""
    )
    with pytest.raises(ConfigError, match="PostgreSQL needs a master key"):
        master_keys(settings)


def test_a_malformed_master_key_is_refused_by_name(tmp_path: Path) -> None:
    settings = test_settings(tmp_path, master_key="dG9vIHNob3J0")  # "too short"
    with pytest.raises(ConfigError, match="master key: a master key must be 32 bytes"):
        master_keys(settings)


async def test_a_workspace_backup_on_the_server_holds_only_ciphertext_and_restores_with_the_key(
    tmp_path: Path,
) -> None:
    word = "Xanthoriaparietina"
    async with run_test_server(tmp_path) as srv:
        async with open_peer(
            srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin
        ) as vis:
            await visitor(srv, vis)
            assert (await vis.request("update_profile", email=EMAIL))["type"] == "result"
            sent = await vis.request("send_message", client_msg_id="m-1", text=f"about {word}")
            assert sent["type"] == "result", sent
        owner = bearer(srv.base_url, srv.acme.owner.token)
        download = await owner.get("/api/v1/export")
        assert word in download.body.decode() and EMAIL in download.body.decode()  # readable
        found = (await owner.get(f"/api/v1/conversations/search?q={word.lower()}")).json()
        assert [h["snippet"] for h in found["hits"]] == [f"about {word}"]
        assert found["hits"][0]["snippet_parts"][-1] == {"text": word, "match": True}
        made = await owner.post("/api/v1/backups")
        assert made.status == 201, made.body
        path = Path(made.json()["path"])
    data = path.read_bytes()
    assert word.encode() not in data and EMAIL.encode() not in data
    assert b'"table":"data_keys"' in data  # wrapped by the master key, which is not in it

    ring = MasterKeyRing(parse_master_keys((tmp_path / "livechat.db.master-key").read_text()))

    async def lines() -> AsyncIterator[str]:
        for line in data.decode().splitlines():
            yield line

    async with open_backend(f"sqlite:///{tmp_path}/restored.db", keyring=ring) as restored:
        await restored.import_jsonl(lines())
        # The visitor keys are not in the backup: they come from the server's key vault.
        vault = read_vault_file(str(tmp_path / "livechat.db.vault"))
        assert await restored.import_vault_rows(vault) >= 1
        assert await restored.check_data_keys() == 1
        hits = await restored.search(srv.acme.id, word)
        assert [h.body for h in hits] == [f"about {word}"]


async def test_a_wrong_master_key_stops_the_server_at_start(tmp_path: Path) -> None:
    async with run_test_server(tmp_path) as first:
        # The first start generates the key; a visitor makes the workspace's data key.
        async with open_peer(
            first.visitor_ws_url(first.acme.widget_key), origin=first.acme.site_origin
        ) as vis:
            await visitor(first, vis)
        seeded = (first.acme, first.globex)
    (tmp_path / "livechat.db.master-key").write_text(new_master_key_text() + "\n")
    with pytest.raises(ConfigError, match="master key: data key of 'workspace:"):
        async with run_test_server(tmp_path, seeded=seeded):
            pass


def test_serve_with_a_wrong_master_key_exits_2_naming_it(tmp_path: Path) -> None:
    db = tmp_path / "live.db"

    async def make() -> None:
        ring = MasterKeyRing(parse_master_keys(new_master_key_text()))
        async with open_backend(f"sqlite:///{db}", keyring=ring) as store:
            ws = await store.create_workspace(name="acme")
            await store.data_key(ws.id)

    trio.run(make)
    wrong = tmp_path / "wrong.key"
    wrong.write_text(new_master_key_text())
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "web.cli",
            "serve",
            "--database-url",
            f"sqlite:///{db}",
            "--master-key-file",
            str(wrong),
            "--port",
            str(free_port()),
            "--no-demo",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "livechat: error: master key: data key of 'workspace:" in done.stderr
    assert "Traceback" not in done.stderr
