"""Conversations, visitors, bans, reports, the routing decision log, export and backups.

Reads go straight to storage, scoped to the caller's workspace. Actions on a live chat (close,
transfer, tag) go through the engine, which owns the rules and tells everyone in the chat.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import trio
from quart import Response

from engine import (
    VISITOR_HIDDEN_SUMMARY_FIELDS,
    AgentPrincipal,
    Close,
    EngineError,
    Tag,
    Transfer,
    visitor_data_keys,
)
from storage import (
    MAX_PAGE,
    SNIPPET_MATCH_END,
    SNIPPET_MATCH_START,
    BanKind,
    ConversationFilter,
    ConversationState,
    Report,
    Role,
    StorageError,
    create_private_file,
    private_dir,
    report_csv,
)
from web import strictjson
from web.api_admin import audit
from web.errors import BadRequest, Forbidden, NotFound
from web.httpapi import ROLE_RANK, ApiBlueprint, Call, bad_cursor, streaming_response
from web.schemas import Done
from web.schemas_chats import (
    BanIn,
    BanList,
    BanOut,
    CloseIn,
    ConversationOut,
    ConversationPage,
    ConversationQuery,
    DayCount,
    EventOut,
    ExportQuery,
    LiveVisitors,
    PageViewOut,
    ReportOut,
    ReportQuery,
    RoutingDecisionList,
    RoutingDecisionOut,
    RoutingQuery,
    SearchHitOut,
    SearchQuery,
    SearchResults,
    SnippetPart,
    TagIn,
    Transcript,
    TranscriptQuery,
    TransferIn,
    VisitorOut,
    VisitorProfile,
)
from web.schemas_ops import BackupOut, LastBackupOut
from web.tag_catalogue import UNKNOWN_TAG, uncatalogued, unknown_tag_message

api = ApiBlueprint("api_chats", "conversations")

LIVE_VISITORS_TIMEOUT_S = 1.0  # how long the other nodes of a cluster have to say who is there


def conversation_out(c: Any) -> ConversationOut:
    return ConversationOut(
        id=c.id,
        visitor_id=c.visitor_id,
        state=c.state.value,
        close_reason=c.close_reason.value if c.close_reason else None,
        group_id=c.group_id,
        assignee_id=c.assignee_id,
        participant_ids=tuple(c.participant_ids),
        tags=tuple(c.tags),
        rating=c.rating,
        rating_comment=c.rating_comment,
        last_seq=c.last_seq,
        created_at=c.created_at,
        first_response_at=c.first_response_at,
        closed_at=c.closed_at,
        last_activity_at=c.last_activity_at,
    )


def event_out(e: Any) -> EventOut:
    return EventOut(
        seq=e.seq,
        kind=e.kind.value,
        visibility=e.visibility.value,
        author_type=e.author_type.value,
        author_id=e.author_id,
        body=e.body,
        data=dict(e.data),
        client_msg_id=e.client_msg_id,
        created_at=e.created_at,
    )


async def _conversation(call: Call, conversation_id: str) -> Any:
    conv = await call.services.storage.get_conversation(call.workspace_id, conversation_id)
    if conv is None:
        raise NotFound()
    return conv


async def engine_command(call: Call, command: Any) -> Any:
    """Run one conversation command as the calling agent, from HTTP.

    Connection-less (``ChatEngine.request_as``): an admin acting over HTTP neither appears
    online nor receives routed chats; the engine applies the command with the agent's
    principal and rules, and tells the chat's live participants itself.
    """
    agent = call.caller.agent
    principal = AgentPrincipal(
        workspace_id=call.workspace_id,
        agent_id=agent.id,
        role=agent.role,
        display_name=agent.display_name,
    )
    return await call.services.gateway.request_as(principal, command)


# ---------------------------------------------------------------- conversations


@api.op(
    "GET",
    "/conversations",
    summary="Conversations, newest first, filtered, by cursor",
    query=ConversationQuery,
    response=ConversationPage,
)
async def list_conversations(call: Call, query: ConversationQuery) -> ConversationPage:
    filters = ConversationFilter(
        state=ConversationState(query.state) if query.state else None,
        assignee_id=query.assignee_id,
        group_id=query.group_id,
        tag=query.tag,
        visitor_id=query.visitor_id,
        created_after=query.created_after,
        created_before=query.created_before,
    )
    try:
        page = await call.services.storage.list_conversations(
            call.workspace_id, filters, cursor=query.cursor, limit=query.limit
        )
    except (StorageError, ValueError):
        if query.cursor is None:
            raise
        raise bad_cursor() from None
    return ConversationPage(
        conversations=tuple(conversation_out(c) for c in page.items),
        next_cursor=page.next_cursor,
    )


def _plain(marked: str) -> str:
    return marked.replace(SNIPPET_MATCH_START, "").replace(SNIPPET_MATCH_END, "")


def snippet_parts(marked: str) -> tuple[SnippetPart, ...]:
    """Split a storage snippet at its match marks; a stray mark never breaks the text."""
    parts: list[SnippetPart] = []
    for i, piece in enumerate(marked.split(SNIPPET_MATCH_START)):
        inside, sep, after = piece.partition(SNIPPET_MATCH_END)
        if i == 0 or not sep:
            inside, after = "", _plain(piece)
        if inside:
            parts.append(SnippetPart(text=inside, match=True))
        if after:
            parts.append(SnippetPart(text=_plain(after), match=False))
    return tuple(parts)


@api.op(
    "GET",
    "/conversations/search",
    summary="Full-text search in messages",
    query=SearchQuery,
    response=SearchResults,
)
async def search_conversations(call: Call, query: SearchQuery) -> SearchResults:
    call.services.costly.search(call.workspace_id)
    hits = await call.services.storage.search(call.workspace_id, query.q, limit=query.limit + 1)
    return SearchResults(
        hits=tuple(
            SearchHitOut(
                conversation_id=h.conversation_id,
                seq=h.seq,
                snippet=_plain(h.snippet),
                snippet_parts=snippet_parts(h.snippet),
                created_at=h.created_at,
            )
            for h in hits[: query.limit]
        ),
        has_more=len(hits) > query.limit,
    )


@api.op(
    "GET", "/conversations/{conversation_id}", summary="One conversation", response=ConversationOut
)
async def get_conversation(call: Call, conversation_id: str) -> ConversationOut:
    return conversation_out(await _conversation(call, conversation_id))


@api.op(
    "GET",
    "/conversations/{conversation_id}/transcript",
    summary="Events of a conversation in order (internal notes included)",
    query=TranscriptQuery,
    response=Transcript,
)
async def get_transcript(call: Call, conversation_id: str, query: TranscriptQuery) -> Transcript:
    """A live chat you are not in is silent supervision: supervisors and higher only, audited
    (queued and closed chats are open to every agent)."""
    conv = await _conversation(call, conversation_id)
    agent = call.caller.agent
    if conv.state == ConversationState.ACTIVE and agent.id not in conv.participant_ids:
        if ROLE_RANK[agent.role] < ROLE_RANK[Role.SUPERVISOR]:
            raise Forbidden("only supervisors may read a live chat they are not in")
        await audit(
            call, "conversation.supervised", f"conversation:{conversation_id}", how="transcript"
        )
    # Oldest first from ``after_seq``; one event more than the page tells whether more exist.
    page = min(query.limit, MAX_PAGE)
    events = await call.services.storage.history(
        call.workspace_id,
        conversation_id,
        after_seq=query.after_seq or 0,
        limit=page + 1,
        include_agents_only=True,
    )
    has_more = len(events) > page
    events = events[:page]
    return Transcript(
        conversation=conversation_out(conv),
        events=tuple(event_out(e) for e in events),
        has_more=has_more,
        next_after_seq=events[-1].seq if has_more else None,
    )


@api.op(
    "POST",
    "/conversations/{conversation_id}/close",
    summary="Close a conversation",
    body=CloseIn,
    response=ConversationOut,
    role=Role.AGENT,
)
async def close_conversation(call: Call, conversation_id: str, body: CloseIn) -> ConversationOut:
    await _conversation(call, conversation_id)
    _check_tags(call, body.tags, "tags")
    await engine_command(call, Close(conversation_id=conversation_id, tags=body.tags))
    return conversation_out(await _conversation(call, conversation_id))


@api.op(
    "POST",
    "/conversations/{conversation_id}/transfer",
    summary="Transfer to an agent or a group",
    body=TransferIn,
    response=ConversationOut,
)
async def transfer_conversation(
    call: Call, conversation_id: str, body: TransferIn
) -> ConversationOut:
    if (body.agent_id is None) == (body.group_id is None):
        raise BadRequest(
            "give exactly one of agent_id and group_id", field="$.agent_id", code="invalid_value"
        )
    await _conversation(call, conversation_id)
    await engine_command(
        call,
        Transfer(
            conversation_id=conversation_id,
            to_agent_id=body.agent_id,
            to_group_id=body.group_id,
            reason=body.reason,
        ),
    )
    return conversation_out(await _conversation(call, conversation_id))


@api.op(
    "POST",
    "/conversations/{conversation_id}/tags",
    summary="Add and remove tags",
    body=TagIn,
    response=ConversationOut,
)
async def tag_conversation(call: Call, conversation_id: str, body: TagIn) -> ConversationOut:
    """Added tags must be in the catalogue when it is not empty (400 ``unknown_tag``)."""
    await _conversation(call, conversation_id)
    _check_tags(call, body.add, "add")
    await engine_command(
        call, Tag(conversation_id=conversation_id, add=body.add, remove=body.remove)
    )
    return conversation_out(await _conversation(call, conversation_id))


def _check_tags(call: Call, tags: tuple[str, ...], field: str) -> None:
    missing = uncatalogued(call.caller.workspace.settings, tags)
    if missing:
        raise BadRequest(unknown_tag_message(missing), code=UNKNOWN_TAG, field=f"$.{field}")


# ---------------------------------------------------------------- visitors and bans


@api.op("GET", "/visitors/live", summary="Visitors connected now", response=LiveVisitors)
async def live_visitors(call: Call) -> LiveVisitors:
    """Visitors on every node of a cluster: a node that does not answer within a second is
    not waited for; it is named in ``nodes_missing`` and ``partial`` is true."""
    return await call.services.roll_call.gather(
        call.workspace_id, timeout_s=LIVE_VISITORS_TIMEOUT_S
    )


@api.op(
    "GET",
    "/visitors/{visitor_id}",
    summary="Visitor profile with page views and past conversations",
    response=VisitorProfile,
)
async def get_visitor(call: Call, visitor_id: str) -> VisitorProfile:
    storage = call.services.storage
    v = await storage.get_visitor(call.workspace_id, visitor_id)
    if v is None:
        raise NotFound()
    views = await storage.list_page_views(call.workspace_id, visitor_id, limit=50)
    convs = await storage.list_visitor_conversations(call.workspace_id, visitor_id)
    online = bool(call.services.sockets.of_visitor(call.workspace_id, visitor_id))
    if not online:  # in a cluster its tabs may be on other nodes: ask them
        live = await call.services.roll_call.gather(
            call.workspace_id, timeout_s=LIVE_VISITORS_TIMEOUT_S, visitor_id=visitor_id
        )
        online = bool(live.visitors)
    return VisitorProfile(
        visitor=VisitorOut(
            id=v.id,
            external_id=v.external_id,
            name=v.name,
            email=v.email,
            attributes=dict(v.attributes),
            user_agent=v.user_agent,
            ip=v.ip,
            visits=v.visits,
            first_seen_at=v.first_seen_at,
            last_seen_at=v.last_seen_at,
            online=online,
        ),
        page_views=tuple(
            PageViewOut(url=p.url, title=p.title, referrer=p.referrer, at=p.at) for p in views
        ),
        conversations=tuple(conversation_out(c) for c in convs),
    )


def _ban_out(b: Any) -> BanOut:
    return BanOut(
        id=b.id,
        kind=b.kind.value,
        value=b.value,
        reason=b.reason,
        created_at=b.created_at,
        expires_at=b.expires_at,
    )


@api.op(
    "POST",
    "/visitors/{visitor_id}/ban",
    summary="Ban a visitor (and its IP); closes its sockets",
    body=BanIn,
    response=BanList,
    status=201,
    role=Role.SUPERVISOR,
)
async def ban_visitor(call: Call, visitor_id: str, body: BanIn) -> BanList:
    storage = call.services.storage
    v = await storage.get_visitor(call.workspace_id, visitor_id)
    if v is None:
        raise NotFound()
    expires = time.time() + body.expires_in_s if body.expires_in_s else None
    bans = [
        await storage.add_ban(
            call.workspace_id,
            kind=BanKind.VISITOR,
            value=visitor_id,
            reason=body.reason,
            expires_at=expires,
        )
    ]
    if body.include_ip and v.ip:
        bans.append(
            await storage.add_ban(
                call.workspace_id,
                kind=BanKind.IP,
                value=v.ip,
                reason=body.reason,
                expires_at=expires,
            )
        )
    banned_ip = v.ip if body.include_ip and v.ip else None
    await call.services.access.close_visitor(call.workspace_id, visitor_id, "banned", ip=banned_ip)
    await audit(call, "visitor.banned", f"visitor:{visitor_id}", include_ip=body.include_ip)
    return BanList(bans=tuple(_ban_out(b) for b in bans))


@api.op(
    "DELETE",
    "/visitors/{visitor_id}",
    summary="Erase a visitor and its conversations (right to be forgotten)",
    response=Done,
    role=Role.ADMIN,
)
async def erase_visitor(call: Call, visitor_id: str) -> Done:
    storage = call.services.storage
    if await storage.get_visitor(call.workspace_id, visitor_id) is None:
        raise NotFound()
    await call.services.access.close_visitor(call.workspace_id, visitor_id, "erased")
    # Audited once, by the erasure's own transaction.
    await storage.erase_visitor(call.workspace_id, visitor_id, actor=call.caller.actor, ip=call.ip)
    return Done()


@api.op("GET", "/bans", summary="Bans in force", response=BanList, role=Role.SUPERVISOR)
async def list_bans(call: Call) -> BanList:
    bans = await call.services.storage.list_bans(call.workspace_id)
    return BanList(bans=tuple(_ban_out(b) for b in bans))


@api.op("DELETE", "/bans/{ban_id}", summary="Lift a ban", response=Done, role=Role.SUPERVISOR)
async def remove_ban(call: Call, ban_id: str) -> Done:
    bans = await call.services.storage.list_bans(call.workspace_id)
    if not any(b.id == ban_id for b in bans):
        raise NotFound()
    await call.services.storage.remove_ban(call.workspace_id, ban_id)
    await call.services.access.workspace_updated(call.workspace_id)  # connect caches drop it
    await audit(call, "ban.removed", f"ban:{ban_id}")
    return Done()


# ---------------------------------------------------------------- reports and routing log


@api.op(
    "GET",
    "/reports",
    summary="Chats, missed chats, response times, ratings (default 30 days)",
    query=ReportQuery,
    response=ReportOut,
    role=Role.SUPERVISOR,
)
async def get_report(call: Call, query: ReportQuery) -> ReportOut:
    """Definitions of every figure: docs/reports.md."""
    since, until, r = await _report(call, query)
    return ReportOut(
        since=since,
        until=until,
        chats_per_day=tuple(DayCount(day=d, chats=n) for d, n in r.chats_per_day),
        total_chats=r.total_chats,
        missed_chats=r.missed_chats,
        first_response_p50_s=r.first_response_p50_s,
        first_response_p90_s=r.first_response_p90_s,
        average_rating=r.average_rating,
        per_agent=tuple(dict(x) for x in r.per_agent),
        per_group=tuple(dict(x) for x in r.per_group),
        agent_started_chats=r.agent_started_chats,
        duration_p50_s=r.duration_p50_s,
        csat_pct=r.csat_pct,
        rated_chats=r.rated_chats,
    )


async def _report(call: Call, query: ReportQuery) -> tuple[float, float, Report]:
    until = query.until if query.until is not None else time.time()
    since = query.since if query.since is not None else until - 30 * 86400.0
    if since > until:
        raise BadRequest("since is after until", code="invalid_value", field="since")
    r = await call.services.storage.report(call.workspace_id, since=since, until=until)
    return since, until, r


@api.op(
    "GET",
    "/reports/csv",
    summary="The report as CSV: one total row, one per agent, one per group",
    query=ReportQuery,
    response=None,
    role=Role.SUPERVISOR,
    stream=("text/csv",),
)
async def get_report_csv(call: Call, query: ReportQuery) -> Response:
    since, _until, r = await _report(call, query)
    storage = call.services.storage
    names = {a.id: a.display_name for a in await storage.list_agents(call.workspace_id)}
    names.update({g.id: g.name for g in await storage.list_groups(call.workspace_id)})
    text = report_csv(r, names)

    async def chunks() -> AsyncIterator[str]:
        yield text

    day = time.strftime("%Y%m%d", time.gmtime(since))
    return streaming_response(chunks(), "text/csv", f"livechat-report-{day}.csv")


@api.op(
    "GET",
    "/routing-decisions",
    summary="Why each chat went where it went",
    query=RoutingQuery,
    response=RoutingDecisionList,
    role=Role.SUPERVISOR,
)
async def list_routing_decisions(call: Call, query: RoutingQuery) -> RoutingDecisionList:
    # The engine stores decisions in batches: include the ones made up to now.
    with contextlib.suppress(EngineError):  # storage down: the read below says so
        await call.services.engine.flush_routing_decisions()
    page = min(query.limit, MAX_PAGE)
    decisions = await call.services.storage.list_routing_decisions(
        call.workspace_id, conversation_id=query.conversation_id, limit=page + 1
    )
    has_more = len(decisions) > page
    return RoutingDecisionList(
        has_more=has_more,
        decisions=tuple(
            RoutingDecisionOut(
                id=d.id,
                conversation_id=d.conversation_id,
                agent_id=d.agent_id,
                reason=d.reason,
                details=dict(d.details),
                at=d.at,
            )
            for d in decisions[:page]
        ),
    )


# ---------------------------------------------------------------- export and backup


@api.op(
    "GET",
    "/export",
    summary="Export the workspace (or one visitor) as JSONL, or chats as CSV",
    query=ExportQuery,
    response=None,
    role=Role.ADMIN,
    stream=("application/x-ndjson", "text/csv"),
    scope="export",
)
async def export(call: Call, query: ExportQuery) -> Response:
    """Needs the ``admin`` or ``export`` token scope. Rate limited per workspace and by the
    server's export slots (``429`` ``export_rate_limited`` / ``exports_busy``)."""
    storage = call.services.storage
    if query.visitor_id is not None and (
        await storage.get_visitor(call.workspace_id, query.visitor_id) is None
    ):
        raise NotFound()
    if query.format == "csv" and query.visitor_id is not None:
        raise BadRequest(
            "CSV exports the whole workspace", code="invalid_value", field="visitor_id"
        )
    if query.visitor_id is None and query.internal != "mark":
        raise BadRequest(
            "internal=exclude is for one visitor's export", code="invalid_value", field="internal"
        )
    costly = call.services.costly
    slot = costly.start_export(call.workspace_id)
    try:
        return await _export(call, query, slot)
    except BaseException:
        costly.finish_export(slot)
        raise


