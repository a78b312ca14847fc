"""Reports add up: a known day of chats, every figure checked (both backends)."""

from __future__ import annotations

import csv
import io
from typing import Any

from storage import (
    AppendRequest,
    AuthorType,
    CloseReason,
    ConversationPatch,
    ConversationState,
    EventKind,
    NewRoutingDecision,
    report_csv,
)
from tests.storage.conftest import Opener

DAY = 1_795_651_200.0  # 2026-11-26 00:00 UTC
NINE = DAY + 9 * 3600


async def _known_day(store: Any, now: list[float]) -> dict[str, str]:
    """Seven chats on the day, one the day before; returns names -> ids."""
    ws = await store.create_workspace(name="acme")
    a = await store.create_agent(ws.id, username="alice", display_name="=Alice", password_hash=None)
    b = await store.create_agent(ws.id, username="bob", display_name="Bob", password_hash=None)
    sales = await store.create_group(ws.id, name="Sales")
    support = await store.create_group(ws.id, name="Support")
    visitor = await store.create_visitor(ws.id, token_hash="v")

    async def chat(
        at: float,
        *,
        group: str | None = None,
        agent: str | None = None,
        answer_after: float | None = None,
        close_after: float | None = None,
        reason: CloseReason = CloseReason.RESOLVED,
        rating: int | None = None,
        origin: str | None = None,
    ) -> str:
        now[0] = at
        conv = await store.create_conversation(
            ws.id, visitor_id=visitor.id, group_id=group, origin_key=origin
        )
        if answer_after is not None:
            await store.append(
                AppendRequest(
                    workspace_id=ws.id,
                    conversation_id=conv.id,
                    kind=EventKind.MESSAGE,
                    author_type=AuthorType.AGENT,
                    author_id=agent,
                    body="hello",
                    patch=ConversationPatch(
                        state=ConversationState.ACTIVE,
                        assignee_id=agent,
                        first_response_at=at + answer_after,
                    ),
                )
            )
        if close_after is not None:
            await store.append(
                AppendRequest(
                    workspace_id=ws.id,
                    conversation_id=conv.id,
                    kind=EventKind.STATUS,
                    author_type=AuthorType.SYSTEM,
                    patch=ConversationPatch(
                        state=ConversationState.CLOSED,
                        close_reason=reason,
                        closed_at=at + close_after,
                        rating=rating,
                    ),
                )
            )
        return str(conv.id)

    # the day before: outside the range
    await chat(NINE - 86400, group=sales.id, agent=a.id, answer_after=5, close_after=50)
    await chat(NINE, group=sales.id, agent=a.id, answer_after=30, close_after=600, rating=5)
    await chat(NINE + 60, group=sales.id, agent=b.id, answer_after=90, close_after=300, rating=2)
    await chat(NINE + 120, group=sales.id, close_after=180, reason=CloseReason.MISSED)
    await chat(NINE + 180, close_after=0, reason=CloseReason.OFFLINE)  # offline form
    await chat(NINE + 240, group=sales.id)  # still queued, nobody answered
    await chat(
        NINE + 300,
        agent=a.id,
        answer_after=0,
        close_after=120,
        origin=f"start_chat:{visitor.id}:{a.id}:m1",
    )
    fell_back = await chat(
        NINE + 360, group=sales.id, agent=b.id, answer_after=60, close_after=240, rating=4
    )
    await store.record_routing_decisions(
        [
            NewRoutingDecision(
                workspace_id=ws.id,
                conversation_id=fell_back,
                agent_id=b.id,
                reason="group_fallback",
                at=NINE + 400,
                details={"load": 0, "candidates": 1, "group_id": support.id},
            )
        ]
    )
    return {"ws": ws.id, "a": a.id, "b": b.id, "sales": sales.id, "support": support.id}


async def test_report_of_a_known_day_adds_up(open_store: Opener) -> None:
    now = [NINE]
    async with open_store(clock=lambda: now[0]) as store:
        ids = await _known_day(store, now)
        r = await store.report(ids["ws"], since=DAY, until=DAY + 86400)
        names = {ids["a"]: "=Alice", ids["b"]: "Bob", ids["sales"]: "Sales"}
        names[ids["support"]] = "Support"
    assert r.chats_per_day == (("2026-11-26", 7),)
    assert r.total_chats == 7
    assert r.agent_started_chats == 1
    # missed: the one nobody took, the offline form, the one still waiting
    assert r.missed_chats == 3
    # first response over visitor-started answered chats: 30, 90, 60 (not the agent's 0 s)
    assert r.first_response_p50_s == 60.0
    assert r.first_response_p90_s == 90.0
    # duration over closed chats not missed: 600, 300, 120, 240
    assert r.duration_p50_s == 240.0
    assert r.rated_chats == 3
    assert r.average_rating is not None and abs(r.average_rating - 11 / 3) < 1e-9
    assert r.csat_pct == 66.7
    by_agent = {x["agent_id"]: dict(x) for x in r.per_agent}
    assert by_agent == {
        ids["a"]: {"agent_id": ids["a"], "chats": 2, "missed": 0, "frt_p50_s": 30.0,
                   "duration_p50_s": 120.0, "avg_rating": 5.0, "csat_pct": 100.0, "rated": 1},
        ids["b"]: {"agent_id": ids["b"], "chats": 2, "missed": 0, "frt_p50_s": 60.0,
                   "duration_p50_s": 240.0, "avg_rating": 3.0, "csat_pct": 50.0, "rated": 2},
    }  # fmt: skip
    by_group = {x["group_id"]: dict(x) for x in r.per_group}
    # the chat that fell back to Support counts under Support, not Sales
    assert by_group == {
        ids["sales"]: {"group_id": ids["sales"], "chats": 4, "missed": 2, "frt_p50_s": 30.0,
                       "duration_p50_s": 300.0, "avg_rating": 3.5, "csat_pct": 50.0, "rated": 2},
        ids["support"]: {"group_id": ids["support"], "chats": 1, "missed": 0, "frt_p50_s": 60.0,
                         "duration_p50_s": 240.0, "avg_rating": 4.0, "csat_pct": 100.0, "rated": 1},
    }  # fmt: skip
    rows = list(csv.reader(io.StringIO(report_csv(r, names))))
    assert rows[0] == ["scope", "id", "name", "chats", "missed", "frt_p50_s", "duration_p50_s",
                       "avg_rating", "csat_pct", "rated"]  # fmt: skip
    assert rows[1][:5] == ["total", "", "", "7", "3"]
    assert rows[1][5:] == ["60", "240", f"{11 / 3:g}", "66.7", "3"]
    agent_rows = {row[1]: row for row in rows if row[0] == "agent"}
    # a name that looks like a formula is quoted so a spreadsheet shows it as text
    assert agent_rows[ids["a"]][2:] == ["'=Alice", "2", "0", "30", "120", "5", "100", "1"]
    group_rows = {row[1]: row for row in rows if row[0] == "group"}
    assert group_rows[ids["support"]][2:] == ["Support", "1", "0", "60", "240", "4", "100", "1"]
