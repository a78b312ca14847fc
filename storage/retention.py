"""The scheduled retention task: per-workspace history retention and terminated-workspace purge.

Run it as a service in the server's nursery::

    await nursery.start(run_retention, storage, interval_s=3600)

Each pass deletes, per workspace with ``retention_days`` set, conversations idle for longer than
that, and purges workspaces terminated more than ``TERMINATED_GRACE_S`` ago (the grace period
lets a customer export before their data goes). Every deletion leaves an audit entry (written by
the storage methods). A pass that fails is logged and retried at the next interval; the task only
ends when cancelled.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

import attrs
import trio

from storage.api import Storage, WorkspaceStatus
from storage.errors import StorageError

TERMINATED_GRACE_S: Final = 30 * 86400.0  # a terminated workspace's data is kept this long
RETENTION_INTERVAL_S: Final = 3600.0

_log = logging.getLogger(__name__)


@attrs.frozen(kw_only=True)
class RetentionPass:
    """What one pass did."""

    conversations_deleted: int = 0
    workspaces_purged: tuple[str, ...] = ()


async def apply_retention(
    storage: Storage,
    *,
    clock: Callable[[], float] = time.time,
    grace_s: float = TERMINATED_GRACE_S,
) -> RetentionPass:
    """One retention pass over every workspace (see the module docstring)."""
    deleted = 0
    purged: list[str] = []
    for workspace in await storage.list_workspaces():
        if workspace.status == WorkspaceStatus.TERMINATED:
            terminated_at = workspace.terminated_at
            if terminated_at is not None and clock() - terminated_at >= grace_s:
                await storage.purge_workspace(workspace.id)
                purged.append(workspace.id)
            continue
        if workspace.retention_days is not None and workspace.retention_days > 0:
            deleted += await storage.purge_conversations_older_than(
                workspace.id, days=workspace.retention_days
            )
    return RetentionPass(conversations_deleted=deleted, workspaces_purged=tuple(purged))


async def run_retention(
    storage: Storage,
    *,
    interval_s: float = RETENTION_INTERVAL_S,
    clock: Callable[[], float] = time.time,
    grace_s: float = TERMINATED_GRACE_S,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Apply retention now and then every ``interval_s`` until cancelled.

    A storage failure (database down) is logged and the pass retried next interval.
    """
    task_status.started()
    while True:
        try:
            done = await apply_retention(storage, clock=clock, grace_s=grace_s)
        except StorageError as err:
            _log.warning("retention pass failed, retrying in %.0f s: %s", interval_s, err)
        else:
            if done.conversations_deleted or done.workspaces_purged:
                _log.info(
                    "retention: %d conversations deleted, workspaces purged: %s",
                    done.conversations_deleted,
                    ", ".join(done.workspaces_purged) or "none",
                )
        await trio.sleep(interval_s)