async def _export(call: Call, query: ExportQuery, slot: object) -> Response:
    storage = call.services.storage
    costly = call.services.costly
    await audit(
        call,
        "export.visitor" if query.visitor_id else "export.workspace",
        f"visitor:{query.visitor_id}" if query.visitor_id else f"workspace:{call.workspace_id}",
        format=query.format,
    )
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    if query.format == "csv":
        return streaming_response(
            costly.hold(slot, storage.export_csv(call.workspace_id)),
            "text/csv",
            f"livechat-{stamp}.csv",
        )
    lines = redacted(storage.export_jsonl(call.workspace_id, visitor_id=query.visitor_id))
    if query.visitor_id is not None:
        lines = data_subject(lines, exclude_internal=query.internal == "exclude")
    return streaming_response(
        costly.hold(slot, lines), "application/x-ndjson", f"livechat-{stamp}.jsonl"
    )


# A download leaves the server: no credentials in it, not even hashed ones. (Backups written
# by /backups stay on the server and keep everything, so they can be restored.)
_SECRET_TABLES = frozenset({"sessions", "secrets"})
_SECRET_COLUMNS = frozenset(
    {"password_hash", "token_hash", "identity_secret", "csrf_token"}
    # two-factor and single sign-on secrets
    | {"totp_secret", "recovery_hashes", "client_secret"}
)


