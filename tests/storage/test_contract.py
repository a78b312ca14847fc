"""The contract suite: every test runs against SQLite and PostgreSQL (``storage`` fixture)."""

from __future__ import annotations

import csv
import io
from typing import Any

import attrs
import pytest
import trio

from storage import (
    SNIPPET_MATCH_END,
    SNIPPET_MATCH_START,
    AppendRequest,
    AuthorType,
    BanKind,
    CloseReason,
    Conflict,
    ConversationFilter,
    ConversationPatch,
    ConversationState,
    EventKind,
    NotFound,
    PageView,
    Role,
    Session,
    Visibility,
)
from storage._base import SqlStorage
from storage.schema import migrations
from tests.storage.conftest import Opener
from tests.storage.helpers import message, new_conversation


async def test_schema_version_is_visible_and_reopen_is_idempotent(
    storage: SqlStorage, open_store: Opener
) -> None:
    latest = len(migrations(storage.dialect.name))  # never a hard-coded number
    assert await storage.schema_version() == latest
    async with open_store() as again:
        assert await again.schema_version() == latest
    await storage.ping()


async def test_workspace_agent_group_crud(storage: SqlStorage) -> None:
    ws = await storage.create_workspace(
        name="Acme", allowed_origins=["https://acme.test"], settings={"color": "#fff", "ü": 1}
    )
    assert await storage.get_workspace(ws.id) == ws
    assert await storage.get_workspace_by_widget_key(ws.widget_key) == ws
    assert [w.id for w in await storage.list_workspaces()] == [ws.id]
    updated = await storage.update_workspace(ws.id, retention_days=30, name="Acme2")
    assert (updated.retention_days, updated.name) == (30, "Acme2")

    group = await storage.create_group(ws.id, name="Sales")
    agent = await storage.create_agent(
        ws.id,
        username="Alice",
        display_name="Alice",
        password_hash="h",
        role=Role.ADMIN,
        group_ids=[group.id],
    )
    assert agent.username == "alice"
    assert await storage.find_agent_by_username("ALICE") == agent
    with pytest.raises(Conflict):
        await storage.create_agent(ws.id, username="alice", display_name="x", password_hash=None)
    changed = await storage.update_agent(ws.id, agent.id, password_hash="h2", enabled=False)
    assert changed.enabled is False and changed.password_changed_at >= agent.password_changed_at
    await storage.delete_group(ws.id, group.id)
    after = await storage.get_agent(ws.id, agent.id)
    assert after is not None and after.group_ids == ()
    assert await storage.list_groups(ws.id) == []

    canned = await storage.create_canned_response(ws.id, shortcut="hi", text="Hello!")
    canned = await storage.update_canned_response(ws.id, canned.id, text="Hi!")
    assert [c.text for c in await storage.list_canned_responses(ws.id)] == ["Hi!"]
    await storage.delete_canned_response(ws.id, canned.id)
    with pytest.raises(NotFound):
        await storage.delete_canned_response(ws.id, canned.id)
    with pytest.raises(TypeError):
        await storage.update_agent(ws.id, agent.id, workspace_id="other")


