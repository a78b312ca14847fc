"""Deletion programs (retention, erasure, workspace purge); each leaves one audit entry.

Each runs as one write transaction, so a deletion is all or nothing and its audit entry is
committed with it. Audit details hold counts and ids, never message bodies. Each also deletes
the rows of the files it removes and returns their ids: the caller deletes their bytes from the
blob store once the transaction has committed.
"""

from __future__ import annotations

from storage._audit import append_audit_program
from storage._sql import Dialect, Program, Q
from storage.errors import NotFound

# Children before parents: no foreign key ever points at a deleted row.
_WORKSPACE_TABLES = (
    "attachments",
    "mail_outbox",
    "agent_tokens",
    "inbox_items",
    "webhook_attempts",
    "webhook_deliveries",
    "webhook_subscriptions",
    "events",
    "routing_decisions",
    "conversations",
    "page_views",
    "trigger_firings",
    "sessions",
    "api_tokens",
    "bans",
    "canned_responses",
    "visitors",
    "agent_two_factor",
    "sso_identities",
    "workspace_sso",
    "agents",
    "agent_groups",
    "audit_log",
    "data_keys",  # crypto-shredding: what a backup still holds of the workspace is sealed
)


def _take_attachments(where: str, args: tuple[str | float, ...]) -> Program[list[str]]:
    found = yield Q(f"SELECT id FROM attachments WHERE {where}", args)
    ids = [str(row["id"]) for row in found.rows]
    if ids:
        yield Q(f"DELETE FROM attachments WHERE {where}", args)
    return ids


def _take_outboxes(
    workspace_id: str, conversations: str, args: tuple[str | float, ...]
) -> Program[tuple[int, int]]:
    """Delete what is about to leave the server about ``conversations`` (a subquery taking
    ``args``): webhook deliveries, queued or logged, with their attempts (a payload holds the
    messages and the visitor's name and email), mail (queued or logged) and inbox items.
    Returns (deliveries, mails) deleted."""
    about = f"workspace_id=? AND conversation_id IN ({conversations})"
    yield Q(
        "DELETE FROM webhook_attempts WHERE workspace_id=? AND delivery_id IN"
        f" (SELECT id FROM webhook_deliveries WHERE {about})",
        (workspace_id, workspace_id, *args),
    )
    webhooks = yield Q(f"DELETE FROM webhook_deliveries WHERE {about}", (workspace_id, *args))
    mail = yield Q(f"DELETE FROM mail_outbox WHERE {about}", (workspace_id, *args))
    yield Q(f"DELETE FROM inbox_items WHERE {about}", (workspace_id, *args))
    return webhooks.rowcount, mail.rowcount


def purge_conversations_program(
    dialect: Dialect, workspace_id: str, *, cutoff: float, days: int, now: float, actor: str
) -> Program[tuple[int, list[str]]]:
    """Delete conversations (their events, files, outgoing mail and webhook deliveries) with no
    activity since ``cutoff``."""
    old = "SELECT id FROM conversations WHERE workspace_id=? AND last_activity_at<?"
    files = yield from _take_attachments(
        f"workspace_id=? AND conversation_id IN ({old})", (workspace_id, workspace_id, cutoff)
    )
    events = yield Q(
        f"DELETE FROM events WHERE workspace_id=? AND conversation_id IN ({old})",
        (workspace_id, workspace_id, cutoff),
    )
    yield Q(
        f"DELETE FROM routing_decisions WHERE workspace_id=? AND conversation_id IN ({old})",
        (workspace_id, workspace_id, cutoff),
    )
    webhooks, mail = yield from _take_outboxes(workspace_id, old, (workspace_id, cutoff))
    deleted = yield Q(
        "DELETE FROM conversations WHERE workspace_id=? AND last_activity_at<?",
        (workspace_id, cutoff),
    )
    if deleted.rowcount:
        details = {
            "days": days,
            "conversations": deleted.rowcount,
            "events": events.rowcount,
            "files": len(files),
            "webhook_deliveries": webhooks,
            "mail": mail,
        }
        yield from append_audit_program(
            dialect, workspace_id, actor=actor, action="retention.purge", at=now, details=details
        )
    return deleted.rowcount, files


