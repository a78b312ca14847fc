"""Visitors, their page views and bans (``SqlStorage`` mixin)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from storage import api
from storage._driver import SqlDriver, execute, fetch, require_row
from storage._records import (
    columns,
    decode,
    new_id,
)
from storage._sql import Program, Q
from storage.crypto import DataKey
from storage.errors import NotFound

_MAX_PAGE = api.MAX_PAGE


class VisitorStore(SqlDriver):
    """Storage methods of ``storage.api.Storage`` for visitors and bans."""

    if TYPE_CHECKING:  # ``storage._vault.VaultStore``, a sibling mixin of SqlStorage

        async def _visitor_sealer(self, workspace_id: str, visitor_id: str) -> DataKey | None: ...

        async def _insert_new_visitor(self, visitor: api.Visitor) -> api.Visitor: ...

    # ------------------------------------------------------------ visitors

    async def create_visitor(
        self,
        workspace_id: str,
        *,
        token_hash: str | None,
        external_id: str | None = None,
        user_agent: str | None = None,
        ip: str | None = None,
    ) -> api.Visitor:
        now = self._clock()
        visitor = api.Visitor(
            id=new_id(),
            workspace_id=workspace_id,
            token_hash=token_hash,
            external_id=external_id,
            user_agent=user_agent,
            ip=ip,
            first_seen_at=now,
            last_seen_at=now,
        )
        return await self._insert_new_visitor(visitor)

    async def _visitor(self, workspace_id: str, sql: str, *args: Any) -> api.Visitor | None:
        rows = await self._read(fetch(Q(sql, args)))
        if not rows:
            return None
        return decode(api.Visitor, await self._open_row("visitors", workspace_id, rows[0]))

    async def get_visitor(self, workspace_id: str, visitor_id: str) -> api.Visitor | None:
        sql = f"SELECT {columns(api.Visitor)} FROM visitors WHERE id=? AND workspace_id=?"
        return await self._visitor(workspace_id, sql, visitor_id, workspace_id)

    async def find_visitor_by_token_hash(
        self, workspace_id: str, token_hash: str
    ) -> api.Visitor | None:
        sql = (
            f"SELECT {columns(api.Visitor)} FROM visitors WHERE workspace_id=? AND token_hash=?"
            " ORDER BY last_seen_at DESC LIMIT 1"
        )
        return await self._visitor(workspace_id, sql, workspace_id, token_hash)

    async def find_visitor_by_external_id(
        self, workspace_id: str, external_id: str
    ) -> api.Visitor | None:
        sql = (
            f"SELECT {columns(api.Visitor)} FROM visitors WHERE workspace_id=? AND external_id=?"
            " ORDER BY last_seen_at DESC LIMIT 1"
        )
        return await self._visitor(workspace_id, sql, workspace_id, external_id)

    async def update_visitor(
        self, workspace_id: str, visitor_id: str, **changes: Any
    ) -> api.Visitor:
        where = "workspace_id=? AND id=?"
        key = await self._visitor_sealer(workspace_id, visitor_id)
        return await self._update(
            api.Visitor, where, [workspace_id, visitor_id], changes, key=key, table="visitors"
        )

    async def add_page_view(self, workspace_id: str, view: api.PageView) -> None:
        def program() -> Program[None]:
            found = yield Q(
                "SELECT 1 AS ok FROM visitors WHERE id=? AND workspace_id=?",
                (view.visitor_id, workspace_id),
            )
            require_row(found.one(), "visitor", view.visitor_id)
            yield Q(
                "INSERT INTO page_views (id, workspace_id, visitor_id, url, title, referrer, at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    new_id(),
                    workspace_id,
                    view.visitor_id,
                    view.url,
                    view.title,
                    view.referrer,
                    float(view.at or self._clock()),
                ),
            )

        await self._write(program())

    async def list_page_views(
        self, workspace_id: str, visitor_id: str, limit: int = 50
    ) -> list[api.PageView]:
        rows = await self._fetch(
            "SELECT visitor_id, url, title, referrer, at FROM page_views"
            " WHERE workspace_id=? AND visitor_id=? ORDER BY at DESC, id DESC LIMIT ?",
            workspace_id,
            visitor_id,
            min(limit, _MAX_PAGE),
        )
        return [api.PageView(**{**row, "at": float(row["at"])}) for row in rows]

    async def add_ban(
        self,
        workspace_id: str,
        *,
        kind: api.BanKind,
        value: str,
        reason: str | None = None,
        expires_at: float | None = None,
    ) -> api.Ban:
        ban = api.Ban(
            id=new_id(),
            workspace_id=workspace_id,
            kind=kind,
            value=value,
            reason=reason,
            created_at=self._clock(),
            expires_at=expires_at,
        )
        return await self._insert(ban, parent=("workspaces", workspace_id, workspace_id))

    async def list_bans(self, workspace_id: str) -> list[api.Ban]:
        sql = f"SELECT {columns(api.Ban)} FROM bans WHERE workspace_id=? ORDER BY created_at, id"
        return await self._fetch_all(api.Ban, sql, workspace_id)

    async def remove_ban(self, workspace_id: str, ban_id: str) -> None:
        sql = "DELETE FROM bans WHERE workspace_id=? AND id=?"
        if await self._write(execute(Q(sql, (workspace_id, ban_id)))) == 0:
            raise NotFound(f"ban {ban_id!r} not found")

    async def is_banned(self, workspace_id: str, *, visitor_id: str | None, ip: str | None) -> bool:
        """True when an unexpired ban matches the visitor id or the IP address."""
        matches, args = [], [workspace_id, self._clock()]
        for kind, value in ((api.BanKind.VISITOR, visitor_id), (api.BanKind.IP, ip)):
            if value is not None:
                matches.append("(kind=? AND value=?)")
                args += [kind.value, value]
        if not matches:
            return False
        rows = await self._fetch(
            "SELECT 1 AS banned FROM bans WHERE workspace_id=?"
            f" AND (expires_at IS NULL OR expires_at>?) AND ({' OR '.join(matches)}) LIMIT 1",
            *args,
        )
        return bool(rows)