async def test_every_read_path_hides_other_workspaces(storage: SqlStorage) -> None:
    ws, conv = await new_conversation(storage, "mine")
    other, _ = await new_conversation(storage, "theirs")
    agent = await storage.create_agent(ws.id, username="a", display_name="A", password_hash=None)
    group = await storage.create_group(ws.id, name="g")
    await storage.append(message(conv, "secret words"))
    await storage.record_routing_decision(ws.id, conversation_id=conv.id, agent_id=None, reason="q")
    ban = await storage.add_ban(ws.id, kind=BanKind.IP, value="1.2.3.4")
    await storage.audit(ws.id, actor="system", action="x")
    token = await storage.create_api_token(
        ws.id, agent_id=agent.id, name="t", token_hash="th", scopes=["admin"]
    )
    canned = await storage.create_canned_response(ws.id, shortcut="s", text="t")
    foreign = other.id

    assert await storage.get_agent(foreign, agent.id) is None
    assert await storage.get_group(foreign, group.id) is None
    assert await storage.get_visitor(foreign, conv.visitor_id) is None
    assert await storage.find_visitor_by_token_hash(foreign, "hash-mine") is None
    assert await storage.get_conversation(foreign, conv.id) is None
    assert await storage.history(foreign, conv.id) == []
    assert await storage.search(foreign, "secret") == []
    assert (
        await storage.list_conversations(foreign, ConversationFilter(visitor_id=conv.visitor_id))
    ).items == ()
    assert await storage.list_visitor_conversations(foreign, conv.visitor_id) == []
    assert await storage.list_routing_decisions(foreign, conversation_id=conv.id) == []
    assert await storage.is_banned(foreign, visitor_id=None, ip="1.2.3.4") is False
    assert all(e.action != "x" for e in (await storage.list_audit(foreign)).items)
    assert [t.id for t in await storage.list_api_tokens(foreign)] == []
    assert await storage.list_page_views(foreign, conv.visitor_id) == []
    assert (await storage.report(foreign, since=0, until=1e12)).total_chats == 1  # its own only
    for call in (
        storage.update_agent(foreign, agent.id, display_name="x"),
        storage.update_group(foreign, group.id, name="x"),
        storage.update_visitor(foreign, conv.visitor_id, name="x"),
        storage.delete_group(foreign, group.id),
        storage.remove_ban(foreign, ban.id),
        storage.revoke_api_token(foreign, token.id),
        storage.delete_canned_response(foreign, canned.id),
        storage.create_conversation(foreign, visitor_id=conv.visitor_id),
        storage.add_page_view(foreign, PageView(visitor_id=conv.visitor_id, url="u")),
        storage.append(
            AppendRequest(
                workspace_id=foreign,
                conversation_id=conv.id,
                kind=EventKind.MESSAGE,
                author_type=AuthorType.VISITOR,
                body="intruder",
            )
        ),
        storage.record_routing_decision(
            foreign, conversation_id=conv.id, agent_id=None, reason="x"
        ),
        storage.create_api_token(foreign, agent_id=agent.id, name="t", token_hash="x", scopes=[]),
        storage.erase_visitor(foreign, conv.visitor_id),
    ):
        with pytest.raises(NotFound):
            await call
    assert [e.body for e in await storage.history(ws.id, conv.id)] == ["secret words"]


async def test_group_commit_gives_gapless_seqs_and_each_caller_its_event(
    storage: SqlStorage,
) -> None:
    ws = await storage.create_workspace(name="load")
    visitor = await storage.create_visitor(ws.id, token_hash=None)
    conversations = [
        await storage.create_conversation(ws.id, visitor_id=visitor.id) for _ in range(8)
    ]
    results: dict[tuple[str, str], int] = {}

    async def send(conv_index: int, n: int) -> None:
        conv = conversations[conv_index]
        result = await storage.append(message(conv, f"m{n}", client_msg_id=f"c{n}"))
        assert result.event.body == f"m{n}" and not result.duplicate
        results[(conv.id, f"c{n}")] = result.event.seq

    async with trio.open_nursery() as nursery:
        for n in range(400):
            nursery.start_soon(send, n % 8, n)
    for conv in conversations:
        seqs = sorted(s for (cid, _), s in results.items() if cid == conv.id)
        assert seqs == list(range(1, 51))
        events = await storage.history(ws.id, conv.id, after_seq=0, limit=100)
        assert [e.seq for e in events] == list(range(1, 51))
        assert {(conv.id, e.client_msg_id): e.seq for e in events} == {
            k: v for k, v in results.items() if k[0] == conv.id
        }
        stored = await storage.get_conversation(ws.id, conv.id)
        assert stored is not None and stored.last_seq == 50


async def test_append_many_is_ordered_and_applies_patches(storage: SqlStorage) -> None:
    ws, conv = await new_conversation(storage)
    results = await storage.append_many(
        [
            message(
                conv,
                "one",
                patch=ConversationPatch(
                    state=ConversationState.ACTIVE, assignee_id="ag1", tags=("vip",)
                ),
            ),
            message(conv, "two", patch=ConversationPatch(first_response_at=123.0)),
            message(conv, "three", patch=ConversationPatch(first_response_at=999.0, rating=5)),
        ]
    )
    assert [r.event.seq for r in results] == [1, 2, 3]
    stored = await storage.get_conversation(ws.id, conv.id)
    assert stored is not None
    assert (stored.state, stored.assignee_id, stored.tags) == (
        ConversationState.ACTIVE,
        "ag1",
        ("vip",),
    )
    assert (stored.first_response_at, stored.rating, stored.last_seq) == (123.0, 5, 3)
    assert stored.last_activity_at == results[-1].event.created_at
    await storage.append(
        message(
            conv,
            "bye",
            patch=ConversationPatch(
                state=ConversationState.CLOSED,
                close_reason=CloseReason.RESOLVED,
                closed_at=200.0,
                clear_assignee=True,
            ),
        )
    )
    stored = await storage.get_conversation(ws.id, conv.id)
    assert stored is not None and stored.assignee_id is None and stored.closed_at == 200.0