def erase_visitor_program(
    dialect: Dialect,
    workspace_id: str,
    visitor_id: str,
    *,
    now: float,
    actor: str,
    ip: str | None = None,
) -> Program[list[str]]:
    """Delete a visitor with their conversations, events, files, page views and bans, and the
    mail and webhook deliveries (queued or logged) about their conversations."""
    found = yield Q(
        "SELECT 1 AS ok FROM visitors WHERE workspace_id=? AND id=?", (workspace_id, visitor_id)
    )
    if found.one() is None:
        raise NotFound(f"visitor {visitor_id!r} not found")
    theirs = "SELECT id FROM conversations WHERE workspace_id=? AND visitor_id=?"
    files = yield from _take_attachments(
        "workspace_id=? AND visitor_id=?", (workspace_id, visitor_id)
    )
    events = yield Q(
        f"DELETE FROM events WHERE workspace_id=? AND conversation_id IN ({theirs})",
        (workspace_id, workspace_id, visitor_id),
    )
    webhooks, mail = yield from _take_outboxes(workspace_id, theirs, (workspace_id, visitor_id))
    yield Q(
        f"DELETE FROM routing_decisions WHERE workspace_id=? AND conversation_id IN ({theirs})",
        (workspace_id, workspace_id, visitor_id),
    )
    conversations = yield Q(
        "DELETE FROM conversations WHERE workspace_id=? AND visitor_id=?",
        (workspace_id, visitor_id),
    )
    yield Q(
        "DELETE FROM page_views WHERE workspace_id=? AND visitor_id=?", (workspace_id, visitor_id)
    )
    yield Q(
        "DELETE FROM trigger_firings WHERE workspace_id=? AND visitor_id=?",
        (workspace_id, visitor_id),
    )
    yield Q(
        "DELETE FROM bans WHERE workspace_id=? AND kind='visitor' AND value=?",
        (workspace_id, visitor_id),
    )
    yield Q("DELETE FROM visitors WHERE workspace_id=? AND id=?", (workspace_id, visitor_id))
    details = {
        "conversations": conversations.rowcount,
        "events": events.rowcount,
        "files": len(files),
        "webhook_deliveries": webhooks,
        "mail": mail,
    }
    yield from append_audit_program(
        dialect,
        workspace_id,
        actor=actor,
        action="visitor.erased",
        target=f"visitor:{visitor_id}",
        at=now,
        details=details,
        ip=ip,
    )
    return files


def purge_workspace_program(
    dialect: Dialect, workspace_id: str, *, now: float, actor: str
) -> Program[list[str]]:
    """Delete every row of a workspace; the audit entry is server-wide (workspace_id NULL),
    so an operator can read it (``GET /audit/server``) after the workspace's own log is gone."""
    counts: dict[str, int] = {}
    found = yield Q("SELECT 1 AS ok FROM workspaces WHERE id=?", (workspace_id,))
    if found.one() is None:
        raise NotFound(f"workspace {workspace_id!r} not found")
    listed = yield Q("SELECT id FROM attachments WHERE workspace_id=?", (workspace_id,))
    files = [str(row["id"]) for row in listed.rows]
    for table in _WORKSPACE_TABLES:
        result = yield Q(f"DELETE FROM {table} WHERE workspace_id=?", (workspace_id,))
        counts[table] = result.rowcount
    yield Q("DELETE FROM audit_heads WHERE chain=?", (workspace_id,))
    yield Q("DELETE FROM workspaces WHERE id=?", (workspace_id,))
    yield from append_audit_program(
        dialect,
        None,
        actor=actor,
        action="workspace.purged",
        target=f"workspace:{workspace_id}",
        at=now,
        details=counts,
    )
    return files
