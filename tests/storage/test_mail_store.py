"""The outbox, agent tokens and inbox on both backends: idempotent enqueue, one claim per
attempt, single-use tokens, inbox items made once per conversation, erasure takes them along."""

from __future__ import annotations

import time

from storage import (
    AgentToken,
    AppendRequest,
    AuthorType,
    CloseReason,
    ConversationPatch,
    ConversationState,
    EventKind,
    InboxItem,
    InboxStatus,
    MailItem,
    MailStatus,
    Visibility,
)
from storage._base import SqlStorage


def _mail(workspace_id: str, *, key: str | None, conversation_id: str | None = None) -> MailItem:
    now = time.time()
    return MailItem(
        id=f"m-{key}-{now}",
        workspace_id=workspace_id,
        conversation_id=conversation_id,
        kind="offline_message",
        dedupe_key=key,
        recipient="team@example.com",
        subject="s",
        text_body="t",
        html_body="<p>t</p>",
        next_attempt_at=now - 1,
        created_at=now,
    )


async def test_outbox_enqueue_is_idempotent_and_each_attempt_is_claimed_once(
    storage: SqlStorage,
) -> None:
    ws = await storage.create_workspace(name="Mail")
    assert await storage.enqueue_mail(_mail(ws.id, key="k1")) is True
    assert await storage.enqueue_mail(_mail(ws.id, key="k1")) is False
    [due] = await storage.due_mail(time.time())
    assert await storage.claim_mail(due, lease_until=time.time() + 60) is True
    assert await storage.claim_mail(due, lease_until=time.time() + 60) is False  # taken
    assert await storage.due_mail(time.time()) == []
    await storage.mail_attempt_failed(due.id, error="timeout", retry_at=time.time() - 1)
    [again] = await storage.due_mail(time.time())
    assert (again.attempts, again.last_error) == (1, "timeout")
    assert await storage.claim_mail(again, lease_until=time.time() + 60)
    await storage.mail_sent(again.id, at=time.time())
    [logged] = await storage.list_mail(ws.id)
    assert (logged.status, logged.attempts, logged.last_error) == (MailStatus.SENT, 2, None)
    assert await storage.next_mail_due_at() is None
    assert await storage.enqueue_mail(_mail(ws.id, key="k2"))  # queued: never pruned
    assert await storage.prune_mail(before=time.time() - 60) == 0
    assert await storage.prune_mail(before=time.time() + 60) == 1
    assert [m.dedupe_key for m in await storage.list_mail(ws.id)] == ["k2"]


async def test_an_agent_token_works_once_and_not_after_expiry(storage: SqlStorage) -> None:
    ws = await storage.create_workspace(name="Tokens")
    agent = await storage.create_agent(ws.id, username="tok", display_name="T", password_hash=None)
    now = time.time()
    for name, expires in (("live", now + 60), ("old", now - 1), ("other", now + 60)):
        await storage.create_agent_token(
            AgentToken(
                token_hash=name,
                workspace_id=ws.id,
                agent_id=agent.id,
                purpose="password_reset",
                created_at=now,
                expires_at=expires,
            )
        )
    assert await storage.use_agent_token("old", purposes=("password_reset",), now=now) is None
    used = await storage.use_agent_token("live", purposes=("password_reset",), now=now)
    assert used is not None and used.agent_id == agent.id
    assert await storage.use_agent_token("live", purposes=("password_reset",), now=now) is None
    # using one spends the agent's other reset links too
    assert await storage.use_agent_token("other", purposes=("password_reset",), now=now) is None


async def test_inbox_items_are_made_once_and_erased_with_the_visitor(storage: SqlStorage) -> None:
    ws = await storage.create_workspace(name="Inbox")
    visitor = await storage.create_visitor(ws.id, token_hash=None)
    conv = await storage.create_conversation(ws.id, visitor_id=visitor.id)
    await storage.append(
        AppendRequest(
            workspace_id=ws.id,
            conversation_id=conv.id,
            kind=EventKind.OFFLINE_MESSAGE,
            visibility=Visibility.ALL,
            author_type=AuthorType.VISITOR,
            author_id=visitor.id,
            body="hello",
            patch=ConversationPatch(
                state=ConversationState.CLOSED,
                close_reason=CloseReason.OFFLINE,
                closed_at=time.time(),
            ),
        )
    )
    [found] = await storage.unscanned_inbox_conversations(since=time.time() - 60)
    assert found.id == conv.id
    item = InboxItem(conversation_id=conv.id, workspace_id=ws.id, kind="offline")
    notice = _mail(ws.id, key=f"notice:{conv.id}", conversation_id=conv.id)
    assert await storage.add_inbox_item(item, mail=notice) is True
    assert await storage.add_inbox_item(item, mail=notice) is False
    assert await storage.unscanned_inbox_conversations(since=time.time() - 60) == []
    assert await storage.count_inbox(ws.id, status=InboxStatus.OPEN) == 1
    done = await storage.update_inbox_item(
        ws.id, conv.id, now=time.time(), changes={"status": InboxStatus.DONE}
    )
    assert done is not None and done.status is InboxStatus.DONE
    other = await storage.create_workspace(name="Other")
    assert await storage.update_inbox_item(other.id, conv.id, now=0, changes={}) is None
    await storage.erase_visitor(ws.id, visitor.id)
    assert await storage.list_inbox(ws.id) == []
    assert await storage.list_mail(ws.id) == []
