"""Conversations, their history and search, routing decisions and attachments (``SqlStorage``
mixin). Appends are not here: they go through the group committer (``storage._base``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from storage import api
from storage._driver import SqlDriver, fetch, require_row
from storage._records import (
    codec,
    columns,
    decode,
    decode_cursor,
    encode_cursor,
    new_id,
)
from storage._sql import Program, Q, Row
from storage.crypto import (
    MAX_QUERY_WORDS,
    DataKey,
    make_snippet,
    search_words,
)

_OPEN_STATES = (api.ConversationState.QUEUED.value, api.ConversationState.ACTIVE.value)
_MAX_PAGE = api.MAX_PAGE
_MAX_FETCH = api.MAX_PAGE + 1  # plain-list reads: one extra row tells the caller "more"


class ConversationStore(SqlDriver):
    """Storage methods of ``storage.api.Storage`` for conversations and what hangs off them."""

    if TYPE_CHECKING:  # ``storage._vault.VaultStore``, a sibling mixin of SqlStorage

        async def _read_conversations(self, sql: str, *args: Any) -> list[api.Conversation]: ...

        async def _opened_conversations(self, rows: Sequence[Row]) -> list[api.Conversation]: ...

        async def _ready_key(
            self, workspace_id: str, rows: Iterable[Mapping[str, Any]]
        ) -> DataKey | None: ...

        async def _load_visitor_keys(
            self, key: DataKey, rows: Iterable[Mapping[str, Any]]
        ) -> None: ...

    # ------------------------------------------------------------ conversations

    async def create_conversation(
        self,
        workspace_id: str,
        *,
        visitor_id: str,
        group_id: str | None = None,
        origin_key: str | None = None,
    ) -> api.Conversation:
        """See ``storage.api.Storage.create_conversation``; the unique (workspace_id,
        origin_key) index makes two racing retries end with one conversation."""
        now = self._clock()
        conversation = api.Conversation(
            id=new_id(),
            workspace_id=workspace_id,
            visitor_id=visitor_id,
            group_id=group_id,
            created_at=now,
            last_activity_at=now,
            origin_key=origin_key,
        )
        if origin_key is None:
            return await self._insert(conversation, parent=("visitors", visitor_id, workspace_id))
        record_codec = codec(api.Conversation)
        select = (
            f"SELECT {columns(api.Conversation)} FROM conversations"
            " WHERE workspace_id=? AND origin_key=?"
        )

        def program() -> Program[Row]:
            found = yield Q(
                "SELECT 1 AS ok FROM visitors WHERE id=? AND workspace_id=?",
                (visitor_id, workspace_id),
            )
            require_row(found.one(), "visitor", visitor_id)
            yield Q(
                record_codec.insert_sql() + " ON CONFLICT (workspace_id, origin_key) DO NOTHING",
                record_codec.to_args(conversation),
            )
            result = yield Q(select, (workspace_id, origin_key))
            return require_row(result.one(), "conversation", origin_key)

        [found] = await self._opened_conversations([await self._write(program())])
        return found

    async def find_conversation_by_origin(
        self, workspace_id: str, origin_key: str
    ) -> api.Conversation | None:
        sql = (
            f"SELECT {columns(api.Conversation)} FROM conversations"
            " WHERE workspace_id=? AND origin_key=?"
        )
        found = await self._read_conversations(sql, workspace_id, origin_key)
        return found[0] if found else None

    async def get_conversation(
        self, workspace_id: str, conversation_id: str
    ) -> api.Conversation | None:
        sql = f"SELECT {columns(api.Conversation)} FROM conversations WHERE id=? AND workspace_id=?"
        found = await self._read_conversations(sql, conversation_id, workspace_id)
        return found[0] if found else None

    async def list_conversations(
        self,
        workspace_id: str,
        filters: api.ConversationFilter,
        *,
        cursor: str | None = None,
        limit: int = 50,
    ) -> api.Page:
        """Newest first (created_at desc, id desc); the cursor is the last row's position."""
        where = ["workspace_id=?"]
        args: list[Any] = [workspace_id]
        for column, value in (
            ("state", filters.state),
            ("assignee_id", filters.assignee_id),
            ("group_id", filters.group_id),
            ("visitor_id", filters.visitor_id),
        ):
            if value is not None:
                where.append(f"{column}=?")
                args.append(str(value))
        if filters.tag is not None:
            where.append(self._dialect.tag_filter("tags"))
            args.append(filters.tag)
        if filters.created_after is not None:
            where.append("created_at>=?")
            args.append(float(filters.created_after))
        if filters.created_before is not None:
            where.append("created_at<?")
            args.append(float(filters.created_before))
        if cursor is not None:
            at, last_id = decode_cursor(cursor)
            where.append("(created_at<? OR (created_at=? AND id<?))")
            args += [at, at, last_id]
        limit = max(1, min(limit, _MAX_PAGE))
        sql = (
            f"SELECT {columns(api.Conversation)} FROM conversations WHERE {' AND '.join(where)}"
            " ORDER BY created_at DESC, id DESC LIMIT ?"
        )
        items = await self._read_conversations(sql, *args, limit + 1)
        next_cursor = None
        if len(items) > limit:
            items = items[:limit]
            next_cursor = encode_cursor(items[-1].created_at, items[-1].id)
        return api.Page(items=tuple(items), next_cursor=next_cursor)

    async def list_open_conversations(self, workspace_id: str) -> list[api.Conversation]:
        sql = (
            f"SELECT {columns(api.Conversation)} FROM conversations"
            " WHERE workspace_id=? AND state IN (?, ?) ORDER BY created_at, id"
        )
        return await self._read_conversations(sql, workspace_id, *_OPEN_STATES)

    async def list_visitor_conversations(
        self, workspace_id: str, visitor_id: str
    ) -> list[api.Conversation]:
        sql = (
            f"SELECT {columns(api.Conversation)} FROM conversations"
            " WHERE workspace_id=? AND visitor_id=? ORDER BY created_at DESC, id DESC"
        )
        return await self._read_conversations(sql, workspace_id, visitor_id)

    async def history(
        self,
        workspace_id: str,
        conversation_id: str,
        *,
        after_seq: int | None = None,
        before_seq: int | None = None,
        limit: int = 50,
        include_agents_only: bool = True,
    ) -> list[api.Event]:
        """Ascending seq. Neither bound given: the latest ``limit`` events."""
        where = ["conversation_id=?", "workspace_id=?"]
        args: list[Any] = [conversation_id, workspace_id]
        if after_seq is not None:
            where.append("seq>?")
            args.append(after_seq)
        if before_seq is not None:
            where.append("seq<?")
            args.append(before_seq)
        if not include_agents_only:
            where.append("visibility=?")
            args.append(api.Visibility.ALL.value)
        newest_first = after_seq is None
        sql = (
            f"SELECT {columns(api.Event)} FROM events WHERE {' AND '.join(where)}"
            f" ORDER BY seq {'DESC' if newest_first else 'ASC'} LIMIT ?"
        )
        rows = await self._read(fetch(Q(sql, [*args, max(1, min(limit, _MAX_FETCH))])))
        key = await self._ready_key(workspace_id, rows)
        if key is not None:
            rows = [key.open_row("events", row) for row in rows]
        events = [decode(api.Event, row) for row in rows]
        if newest_first:
            events.reverse()
        return events

    async def search(
        self, workspace_id: str, query: str, *, limit: int = 20
    ) -> list[api.SearchHit]:
        """Messages, offline messages and notes holding every word of ``query``, newest first.

        Whole words only: each word becomes its keyed token (the blind index, see
        ``storage.crypto``) and the backend's full-text index finds the events holding every
        token. The hits are decrypted here, and the snippet is made from the plaintext.
        """
        words = list(dict.fromkeys(search_words(query)))[:MAX_QUERY_WORDS]
        if not words:
            return []
        key = await self.data_key(workspace_id)
        tokens = [key.token(w) for w in words] if key is not None else words
        text = self._dialect.search_query(tokens)
        if text is None:
            return []
        rows = await self._read(
            fetch(self._dialect.search(workspace_id, text, max(1, min(limit, _MAX_FETCH))))
        )
        if key is not None:
            await self._load_visitor_keys(key, rows)
        hits = []
        for row in rows:
            body = str(row["body"])
            if key is not None:
                body = key.open(body, "events.body")
            hits.append(
                api.SearchHit(
                    conversation_id=row["conversation_id"],
                    seq=int(row["seq"]),
                    body=body,
                    snippet=make_snippet(body, set(words)),
                    created_at=float(row["created_at"]),
                )
            )
        return hits

    # ------------------------------------------------------------ routing, bans, audit

    async def record_routing_decision(
        self,
        workspace_id: str,
        *,
        conversation_id: str,
        agent_id: str | None,
        reason: str,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        decision = api.RoutingDecision(
            id=new_id(),
            workspace_id=workspace_id,
            conversation_id=conversation_id,
            agent_id=agent_id,
            reason=reason,
            details=dict(details or {}),
            at=self._clock(),
        )
        await self._insert(decision, parent=("conversations", conversation_id, workspace_id))

    async def record_routing_decisions(self, decisions: Sequence[api.NewRoutingDecision]) -> int:
        if not decisions:
            return 0
        records = [
            api.RoutingDecision(
                id=new_id(),
                workspace_id=d.workspace_id,
                conversation_id=d.conversation_id,
                agent_id=d.agent_id,
                reason=d.reason,
                details=dict(d.details),
                at=d.at,
            )
            for d in decisions
        ]
        record_codec = codec(api.RoutingDecision)
        wanted = sorted({r.conversation_id for r in records})

        def program() -> Program[int]:
            found: set[tuple[str, str]] = set()
            for start in range(0, len(wanted), 500):  # well below any bound-parameter limit
                chunk = wanted[start : start + 500]
                rows = yield Q(
                    "SELECT id, workspace_id FROM conversations WHERE id IN ("
                    + ",".join("?" * len(chunk))
                    + ")",
                    tuple(chunk),
                )
                found.update((row["id"], row["workspace_id"]) for row in rows.rows)
            kept = [r for r in records if (r.conversation_id, r.workspace_id) in found]
            if kept:
                yield Q(record_codec.insert_sql(), many=[record_codec.to_args(r) for r in kept])
            return len(kept)

        return await self._write(program())

    async def list_routing_decisions(
        self, workspace_id: str, *, conversation_id: str | None = None, limit: int = 100
    ) -> list[api.RoutingDecision]:
        """Newest first."""
        where, args = "workspace_id=?", [workspace_id]
        if conversation_id is not None:
            where += " AND conversation_id=?"
            args.append(conversation_id)
        sql = (
            f"SELECT {columns(api.RoutingDecision)} FROM routing_decisions WHERE {where}"
            " ORDER BY at DESC, id DESC LIMIT ?"
        )
        return await self._fetch_all(
            api.RoutingDecision, sql, *args, max(1, min(limit, _MAX_FETCH))
        )
