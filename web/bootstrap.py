"""First start: with an empty database, create the first workspace and its accounts.

Never a fixed default password: each account gets a random one, printed once by ``serve``.
The first workspace is the *server operator's*: its owners may create and suspend workspaces.
With ``demo`` on, it is the demo workspace (the server's own origin is allowed, so ``/demo``
works) and a demo agent is created too.
"""

from __future__ import annotations

import attrs

from storage import Role
from web.auth import SERVER_OPERATOR_KEY
from web.passwords import generate_password
from web.services import Services


@attrs.frozen(kw_only=True)
class FirstStart:
    workspace_name: str
    widget_key: str
    owner_username: str
    owner_password: str
    agent_username: str | None
    agent_password: str | None


async def bootstrap(services: Services) -> FirstStart | None:
    """Seed an empty database; ``None`` when there is already a workspace."""
    storage = services.storage
    if await storage.list_workspaces():
        return None
    settings = services.settings
    name = "Demo" if settings.demo else "Main"
    workspace = await storage.create_workspace(
        name=name,
        allowed_origins=(settings.base_url,),
        settings={SERVER_OPERATOR_KEY: True},
    )
    owner_password = generate_password()
    await storage.create_agent(
        workspace.id,
        username="owner",
        display_name="Owner",
        password_hash=await services.hasher.hash(owner_password),
        role=Role.OWNER,
    )
    agent_username = agent_password = None
    if settings.demo:
        agent_username, agent_password = "agent", generate_password()
        await storage.create_agent(
            workspace.id,
            username=agent_username,
            display_name="Demo Agent",
            password_hash=await services.hasher.hash(agent_password),
            role=Role.AGENT,
        )
    await storage.audit(workspace.id, actor="system", action="workspace.bootstrapped")
    return FirstStart(
        workspace_name=name,
        widget_key=workspace.widget_key,
        owner_username="owner",
        owner_password=owner_password,
        agent_username=agent_username,
        agent_password=agent_password,
    )