async def test_retry_with_same_client_msg_id_returns_original_also_after_reopen(
    storage: SqlStorage, open_store: Opener
) -> None:
    ws, conv = await new_conversation(storage)
    first = await storage.append(message(conv, "hello", client_msg_id="abc"))
    again = await storage.append(message(conv, "hello (resent)", client_msg_id="abc"))
    assert again.duplicate and again.event == first.event
    both = await storage.append_many(
        [message(conv, "x", client_msg_id="dup"), message(conv, "x", client_msg_id="dup")]
    )
    assert [b.duplicate for b in both] == [False, True] and both[0].event == both[1].event
    async with open_store() as reopened:
        retried = await reopened.append(message(conv, "hello", client_msg_id="abc"))
        assert retried.duplicate and retried.event == first.event
        assert (await reopened.get_conversation(ws.id, conv.id)).last_seq == 2  # type: ignore[union-attr]


async def test_missing_conversation_fails_only_that_request(storage: SqlStorage) -> None:
    ws, conv = await new_conversation(storage)
    outcomes: dict[str, Any] = {}

    async def good() -> None:
        outcomes["good"] = await storage.append(message(conv, "fine"))

    async def bad() -> None:
        with pytest.raises(NotFound):
            await storage.append(
                AppendRequest(
                    workspace_id=ws.id,
                    conversation_id="nope",
                    kind=EventKind.MESSAGE,
                    author_type=AuthorType.VISITOR,
                    body="lost",
                )
            )
        outcomes["bad"] = True

    async with trio.open_nursery() as nursery:
        nursery.start_soon(bad)
        nursery.start_soon(good)
    assert outcomes["bad"] and outcomes["good"].event.seq == 1


async def test_failed_commit_fails_only_the_refused_append_of_the_batch(
    open_store: Opener,
) -> None:
    from storage import GroupCommitConfig
    from storage.errors import CommitFailed

    # A long linger puts all appends in one batch; one unstorable row fails that commit, and
    # the committer isolates it (tests/storage/test_poisoned_batch.py has the variants).
    async with open_store(group_commit=GroupCommitConfig(max_batch=64, max_delay_s=0.3)) as store:
        ws, conv = await new_conversation(store)
        failures: list[BaseException] = []

        async def send(req: AppendRequest) -> None:
            try:
                await store.append(req)
            except CommitFailed as err:
                failures.append(err)

        # Text no database can store (a lone surrogate; PostgreSQL also refuses NUL).
        poison = message(conv, "bad \x00 \ud800", client_msg_id="p")
        async with trio.open_nursery() as nursery:
            for n in range(5):
                nursery.start_soon(send, message(conv, f"ok {n}"))
            nursery.start_soon(send, poison)
        assert len(failures) == 1
        stored = await store.history(ws.id, conv.id)
        assert sorted(e.body or "" for e in stored) == [f"ok {n}" for n in range(5)]
        ok = await store.append(message(conv, "after"))
        assert ok.event.seq == 6


def attrs_evolve(inst: Any, **changes: Any) -> Any:
    return attrs.evolve(inst, **changes)


async def test_history_after_before_and_visibility(storage: SqlStorage) -> None:
    ws, conv = await new_conversation(storage)
    for n in range(1, 11):
        vis = Visibility.AGENTS if n % 5 == 0 else Visibility.ALL
        kind = EventKind.NOTE if n % 5 == 0 else EventKind.MESSAGE
        await storage.append(message(conv, f"m{n}", visibility=vis, kind=kind))
    assert [e.seq for e in await storage.history(ws.id, conv.id, after_seq=3, limit=3)] == [4, 5, 6]
    assert [e.seq for e in await storage.history(ws.id, conv.id, before_seq=8, limit=3)] == [
        5,
        6,
        7,
    ]
    assert [e.seq for e in await storage.history(ws.id, conv.id, limit=2)] == [9, 10]
    visible = await storage.history(ws.id, conv.id, after_seq=0, include_agents_only=False)
    assert [e.seq for e in visible] == [1, 2, 3, 4, 6, 7, 8, 9]