async def redacted(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    async for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("row"), dict):
            if record.get("table") in _SECRET_TABLES:
                continue
            row = record["row"]
            for column in _SECRET_COLUMNS & row.keys():
                row[column] = None
            line = strictjson.dumps(record) + "\n"
        yield line if line.endswith("\n") else line + "\n"


def _internal_parts(table: str, row: dict[str, Any]) -> tuple[bool, list[str]]:
    """Whether a row of a visitor's export is internal (the visitor never saw it), and which
    of its fields are; by the engine's one rule of what a visitor sees."""
    if table == "events":
        keys = visitor_data_keys(str(row.get("kind")), str(row.get("visibility")))
        if keys is None:
            return True, []
        data = row.get("data") or {}
        return False, [f"data.{k}" for k in sorted(data) if k not in keys]
    if table == "routing_decisions":
        return True, []
    if table == "attachments":  # an agent's upload not sent: the visitor never had it
        return row.get("uploader_type") == "agent" and row.get("sent_at") is None, []
    if table == "conversations":
        hidden = sorted(VISITOR_HIDDEN_SUMMARY_FIELDS)
        return False, [f for f in hidden if row.get(f) not in (None, [])]
    return False, []  # the visitor's profile and page views: collected from the visitor


async def data_subject(lines: AsyncIterator[str], *, exclude_internal: bool) -> AsyncIterator[str]:
    """One visitor's export, every row marked ``"internal": true|false`` (with the internal
    ``internal_fields`` of a row the visitor saw in part), or with all of that left out."""
    counts: dict[str, int] = {}
    left_out: set[str] = set()  # files whose row was left out: their bytes too
    files = 0
    async for line in lines:
        record = json.loads(line)
        row = record.get("row")
        table = str(record.get("table"))
        if isinstance(record.get("file"), dict):
            if record["file"].get("id") in left_out:
                continue
            files += 1
        elif isinstance(row, dict):
            internal, fields = _internal_parts(table, row)
            if exclude_internal:
                if internal:
                    if table == "attachments":
                        left_out.add(str(row.get("id")))
                    continue
                for field in fields:
                    if field.startswith("data."):
                        row["data"].pop(field[5:], None)
                    else:
                        row[field] = [] if isinstance(row[field], list) else None
            else:
                record["internal"] = internal
                if fields:
                    record["internal_fields"] = fields
            counts[table] = counts.get(table, 0) + 1
        elif record.get("format") is not None:
            record["internal"] = "excluded" if exclude_internal else "marked"
        elif record.get("end") is True:
            record["counts"] = counts
            record["files"] = files
        yield strictjson.dumps(record) + "\n"


