"""Two-factor enrollments, SSO configurations and identities on both backends."""

from __future__ import annotations

import json

import pytest

from storage import Conflict, NotFound, Role, SsoConfig, TwoFactor
from storage._base import SqlStorage


async def _agent(storage: SqlStorage) -> tuple[str, str]:
    ws = await storage.create_workspace(name="Acme")
    agent = await storage.create_agent(
        ws.id, username="ann", display_name="Ann", password_hash=None
    )
    return ws.id, agent.id


async def test_a_totp_step_and_a_recovery_code_are_each_accepted_once(
    storage: SqlStorage,
) -> None:
    ws, agent = await _agent(storage)
    await storage.put_two_factor(TwoFactor(agent_id=agent, workspace_id=ws, totp_secret="S" * 32))
    assert not await storage.use_totp_step(ws, agent, 100)  # not confirmed yet
    record = await storage.confirm_two_factor(ws, agent, step=100, recovery_hashes=["h1", "h2"])
    assert record.confirmed_at is not None and record.recovery_hashes == ("h1", "h2")
    assert not await storage.use_totp_step(ws, agent, 100)  # the confirming code was spent
    assert await storage.use_totp_step(ws, agent, 101)
    assert not await storage.use_totp_step(ws, agent, 101)
    assert not await storage.use_totp_step(ws, agent, 99)  # older steps never come back
    assert await storage.use_recovery_code(ws, agent, "h2")
    assert not await storage.use_recovery_code(ws, agent, "h2")
    assert not await storage.use_recovery_code(ws, agent, "nope")
    stored = await storage.get_two_factor(ws, agent)
    assert stored is not None and stored.recovery_hashes == ("h1",)
    await storage.set_recovery_codes(ws, agent, ["n1"])
    assert not await storage.use_recovery_code(ws, agent, "h1")
    assert [r.agent_id for r in await storage.list_two_factor(ws)] == [agent]
    assert await storage.delete_two_factor(ws, agent)
    assert await storage.get_two_factor(ws, agent) is None
    assert not await storage.delete_two_factor(ws, agent)


async def test_two_factor_of_another_workspace_is_not_found(storage: SqlStorage) -> None:
    ws, agent = await _agent(storage)
    other = await storage.create_workspace(name="Globex")
    with pytest.raises(NotFound):
        await storage.put_two_factor(
            TwoFactor(agent_id=agent, workspace_id=other.id, totp_secret="S" * 32)
        )
    await storage.put_two_factor(TwoFactor(agent_id=agent, workspace_id=ws, totp_secret="S" * 32))
    assert await storage.get_two_factor(other.id, agent) is None


async def test_sso_config_round_trips_and_slugs_are_unique(storage: SqlStorage) -> None:
    ws, agent = await _agent(storage)
    other = await storage.create_workspace(name="Globex")
    config = SsoConfig(
        workspace_id=ws,
        slug="acme",
        issuer="https://id.example",
        client_id="c",
        client_secret="s",
        role_map={"support": "supervisor"},
        default_role=None,
        sso_only=True,
    )
    await storage.put_sso_config(config)
    assert await storage.find_sso_config("acme") == config
    assert await storage.get_sso_config(ws) == config
    replaced = SsoConfig(
        workspace_id=ws,
        slug="acme",
        issuer="https://id.example",
        client_id="c2",
        client_secret="s",
        default_role=Role.AGENT,
    )
    await storage.put_sso_config(replaced)
    assert await storage.get_sso_config(ws) == replaced
    with pytest.raises(Conflict):
        await storage.put_sso_config(
            SsoConfig(
                workspace_id=other.id,
                slug="acme",
                issuer="https://x",
                client_id="c",
                client_secret="s",
            )
        )
    identity = await storage.create_sso_identity(
        ws, issuer="https://id.example", subject="u1", agent_id=agent
    )
    assert await storage.find_sso_identity(ws, "https://id.example", "u1") == identity
    assert await storage.find_sso_identity(other.id, "https://id.example", "u1") is None
    with pytest.raises(Conflict):
        await storage.create_sso_identity(
            ws, issuer="https://id.example", subject="u1", agent_id=agent
        )
    await storage.delete_sso_config(ws)
    assert await storage.get_sso_config(ws) is None


async def test_purging_a_workspace_removes_its_two_factor_and_sso_rows(
    storage: SqlStorage,
) -> None:
    ws, agent = await _agent(storage)
    await storage.put_two_factor(TwoFactor(agent_id=agent, workspace_id=ws, totp_secret="S" * 32))
    await storage.put_sso_config(
        SsoConfig(
            workspace_id=ws, slug="acme", issuer="https://i", client_id="c", client_secret="s"
        )
    )
    await storage.create_sso_identity(ws, issuer="https://i", subject="u", agent_id=agent)
    lines = [line async for line in storage.export_jsonl(ws)]
    tables = {json.loads(line).get("table") for line in lines}
    assert {"agent_two_factor", "workspace_sso", "sso_identities"} <= tables
    await storage.purge_workspace(ws)
    assert await storage.get_two_factor(ws, agent) is None
    assert await storage.find_sso_config("acme") is None