async def test_conversation_filters_and_cursor_pagination(storage: SqlStorage) -> None:
    clock = iter(range(1000, 2000))
    ws = await storage.create_workspace(name="w")
    visitor = await storage.create_visitor(ws.id, token_hash=None)
    ids = []
    for n in range(7):
        conv = await storage.create_conversation(ws.id, visitor_id=visitor.id)
        ids.append(conv.id)
        if n % 2 == 0:
            await storage.append(
                message(
                    conv,
                    "x",
                    patch=ConversationPatch(
                        tags=("vip", "billing") if n == 4 else ("vip",),
                        assignee_id="ag",
                        state=ConversationState.ACTIVE,
                    ),
                )
            )
    next(clock)
    seen: list[str] = []
    cursor = None
    while True:
        page = await storage.list_conversations(ws.id, ConversationFilter(), cursor=cursor, limit=3)
        seen += [c.id for c in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == 7
    created = [
        (c.created_at, c.id)
        for c in (await storage.list_conversations(ws.id, ConversationFilter(), limit=50)).items
    ]
    assert created == sorted(created, reverse=True)
    vip = await storage.list_conversations(ws.id, ConversationFilter(tag="vip"))
    assert len(vip.items) == 4
    billing = await storage.list_conversations(ws.id, ConversationFilter(tag="billing"))
    assert [c.id for c in billing.items] == [ids[4]]
    active = await storage.list_conversations(
        ws.id, ConversationFilter(state=ConversationState.ACTIVE, assignee_id="ag")
    )
    assert len(active.items) == 4
    assert len(await storage.list_open_conversations(ws.id)) == 7
    assert len(await storage.list_visitor_conversations(ws.id, visitor.id)) == 7
    none = await storage.list_conversations(ws.id, ConversationFilter(created_after=1e12))
    assert none.items == () and none.next_cursor is None


async def test_search_finds_messages_and_notes_with_snippets(storage: SqlStorage) -> None:
    ws, conv = await new_conversation(storage)
    await storage.append(message(conv, "My invoice is wrong"))
    await storage.append(
        message(
            conv, "Refund the INVOICE please", kind=EventKind.NOTE, visibility=Visibility.AGENTS
        )
    )
    await storage.append(message(conv, "invoice", kind=EventKind.STATUS))
    await storage.append(message(conv, "מה שלום invoice 🙂"))
    hits = await storage.search(ws.id, "invoice")
    assert [h.seq for h in hits] == [4, 2, 1]
    marked = SNIPPET_MATCH_START + "invoice" + SNIPPET_MATCH_END
    assert marked in hits[-1].snippet.lower()
    assert [h.seq for h in await storage.search(ws.id, "refund invoice")] == [2]
    assert await storage.search(ws.id, 'NEAR( " OR *') == []
    assert await storage.search(ws.id, "") == []


async def test_search_pages_are_newest_first_whether_the_page_fills_or_not(
    storage: SqlStorage,
) -> None:
    # PostgreSQL answers a full page from the newest events and a short one from the index:
    # both must give the same newest-first matches.
    ws, conv = await new_conversation(storage)
    for n in range(1, 13):
        await storage.append(message(conv, f"parcel {n}" if n % 2 else f"other {n}"))
    assert [h.seq for h in await storage.search(ws.id, "parcel", limit=3)] == [11, 9, 7]
    assert [h.seq for h in await storage.search(ws.id, "parcel", limit=10)] == [11, 9, 7, 5, 3, 1]


async def test_visitors_page_views_bans_audit_tokens_sessions(storage: SqlStorage) -> None:
    ws, conv = await new_conversation(storage)
    v = await storage.update_visitor(ws.id, conv.visitor_id, name="Zoë", attributes={"plan": "pro"})
    assert v.attributes == {"plan": "pro"}
    await storage.add_page_view(ws.id, PageView(visitor_id=v.id, url="/a", at=1.0))
    await storage.add_page_view(ws.id, PageView(visitor_id=v.id, url="/b", at=2.0))
    assert [p.url for p in await storage.list_page_views(ws.id, v.id)] == ["/b", "/a"]

    await storage.add_ban(ws.id, kind=BanKind.VISITOR, value=v.id, expires_at=1.0)
    assert not await storage.is_banned(ws.id, visitor_id=v.id, ip=None)
    ban = await storage.add_ban(ws.id, kind=BanKind.IP, value="10.0.0.1")
    assert await storage.is_banned(ws.id, visitor_id=None, ip="10.0.0.1")
    await storage.remove_ban(ws.id, ban.id)
    assert not await storage.is_banned(ws.id, visitor_id=v.id, ip="10.0.0.1")

    for n in range(5):
        await storage.audit(ws.id, actor="cli", action=f"a{n}", details={"n": n})
    page = await storage.list_audit(ws.id, limit=3)
    rest = await storage.list_audit(ws.id, limit=3, cursor=page.next_cursor)
    assert len(page.items) == 3 and len(rest.items) == 2 and rest.next_cursor is None

    agent = await storage.create_agent(ws.id, username="bob", display_name="B", password_hash=None)
    token = await storage.create_api_token(
        ws.id, agent_id=agent.id, name="ci", token_hash="t1", scopes=["read"]
    )
    assert await storage.find_api_token("t1") == token
    await storage.revoke_api_token(ws.id, token.id)
    revoked = await storage.find_api_token("t1")
    assert revoked is not None and revoked.revoked_at is not None

    s1 = Session(
        id_hash="s1",
        agent_id=agent.id,
        workspace_id=ws.id,
        csrf_token="c",
        created_at=1.0,
        last_seen_at=1.0,
    )
    await storage.create_session(s1)
    await storage.create_session(attrs_evolve(s1, id_hash="s2"))
    await storage.touch_session("s1", 5.0)
    assert (await storage.get_session("s1")).last_seen_at == 5.0  # type: ignore[union-attr]
    await storage.delete_agent_sessions(agent.id, except_id_hash="s1")
    assert await storage.get_session("s2") is None
    await storage.delete_session("s1")
    assert await storage.get_session("s1") is None
    secret = await storage.get_or_create_secret("signing")
    assert await storage.get_or_create_secret("signing") == secret


async def test_report_aggregates(storage: SqlStorage) -> None:
    ws = await storage.create_workspace(name="r")
    visitor = await storage.create_visitor(ws.id, token_hash=None)
    group = await storage.create_group(ws.id, name="g")
    for n in range(4):
        conv = await storage.create_conversation(ws.id, visitor_id=visitor.id, group_id=group.id)
        patch = ConversationPatch(
            assignee_id="ag1" if n < 3 else None,
            first_response_at=conv.created_at + 10 * (n + 1) if n < 3 else None,
            rating=n + 3 if n < 2 else None,
            close_reason=CloseReason.MISSED if n == 3 else CloseReason.RESOLVED,
        )
        await storage.append(message(conv, "hi", patch=patch))
    report = await storage.report(ws.id, since=0, until=1e12)
    assert report.total_chats == 4 and report.missed_chats == 1
    assert sum(n for _, n in report.chats_per_day) == 4
    assert report.first_response_p50_s == pytest.approx(20, abs=0.01)
    assert report.first_response_p90_s == pytest.approx(30, abs=0.01)
    assert report.average_rating == 3.5
    assert report.per_agent[0]["agent_id"] == "ag1" and report.per_agent[0]["chats"] == 3
    (per_group,) = report.per_group  # every figure of a group: see tests/storage/test_reports
    assert (per_group["group_id"], per_group["chats"], per_group["missed"]) == (group.id, 4, 1)


TRICKY_TEXTS = [
    "Hello 👋🏽 world",
    "مرحبا بالعالم",
    "שלום \u200f(RTL)\u200e",
    'line\nbreak\t"q"',
    "=cmd|' /C calc'!A0",
    "\\u0000 not a nul",
    "\uff46\uff55\uff4c\uff4c \U0001d534",  # full-width and astral letters
]


async def _fill(storage: SqlStorage) -> str:
    ws, conv = await new_conversation(storage)
    await storage.update_workspace(ws.id, settings={"greeting": TRICKY_TEXTS[1]})
    await storage.update_visitor(
        ws.id, conv.visitor_id, name=TRICKY_TEXTS[2], attributes={"k": TRICKY_TEXTS[0]}
    )
    for n, text in enumerate(TRICKY_TEXTS):
        await storage.append(message(conv, text, client_msg_id=f"c{n}", data={"t": text}))
    await storage.create_agent(ws.id, username="ann", display_name="Ann", password_hash="$argon")
    await storage.record_routing_decision(
        ws.id,
        conversation_id=conv.id,
        agent_id=None,
        reason="queued",
        details={"why": "none online"},
    )
    await storage.audit(ws.id, actor="cli", action="test")
    return ws.id


async def _collect(lines: Any) -> list[str]:
    return [line async for line in lines]


async def test_export_import_round_trip_is_byte_exact(storage: SqlStorage, tmp_path: Any) -> None:
    from storage import open_backend

    workspace_id = await _fill(storage)
    exported = await _collect(storage.export_jsonl(workspace_id))
    assert exported[0].startswith('{"format":"livechat-export","version":1')
    assert any("👋🏽" in line for line in exported) and any("مرحبا" in line for line in exported)

    async def lines() -> Any:
        for line in exported:
            yield line

    # Into an empty SQLite database (the migration path from PostgreSQL works the same way).
    async with open_backend(f"sqlite:///{tmp_path}/restored.db") as target:
        assert await target.import_jsonl(lines()) == len(exported) - 2
        again = await _collect(target.export_jsonl(workspace_id))
        assert "".join(again).encode() == "".join(exported).encode()
        history = await target.history(workspace_id, (await target.list_workspaces())[0].id)
        assert history == []  # a workspace id is not a conversation id: nothing leaks
        from storage.errors import RestoreError

        with pytest.raises(RestoreError):  # not empty any more
            await target.import_jsonl(lines())


async def test_import_into_postgres_from_sqlite_export(tmp_path: Any) -> None:
    from storage import open_backend
    from tests.pg import pg_schema_url

    async with open_backend(f"sqlite:///{tmp_path}/src.db") as source:
        workspace_id = await _fill(source)
        exported = await _collect(source.export_database_jsonl())

    async def lines() -> Any:
        for line in exported:
            yield line

    with pg_schema_url() as url:
        async with open_backend(url) as target:
            await target.import_jsonl(lines())
            assert "".join(await _collect(target.export_database_jsonl())) == "".join(exported)
            hits = await target.search(workspace_id, "world")
            assert [h.body for h in hits] == [TRICKY_TEXTS[0]]


async def test_truncated_export_is_refused(storage: SqlStorage) -> None:
    from storage.errors import RestoreError

    workspace_id = await _fill(storage)
    exported = await _collect(storage.export_jsonl(workspace_id))
    await storage.purge_workspace(workspace_id)

    async def truncated() -> Any:
        for line in exported[:-3]:
            yield line

    with pytest.raises(RestoreError, match="truncated"):
        await storage.import_jsonl(truncated())
    assert await storage.list_workspaces() == []  # all or nothing


async def test_csv_export_escapes_formulas(storage: SqlStorage) -> None:
    ws, conv = await new_conversation(storage)
    await storage.update_visitor(ws.id, conv.visitor_id, name='=HYPERLINK("x")', email="@evil")
    await storage.append(
        message(conv, "x", patch=ConversationPatch(tags=("-1+1", "ok"), rating_comment="+SUM(A1)"))
    )
    text = "".join(await _collect(storage.export_csv(ws.id)))
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][0] == "conversation_id" and len(rows) == 2
    row = dict(zip(rows[0], rows[1], strict=True))
    assert row["visitor_name"] == '\'=HYPERLINK("x")'
    assert row["visitor_email"] == "'@evil"
    assert row["tags"] == "'-1+1, ok"
    assert row["rating_comment"] == "'+SUM(A1)"
    for cell in rows[1]:
        assert not cell.startswith(("=", "+", "-", "@", "\t", "\r"))


