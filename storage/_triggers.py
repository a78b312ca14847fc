"""Storage of trigger firings: when a trigger last fired for a visitor (issue 16).

A mixin of ``SqlStorage`` (same programs on both backends). The engine keeps each trigger's
per-visitor rate limit (``cooldown_s``) here so that it holds across a restart: the visitor
actor reads its visitor's firings when it starts, the router the workspace's recent ones. A
firing is an upsert: only the latest time per (visitor, trigger) matters. Times are wall-clock
Unix seconds. The rows go with the visitor (erasure) and the workspace (purge).
"""

from __future__ import annotations

from typing import Any, TypeVar

from storage._sql import Program, Q

T = TypeVar("T")


def _rows(q: Q) -> Program[list[dict[str, Any]]]:
    result = yield q
    return result.rows


class TriggerStore:
    """Trigger firings; relies on ``SqlStorage``'s driver methods."""

    async def _write(self, program: Program[T]) -> T:  # pragma: no cover - SqlStorage's
        raise NotImplementedError

    async def _read(self, program: Program[T]) -> T:  # pragma: no cover - SqlStorage's
        raise NotImplementedError

    async def record_trigger_firing(
        self, workspace_id: str, visitor_id: str, trigger_id: str, at: float
    ) -> None:
        """Remember that ``trigger_id`` fired for the visitor at ``at`` (the latest wins)."""

        def program() -> Program[None]:
            yield Q(
                "INSERT INTO trigger_firings (workspace_id, visitor_id, trigger_id, fired_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (workspace_id, visitor_id, trigger_id)"
                " DO UPDATE SET fired_at=excluded.fired_at",
                (workspace_id, visitor_id, trigger_id, float(at)),
            )

        await self._write(program())

    async def visitor_trigger_firings(
        self, workspace_id: str, visitor_id: str
    ) -> dict[str, float]:
        """trigger id -> when it last fired for this visitor."""
        rows = await self._read(
            _rows(
                Q(
                    "SELECT trigger_id, fired_at FROM trigger_firings"
                    " WHERE workspace_id=? AND visitor_id=?",
                    (workspace_id, visitor_id),
                )
            )
        )
        return {str(r["trigger_id"]): float(r["fired_at"]) for r in rows}

    async def recent_trigger_firings(
        self, workspace_id: str, since: float
    ) -> dict[tuple[str, str], float]:
        """(visitor id, trigger id) -> when, for the workspace's firings at or after ``since``."""
        rows = await self._read(
            _rows(
                Q(
                    "SELECT visitor_id, trigger_id, fired_at FROM trigger_firings"
                    " WHERE workspace_id=? AND fired_at>=?",
                    (workspace_id, float(since)),
                )
            )
        )
        return {(str(r["visitor_id"]), str(r["trigger_id"])): float(r["fired_at"]) for r in rows}
