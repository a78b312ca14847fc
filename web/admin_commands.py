"""``livechat admin ...``: operator tasks from the shell, straight against the database.

Safe while the server runs (the database serializes writers). Passwords and tokens are
generated, printed once and stored only as hashes; every action is audited with actor ``cli``.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import trio

from storage import Agent, Role, open_storage
from web.access import publish_from_cli
from web.auth import SERVER_OPERATOR_KEY, hash_secret, new_secret
from web.cli import add_database_options, settings_from_args
from web.errors import ConfigError
from web.passwords import PasswordHasher, generate_password
from web.services import master_keys


class CommandError(Exception):
    """A user mistake: the message is printed and the exit status is 1."""


def register(subparsers: Any) -> None:
    admin = subparsers.add_parser("admin", help="operator tasks: workspaces, agents, tokens")
    sub = admin.add_subparsers(dest="admin_command", metavar="TASK", required=True)

    ws = sub.add_parser("create-workspace", help="create a workspace and its owner")
    add_database_options(ws)
    ws.add_argument("--name", required=True)
    ws.add_argument("--owner-username", required=True)
    ws.add_argument("--owner-display-name", default=None)
    ws.add_argument("--allowed-origin", action="append", default=[], dest="origins")
    ws.add_argument(
        "--operator", action="store_true", help="its owners may manage other workspaces"
    )
    ws.set_defaults(handler=_run(_create_workspace))

    agent = sub.add_parser("create-agent", help="create an agent in a workspace")
    add_database_options(agent)
    agent.add_argument("--workspace", required=True, help="workspace id")
    agent.add_argument("--username", required=True)
    agent.add_argument("--display-name", default=None)
    agent.add_argument("--role", choices=[r.value for r in Role], default="agent")
    agent.set_defaults(handler=_run(_create_agent))

    reset = sub.add_parser("reset-password", help="generate a new password; ends sessions")
    add_database_options(reset)
    reset.add_argument("--username", required=True)
    reset.set_defaults(handler=_run(_reset_password))

    reset_2fa = sub.add_parser(
        "reset-2fa", help="remove an account's two-factor login (lost phone); ends sessions"
    )
    add_database_options(reset_2fa)
    reset_2fa.add_argument("--username", required=True)
    reset_2fa.set_defaults(handler=_run(_reset_two_factor))

    token = sub.add_parser("create-token", help="create an API token acting as an account")
    add_database_options(token)
    token.add_argument("--username", required=True)
    token.add_argument("--name", default="cli token")
    token.add_argument(
        "--scope", action="append", choices=["admin", "read", "agent"], dest="scopes"
    )
    token.set_defaults(handler=_run(_create_token))


def _run(command: Any) -> Any:
    def handler(args: argparse.Namespace) -> int:
        try:
            settings = settings_from_args(
                args, database_url=args.database_url, master_key_file=args.master_key_file
            )
            # The server's master key (generated next to a new SQLite database, as at the
            # server's first start): workspaces and visitors are encrypted the same way.
            args.keyring = master_keys(settings)
            # a cluster's nodes hear what changed through the bus (web/access.py)
            bus_url = settings.cluster.bus_url
            args.bus = (bus_url, settings.cluster.bus_prefix) if bus_url else None
            trio.run(command, settings.storage.database_url, args)
        except ConfigError as err:  # a bad setting, as ``serve`` says it
            print(f"livechat admin: error: {err}", file=sys.stderr)
            return 2
        except CommandError as err:
            print(f"livechat admin: error: {err}", file=sys.stderr)
            return 1
        return 0

    return handler


async def _create_workspace(url: str, args: argparse.Namespace) -> None:
    hasher = PasswordHasher(1)
    async with open_storage(url, keyring=args.keyring) as storage:
        username = args.owner_username.strip().lower()
        if await storage.find_agent_by_username(username):
            raise CommandError(f"username {username!r} is taken")
        ws = await storage.create_workspace(
            name=args.name,
            allowed_origins=tuple(args.origins),
            settings={SERVER_OPERATOR_KEY: bool(args.operator)},
        )
        password = generate_password()
        await storage.create_agent(
            ws.id,
            username=username,
            display_name=args.owner_display_name or username,
            password_hash=await hasher.hash(password),
            role=Role.OWNER,
        )
        await storage.audit(ws.id, actor="cli", action="workspace.created")
    print(f"workspace {ws.id} ({args.name}), widget key {ws.widget_key}")
    print(f"owner {username!r} password (shown once): {password}")


async def _create_agent(url: str, args: argparse.Namespace) -> None:
    hasher = PasswordHasher(1)
    async with open_storage(url, keyring=args.keyring) as storage:
        if await storage.get_workspace(args.workspace) is None:
            raise CommandError(f"no workspace {args.workspace!r}")
        username = args.username.strip().lower()
        if await storage.find_agent_by_username(username):
            raise CommandError(f"username {username!r} is taken")
        password = generate_password()
        agent = await storage.create_agent(
            args.workspace,
            username=username,
            display_name=args.display_name or username,
            password_hash=await hasher.hash(password),
            role=Role(args.role),
        )
        await storage.audit(
            args.workspace, actor="cli", action="agent.created", target=f"agent:{agent.id}"
        )
    print(f"agent {agent.id} {username!r} ({args.role}) password (shown once): {password}")
    if args.bus is not None:  # the workspace's router takes the new agent at once
        await publish_from_cli(args.bus, {"t": "changed", "ws": agent.workspace_id})


async def _reset_password(url: str, args: argparse.Namespace) -> None:
    hasher = PasswordHasher(1)
    async with open_storage(url, keyring=args.keyring) as storage:
        agent = await storage.find_agent_by_username(args.username.strip().lower())
        if agent is None:
            raise CommandError(f"no account {args.username!r}")
        password = generate_password()
        await storage.update_agent(
            agent.workspace_id,
            agent.id,
            password_hash=await hasher.hash(password),
            password_changed_at=time.time(),
        )
        await storage.delete_agent_sessions(agent.id)
        await storage.audit(
            agent.workspace_id,
            actor="cli",
            action="agent.password_reset",
            target=f"agent:{agent.id}",
        )
    print(f"new password for {agent.username!r} (shown once): {password}")
    print(await _tell_nodes(args, agent, "password reset"))


async def _reset_two_factor(url: str, args: argparse.Namespace) -> None:
    """The way back for an owner who lost both the phone and the recovery codes."""
    async with open_storage(url, keyring=args.keyring) as storage:
        agent = await storage.find_agent_by_username(args.username.strip().lower())
        if agent is None:
            raise CommandError(f"no account {args.username!r}")
        had = await storage.delete_two_factor(agent.workspace_id, agent.id)
        await storage.delete_agent_sessions(agent.id)
        await storage.audit(
            agent.workspace_id,
            actor="cli",
            action="agent.2fa_reset",
            target=f"agent:{agent.id}",
            details={"was_enabled": had},
        )
    state = "removed" if had else "was not enabled"
    print(f"two-factor login of {agent.username!r} {state}; its sessions ended.")
    print(await _tell_nodes(args, agent, "two-factor reset"))


async def _tell_nodes(args: argparse.Namespace, agent: Agent, reason: str) -> str:
    """Close the account's open sockets on every running node, through the bus if any."""
    event = {"t": "agent", "ws": agent.workspace_id, "agent": agent.id, "reason": reason}
    return await publish_from_cli(args.bus, event)


async def _create_token(url: str, args: argparse.Namespace) -> None:
    async with open_storage(url, keyring=args.keyring) as storage:
        agent = await storage.find_agent_by_username(args.username.strip().lower())
        if agent is None:
            raise CommandError(f"no account {args.username!r}")
        secret = "lct_" + new_secret()
        token = await storage.create_api_token(
            agent.workspace_id,
            agent_id=agent.id,
            name=args.name,
            token_hash=hash_secret(secret),
            scopes=tuple(args.scopes or ["admin"]),
        )
        await storage.audit(
            agent.workspace_id, actor="cli", action="token.created", target=f"token:{token.id}"
        )
    print(f"token {token.id} for {agent.username!r} (shown once): {secret}")