async def test_retention_erasure_and_purge_leave_audit_entries(open_store: Opener) -> None:
    now = [1_000_000.0]
    async with open_store(clock=lambda: now[0]) as store:
        ws, old = await new_conversation(store)
        await store.append(message(old, "old news"))
        now[0] += 40 * 86400
        fresh = await store.create_conversation(ws.id, visitor_id=old.visitor_id)
        await store.append(message(fresh, "fresh"))
        assert await store.purge_conversations_older_than(ws.id, days=30) == 1
        assert await store.get_conversation(ws.id, old.id) is None
        assert await store.search(ws.id, "old") == []
        assert await store.get_conversation(ws.id, fresh.id) is not None
        actions = [e.action for e in (await store.list_audit(ws.id)).items]
        assert actions == ["retention.purge"]

        now[0] += 1
        await store.erase_visitor(ws.id, old.visitor_id)
        assert await store.get_visitor(ws.id, old.visitor_id) is None
        assert await store.list_visitor_conversations(ws.id, old.visitor_id) == []
        audit = (await store.list_audit(ws.id)).items
        assert audit[0].action == "visitor.erased"
        assert audit[0].target == f"visitor:{old.visitor_id}"

        await store.purge_workspace(ws.id)
        assert await store.get_workspace(ws.id) is None
        rows = await store._fetch("SELECT action, target FROM audit_log WHERE workspace_id IS NULL")
        assert rows == [{"action": "workspace.purged", "target": f"workspace:{ws.id}"}]


