"""Workspaces, agents, groups, canned responses, API tokens and sessions (``SqlStorage`` mixin):
who works in a workspace and how they sign in."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from storage import api
from storage._driver import SqlDriver, execute
from storage._records import (
    codec,
    columns,
    new_id,
)
from storage._sql import Program, Q
from storage.errors import NotFound


class DirectoryStore(SqlDriver):
    """Storage methods of ``storage.api.Storage`` for the workspace directory."""

    # ------------------------------------------------------------ workspaces

    async def create_workspace(
        self,
        *,
        name: str,
        allowed_origins: Sequence[str] = (),
        settings: Mapping[str, Any] | None = None,
    ) -> api.Workspace:
        workspace = api.Workspace(
            id=new_id(),
            name=name,
            widget_key=secrets.token_urlsafe(16),
            identity_secret=secrets.token_urlsafe(32),
            allowed_origins=tuple(allowed_origins),
            settings=dict(settings or {}),
            created_at=self._clock(),
        )
        return await self._insert(workspace)

    async def get_workspace(self, workspace_id: str) -> api.Workspace | None:
        sql = f"SELECT {columns(api.Workspace)} FROM workspaces WHERE id=?"
        return await self._fetch_one(api.Workspace, sql, workspace_id)

    async def get_workspace_by_widget_key(self, widget_key: str) -> api.Workspace | None:
        sql = f"SELECT {columns(api.Workspace)} FROM workspaces WHERE widget_key=?"
        return await self._fetch_one(api.Workspace, sql, widget_key)

    async def list_workspaces(self) -> list[api.Workspace]:
        sql = f"SELECT {columns(api.Workspace)} FROM workspaces ORDER BY created_at, id"
        return await self._fetch_all(api.Workspace, sql)

    async def update_workspace(self, workspace_id: str, **changes: Any) -> api.Workspace:
        return await self._update(api.Workspace, "id=?", [workspace_id], changes)

    # ------------------------------------------------------------ agents

    async def create_agent(
        self,
        workspace_id: str,
        *,
        username: str,
        display_name: str,
        password_hash: str | None,
        role: api.Role = api.Role.AGENT,
        email: str | None = None,
        max_chats: int = 5,
        group_ids: Sequence[str] = (),
    ) -> api.Agent:
        now = self._clock()
        agent = api.Agent(
            id=new_id(),
            workspace_id=workspace_id,
            username=username.lower(),
            display_name=display_name,
            email=email,
            role=role,
            password_hash=password_hash,
            max_chats=max_chats,
            group_ids=tuple(group_ids),
            created_at=now,
            password_changed_at=now,
        )
        return await self._insert(agent, parent=("workspaces", workspace_id, workspace_id))

    async def get_agent(self, workspace_id: str, agent_id: str) -> api.Agent | None:
        sql = f"SELECT {columns(api.Agent)} FROM agents WHERE id=? AND workspace_id=?"
        return await self._fetch_one(api.Agent, sql, agent_id, workspace_id)

    async def find_agent_by_username(self, username: str) -> api.Agent | None:
        sql = f"SELECT {columns(api.Agent)} FROM agents WHERE username=?"
        return await self._fetch_one(api.Agent, sql, username.lower())

    async def list_agents(self, workspace_id: str) -> list[api.Agent]:
        sql = f"SELECT {columns(api.Agent)} FROM agents WHERE workspace_id=? ORDER BY username"
        return await self._fetch_all(api.Agent, sql, workspace_id)

    async def update_agent(self, workspace_id: str, agent_id: str, **changes: Any) -> api.Agent:
        """Also lower-cases a new username and stamps ``password_changed_at`` with a new hash."""
        if "username" in changes:
            changes["username"] = str(changes["username"]).lower()
        if "password_hash" in changes:
            changes.setdefault("password_changed_at", self._clock())
        where = "workspace_id=? AND id=?"
        return await self._update(api.Agent, where, [workspace_id, agent_id], changes)

    # ------------------------------------------------------------ groups

    async def create_group(
        self,
        workspace_id: str,
        *,
        name: str,
        fallback_group_id: str | None = None,
        public: bool = False,
    ) -> api.Group:
        group = api.Group(
            id=new_id(),
            workspace_id=workspace_id,
            name=name,
            fallback_group_id=fallback_group_id,
            public=public,
        )
        return await self._insert(group, parent=("workspaces", workspace_id, workspace_id))

    async def get_group(self, workspace_id: str, group_id: str) -> api.Group | None:
        sql = f"SELECT {columns(api.Group)} FROM agent_groups WHERE id=? AND workspace_id=?"
        return await self._fetch_one(api.Group, sql, group_id, workspace_id)

    async def list_groups(self, workspace_id: str) -> list[api.Group]:
        sql = f"SELECT {columns(api.Group)} FROM agent_groups WHERE workspace_id=? ORDER BY name"
        return await self._fetch_all(api.Group, sql, workspace_id)

    async def update_group(self, workspace_id: str, group_id: str, **changes: Any) -> api.Group:
        where = "workspace_id=? AND id=?"
        return await self._update(api.Group, where, [workspace_id, group_id], changes)

    async def delete_group(self, workspace_id: str, group_id: str) -> None:
        """Also drops the group from its agents and from other groups' fallbacks."""
        agent_codec = codec(api.Agent)

        def program() -> Program[None]:
            deleted = yield Q(
                "DELETE FROM agent_groups WHERE workspace_id=? AND id=?", (workspace_id, group_id)
            )
            if deleted.rowcount == 0:
                raise NotFound(f"group {group_id!r} not found")
            yield Q(
                "UPDATE agent_groups SET fallback_group_id=NULL"
                " WHERE workspace_id=? AND fallback_group_id=?",
                (workspace_id, group_id),
            )
            agents = yield Q(
                "SELECT id, group_ids FROM agents WHERE workspace_id=?", (workspace_id,)
            )
            for row in agents.rows:
                group_ids = agent_codec.decoders[agent_codec.columns.index("group_ids")]
                assert group_ids is not None
                current: tuple[str, ...] = group_ids(row["group_ids"])
                if group_id in current:
                    kept = tuple(g for g in current if g != group_id)
                    yield Q(
                        "UPDATE agents SET group_ids=? WHERE workspace_id=? AND id=?",
                        (agent_codec.encode("group_ids", kept), workspace_id, row["id"]),
                    )

        await self._write(program())

    # ------------------------------------------------------------ canned responses

    async def create_canned_response(
        self, workspace_id: str, *, shortcut: str, text: str
    ) -> api.CannedResponse:
        canned = api.CannedResponse(
            id=new_id(), workspace_id=workspace_id, shortcut=shortcut, text=text
        )
        return await self._insert(canned, parent=("workspaces", workspace_id, workspace_id))

    async def list_canned_responses(self, workspace_id: str) -> list[api.CannedResponse]:
        sql = (
            f"SELECT {columns(api.CannedResponse)} FROM canned_responses"
            " WHERE workspace_id=? ORDER BY shortcut, id"
        )
        return await self._fetch_all(api.CannedResponse, sql, workspace_id)

    async def update_canned_response(
        self, workspace_id: str, canned_id: str, **changes: Any
    ) -> api.CannedResponse:
        where = "workspace_id=? AND id=?"
        return await self._update(api.CannedResponse, where, [workspace_id, canned_id], changes)

    async def delete_canned_response(self, workspace_id: str, canned_id: str) -> None:
        sql = "DELETE FROM canned_responses WHERE workspace_id=? AND id=?"
        if await self._write(execute(Q(sql, (workspace_id, canned_id)))) == 0:
            raise NotFound(f"canned response {canned_id!r} not found")

    # ------------------------------------------------------------ API tokens and sessions

    async def create_api_token(
        self, workspace_id: str, *, agent_id: str, name: str, token_hash: str, scopes: Sequence[str]
    ) -> api.ApiToken:
        token = api.ApiToken(
            id=new_id(),
            workspace_id=workspace_id,
            agent_id=agent_id,
            name=name,
            token_hash=token_hash,
            scopes=tuple(scopes),
            created_at=self._clock(),
        )
        return await self._insert(token, parent=("agents", agent_id, workspace_id))

    async def find_api_token(self, token_hash: str) -> api.ApiToken | None:
        """Revoked tokens are returned too: the caller checks ``revoked_at``."""
        sql = f"SELECT {columns(api.ApiToken)} FROM api_tokens WHERE token_hash=?"
        return await self._fetch_one(api.ApiToken, sql, token_hash)

    async def list_api_tokens(self, workspace_id: str) -> list[api.ApiToken]:
        sql = (
            f"SELECT {columns(api.ApiToken)} FROM api_tokens WHERE workspace_id=?"
            " ORDER BY created_at, id"
        )
        return await self._fetch_all(api.ApiToken, sql, workspace_id)

    async def revoke_api_token(self, workspace_id: str, token_id: str) -> None:
        sql = (
            "UPDATE api_tokens SET revoked_at=COALESCE(revoked_at, ?) WHERE workspace_id=? AND id=?"
        )
        if await self._write(execute(Q(sql, (self._clock(), workspace_id, token_id)))) == 0:
            raise NotFound(f"API token {token_id!r} not found")

    async def create_session(self, session: api.Session) -> None:
        await self._insert(session)

    async def get_session(self, id_hash: str) -> api.Session | None:
        sql = f"SELECT {columns(api.Session)} FROM sessions WHERE id_hash=?"
        return await self._fetch_one(api.Session, sql, id_hash)

    async def touch_session(self, id_hash: str, at: float) -> None:
        sql = "UPDATE sessions SET last_seen_at=? WHERE id_hash=?"
        await self._write(execute(Q(sql, (float(at), id_hash))))

    async def delete_session(self, id_hash: str) -> None:
        await self._write(execute(Q("DELETE FROM sessions WHERE id_hash=?", (id_hash,))))

    async def delete_agent_sessions(
        self, agent_id: str, *, except_id_hash: str | None = None
    ) -> None:
        sql, args = "DELETE FROM sessions WHERE agent_id=?", [agent_id]
        if except_id_hash is not None:
            sql += " AND id_hash<>?"
            args.append(except_id_hash)
        await self._write(execute(Q(sql, args)))
