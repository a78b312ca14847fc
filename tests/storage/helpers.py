"""Small builders shared by the storage tests."""

from __future__ import annotations

from typing import Any

from storage import (
    AppendRequest,
    AuthorType,
    Conversation,
    EventKind,
    Visibility,
    Workspace,
)
from storage._base import SqlStorage


async def new_conversation(
    storage: SqlStorage, name: str = "acme"
) -> tuple[Workspace, Conversation]:
    workspace = await storage.create_workspace(name=name)
    visitor = await storage.create_visitor(workspace.id, token_hash=f"hash-{name}")
    conversation = await storage.create_conversation(workspace.id, visitor_id=visitor.id)
    return workspace, conversation


def message(
    conversation: Conversation,
    body: str,
    *,
    client_msg_id: str | None = None,
    visibility: Visibility = Visibility.ALL,
    kind: EventKind = EventKind.MESSAGE,
    **extra: Any,
) -> AppendRequest:
    return AppendRequest(
        workspace_id=conversation.workspace_id,
        conversation_id=conversation.id,
        kind=kind,
        visibility=visibility,
        author_type=AuthorType.VISITOR,
        body=body,
        client_msg_id=client_msg_id,
        **extra,
    )