async def test_retries_are_idempotent_across_two_open_storages(
    storage: SqlStorage, open_store: Opener
) -> None:
    """Two servers on one database (separate connections and committers) racing one retry."""
    ws, conv = await new_conversation(storage)
    async with open_store() as second:
        results: list[Any] = []

        async def send(store: SqlStorage, n: int) -> None:
            results.append(await store.append(message(conv, f"try {n}", client_msg_id="same")))

        async with trio.open_nursery() as nursery:
            for n in range(6):
                nursery.start_soon(send, storage if n % 2 else second, n)
    assert sum(not r.duplicate for r in results) == 1
    assert {r.event.seq for r in results} == {1}
    assert len(await storage.history(ws.id, conv.id)) == 1


def test_ids_never_start_with_a_dash_so_cli_flags_accept_them() -> None:
    from storage._records import new_id

    assert not any(new_id().startswith("-") for _ in range(20_000))


async def test_a_group_may_be_public_a_department_visitors_choose(storage: SqlStorage) -> None:
    ws = await storage.create_workspace(name="Acme")
    sales = await storage.create_group(ws.id, name="Sales", public=True)
    back = await storage.create_group(ws.id, name="Back office")
    assert (sales.public, back.public) == (True, False)
    assert [(g.name, g.public) for g in await storage.list_groups(ws.id)] == [
        ("Back office", False),
        ("Sales", True),
    ]
    hidden = await storage.update_group(ws.id, sales.id, public=False)
    assert hidden.public is False
    again = await storage.get_group(ws.id, sales.id)
    assert again is not None and again.public is False


