"""Periodic housekeeping: purge terminated workspaces after their grace period, apply
retention (delete conversations older than a workspace's ``retention_days``).

Runs in the services nursery; one pass every ``housekeeping_interval_s``. A failing pass is
logged and retried at the next interval (the database may be briefly unavailable); it never
takes the server down.
"""

from __future__ import annotations

import logging
import time

import trio

from storage import Storage, WorkspaceStatus

log = logging.getLogger("livechat.housekeeping")
PASS_TIMEOUT_S = 300.0


async def housekeeping_pass(storage: Storage, *, now: float | None = None) -> dict[str, int]:
    """One pass; returns what it did (``purged_workspaces``, ``expired_conversations``)."""
    now = time.time() if now is None else now
    done = {"purged_workspaces": 0, "expired_conversations": 0}
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


async def serve_housekeeping(
    storage: Storage,
    interval_s: float,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    task_status.started()
    while True:
        await trio.sleep(interval_s)
        try:
            with trio.fail_after(PASS_TIMEOUT_S):
                done = await housekeeping_pass(storage)
            if any(done.values()):
                log.info("housekeeping %s", done)
        except Exception:  # supervision boundary: log, retry next interval
            log.exception("housekeeping pass failed")
