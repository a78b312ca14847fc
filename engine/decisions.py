"""The routing decision log, written off the routing path.

Every routing decision (who got a chat and why, or why nobody did) is recorded with its reason.
Writing each one as it is made put one single-row write transaction, queued behind the one
SQLite writer, inside the router's and the conversation's loops: a new chat waited for it before
its assignment went out. Now ``DecisionLog.record`` only appends to a list (no await), and one
writer task stores what has accumulated with one ``storage.record_routing_decisions`` call per
batch. Each decision keeps the wall-clock time it was made, so the log's order is unchanged.

Guarantees: ``flush`` returns once everything recorded before it is stored (readers of the log
call it first, so they see their own decisions); ``ChatEngine.shutdown`` flushes after the
actors have stopped. A failed write keeps the batch and retries after ``RETRY_AFTER_S``; past
``max_pending`` unwritten decisions (storage down for long) the oldest are dropped and counted.
A write that is cancelled or times out keeps its batch for the next try, so at worst a
decision is stored twice (the transaction may have committed after all), never lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import trio

from engine.errors import STORAGE_FAILED_MESSAGE, PersistenceUnavailable
from storage import CommitFailed, NewRoutingDecision, Storage, StorageUnavailable

__all__ = ["DecisionLog"]

log = logging.getLogger(__name__)

MAX_BATCH = 1000  # decisions per storage call
RETRY_AFTER_S = 1.0  # after a failed write


class DecisionLog:
    """Routing decisions waiting to be stored; one per engine."""

    def __init__(
        self,
        storage: Storage,
        *,
        timeout_s: float,
        max_pending: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._storage = storage
        self._timeout_s = timeout_s
        self._max_pending = max_pending
        self._clock = clock
        self._pending: list[NewRoutingDecision] = []
        self._wakeup = trio.Event()
        self._write_lock = trio.Lock()
        self.dropped = 0  # decisions lost because storage stayed down

    @property
    def pending(self) -> int:
        """Decisions recorded and not stored yet."""
        return len(self._pending)

    def record(
        self,
        workspace_id: str,
        *,
        conversation_id: str,
        agent_id: str | None,
        reason: str,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """Queue one decision, stamped now; never waits."""
        self._pending.append(
            NewRoutingDecision(
                workspace_id=workspace_id,
                conversation_id=conversation_id,
                agent_id=agent_id,
                reason=reason,
                details=dict(details or {}),
                at=self._clock(),
            )
        )
        if len(self._pending) > self._max_pending:
            excess = len(self._pending) - self._max_pending
            del self._pending[:excess]
            self.dropped += excess
        self._wakeup.set()

    async def flush(self) -> None:
        """Store everything recorded so far; ``PersistenceUnavailable`` if storage fails
        (the decisions stay queued)."""
        async with self._write_lock:
            while self._pending:
                batch = self._pending[:MAX_BATCH]
                del self._pending[:MAX_BATCH]
                try:
                    with trio.fail_after(self._timeout_s):
                        await self._storage.record_routing_decisions(batch)
                except BaseException as exc:
                    self._pending[:0] = batch  # keep them, in order, for the next try
                    if isinstance(exc, trio.TooSlowError):
                        raise PersistenceUnavailable("storage did not answer in time") from exc
                    if isinstance(exc, StorageUnavailable | CommitFailed):
                        log.warning("routing decisions: %s: %s", type(exc).__name__, exc)
                        raise PersistenceUnavailable(STORAGE_FAILED_MESSAGE) from exc
                    raise

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write batches as decisions arrive, until cancelled (``ChatEngine.shutdown`` flushes
        what is left first)."""
        task_status.started()
        while True:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            try:
                await self.flush()
            except PersistenceUnavailable as exc:
                log.warning("routing decisions not stored yet (%d pending): %s", self.pending, exc)
                await trio.sleep(RETRY_AFTER_S)
                self._wakeup.set()