async def test_trigger_firings_keep_the_latest_per_visitor_and_go_with_the_visitor(
    storage: SqlStorage,
) -> None:
    ws = await storage.create_workspace(name="Acme")
    other = await storage.create_workspace(name="Other")
    v = await storage.create_visitor(ws.id, token_hash=None)
    w = await storage.create_visitor(ws.id, token_hash=None)
    await storage.record_trigger_firing(ws.id, v.id, "greet", 100.0)
    await storage.record_trigger_firing(ws.id, v.id, "greet", 250.0)  # fired again: latest wins
    await storage.record_trigger_firing(ws.id, v.id, "tag", 120.0)
    await storage.record_trigger_firing(ws.id, w.id, "greet", 90.0)
    assert await storage.visitor_trigger_firings(ws.id, v.id) == {"greet": 250.0, "tag": 120.0}
    assert await storage.visitor_trigger_firings(other.id, v.id) == {}
    assert await storage.recent_trigger_firings(ws.id, since=100.0) == {
        (v.id, "greet"): 250.0,
        (v.id, "tag"): 120.0,
    }
    await storage.erase_visitor(ws.id, v.id)
    assert await storage.visitor_trigger_firings(ws.id, v.id) == {}
    assert await storage.recent_trigger_firings(ws.id, since=0.0) == {(w.id, "greet"): 90.0}