@api.op(
    "POST",
    "/backups",
    summary="Write a JSONL export of the workspace to the server's backup dir",
    response=BackupOut,
    status=201,
    role=Role.OWNER,
)
async def create_backup(call: Call) -> BackupOut:
    """Counts as an export: the same per-workspace limit and server-wide export slots."""
    costly = call.services.costly
    slot = costly.start_export(call.workspace_id)
    try:
        return await _backup(call)
    finally:
        costly.finish_export(slot)


async def _backup(call: Call) -> BackupOut:
    directory = trio.Path(call.services.settings.storage.backup_dir)
    # Backups hold every conversation: the directory is the server's own, closed to 0700, and
    # the file is 0600 whatever the umask.
    await trio.to_thread.run_sync(lambda: private_dir(str(directory), tighten=True))
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = directory / f"workspace-{call.workspace_id}-{stamp}.jsonl"
    rows = 0
    fd = await trio.to_thread.run_sync(create_private_file, str(path))
    async with trio.wrap_file(os.fdopen(fd, "w", encoding="utf-8")) as out:
        # As stored: sealed values and the wrapped data key, never plaintext on the server's disk.
        async for line in call.services.storage.export_jsonl(call.workspace_id, sealed=True):
            await out.write(line if line.endswith("\n") else line + "\n")
            rows += 1
    await audit(call, "backup.created", f"workspace:{call.workspace_id}", rows=rows)
    return BackupOut(path=str(await path.resolve()), rows=rows)


@api.op(
    "GET",
    "/backups/last",
    summary="The last full-database backup that finished (`livechat backup`)",
    response=LastBackupOut,
    role=Role.OWNER,
    operator=True,
)
async def last_backup(call: Call) -> LastBackupOut:
    record = await call.services.storage.last_backup()
    if record is None:
        return LastBackupOut()
    return LastBackupOut(
        path=record.path,
        size_bytes=record.size_bytes,
        finished_at=record.finished_at,
        age_s=max(0.0, time.time() - record.finished_at),
    )
