"""First start: with an empty database, create the first workspace and its accounts.

Never a fixed default password: each account gets a random one, printed once by ``serve``.
The first workspace is the *server operator's*: its owners may create and suspend workspaces.
With ``demo`` on, it is the demo workspace (the server's own origin is allowed, so ``/demo``
works) and a demo agent is created too, with two groups (the agent in both, Sales falling
back to Support), example canned responses and a tag catalogue, so every console screen has
something to show.
"""

from __future__ import annotations

import attrs

from storage import Role
from web.auth import SERVER_OPERATOR_KEY
from web.passwords import generate_password
from web.services import Services

DEMO_CANNED = (
    ("hello", "Hello! Thanks for getting in touch. How can I help?"),
    ("refund", "Refunds reach your account within 5 working days of our confirmation."),
    ("hours", "We answer chats Monday to Friday, 9:00 to 17:00."),
    ("bye", "Thanks for chatting with us. Have a good day!"),
)
DEMO_TAGS = ("billing", "bug", "feedback", "sales", "vip")


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
    name = "Demo" if settings.server.demo else "Main"
    workspace = await storage.create_workspace(
        name=name,
        allowed_origins=(settings.server.base_url,),
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
    if settings.server.demo:
        support = await storage.create_group(workspace.id, name="Support")
        sales = await storage.create_group(
            workspace.id, name="Sales", fallback_group_id=support.id
        )
        agent_username, agent_password = "agent", generate_password()
        await storage.create_agent(
            workspace.id,
            username=agent_username,
            display_name="Demo Agent",
            password_hash=await services.hasher.hash(agent_password),
            role=Role.AGENT,
            group_ids=(support.id, sales.id),
        )
        for shortcut, text in DEMO_CANNED:
            await storage.create_canned_response(workspace.id, shortcut=shortcut, text=text)
        current = await storage.get_workspace(workspace.id)
        assert current is not None
        await storage.update_workspace(
            workspace.id, settings={**current.settings, "tags": list(DEMO_TAGS)}
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
