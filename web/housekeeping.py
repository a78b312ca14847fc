"""Periodic housekeeping: purge terminated workspaces after their grace period, apply
retention (delete conversations older than a workspace's ``retention_days``).

Runs as the ``housekeeping`` child of the root supervisor; one pass every
``housekeeping_interval_s``. A failing pass is logged and retried at the next interval (the
database may be briefly unavailable); it never takes the server down.
"""

from __future__ import annotations

import logging
import time

import trio

from storage import Storage, WorkspaceStatus

log = logging.getLogger("livechat.housekeeping")
PASS_TIMEOUT_S = 300.0


async def housekeeping_pass(
    storage: Storage, *, now: float | None = None, unsent_files_ttl_s: float = 86400.0
) -> dict[str, int]:
    """One pass; returns what it did (``purged_workspaces``, ``expired_conversations``,
    ``unsent_files``: uploads never attached to a message within ``unsent_files_ttl_s``)."""
    now = time.time() if now is None else now
    done = {"purged_workspaces": 0, "expired_conversations": 0, "unsent_files": 0}
    done["unsent_files"] = await storage.purge_unsent_attachments(older_than_s=unsent_files_ttl_s)
    for ws in await storage.list_workspaces():
        if ws.status is WorkspaceStatus.TERMINATED:
            if ws.terminated_at is not None and ws.terminated_at <= now:
                await storage.purge_workspace(ws.id)  # audited by the purge itself, server-wide
                done["purged_workspaces"] += 1
            continue
        if ws.retention_days:
            # Audited by the deletion itself (``retention.purge``), in its transaction.
            removed = await storage.purge_conversations_older_than(ws.id, days=ws.retention_days)
            done["expired_conversations"] += removed
    return done


async def housekeeping_loop(
    storage: Storage, interval_s: float, unsent_files_ttl_s: float = 86400.0
) -> None:
    """One pass every ``interval_s`` until cancelled (the root supervisor's child)."""
    while True:
        await trio.sleep(interval_s)
        try:
            with trio.fail_after(PASS_TIMEOUT_S):
                done = await housekeeping_pass(storage, unsent_files_ttl_s=unsent_files_ttl_s)
            if any(done.values()):
                log.info("housekeeping %s", done)
        except Exception:  # supervision boundary: log, retry next interval
            log.exception("housekeeping pass failed")
