"""The per-visitor rate limit of triggers, kept in storage so that it survives a restart.

A trigger fires at most once per visitor per ``cooldown_s``. The actors that fire triggers (the
router for queued chats, the visitor's actor before a chat) check a copy in memory and write
each firing through (``storage.record_trigger_firing``); on start they read it back. Storage
keeps wall-clock times (a restart resets the engine clock); the copies here are converted to
the engine clock (``EngineContext.clock``, the manual clock in tests), against which cooldowns
are compared.
"""

from __future__ import annotations

import time

from engine.context import EngineContext
from engine.errors import PersistenceUnavailable

__all__ = ["MAX_COOLDOWN_S", "recent_firings", "record_firing", "visitor_firings"]

MAX_COOLDOWN_S = 7 * 86400.0  # the longest cooldown the admin API accepts


def _to_clock(ctx: EngineContext, wall_at: float) -> float:
    return ctx.clock() - max(0.0, time.time() - wall_at)


async def record_firing(ctx: EngineContext, ws: str, visitor_id: str, trigger_id: str) -> None:
    """Store that the trigger fired for the visitor now. A storage failure is logged (through
    ``ctx.firing_failures``, rate-limited) and the firing stands (it is in memory); only a
    restart before the next write would forget it."""
    try:
        await ctx.call(ctx.storage.record_trigger_firing(ws, visitor_id, trigger_id, time.time()))
    except PersistenceUnavailable as exc:
        ctx.firing_failures.failed(exc)
    else:
        ctx.firing_failures.succeeded()


async def visitor_firings(ctx: EngineContext, ws: str, visitor_id: str) -> dict[str, float]:
    """trigger id -> when it last fired for the visitor, on the engine clock."""
    stored = await ctx.call(ctx.storage.visitor_trigger_firings(ws, visitor_id))
    return {trigger_id: _to_clock(ctx, at) for trigger_id, at in stored.items()}


async def recent_firings(ctx: EngineContext, ws: str) -> dict[tuple[str, str], float]:
    """(visitor id, trigger id) -> when, for the workspace's firings within ``MAX_COOLDOWN_S``,
    on the engine clock."""
    stored = await ctx.call(ctx.storage.recent_trigger_firings(ws, time.time() - MAX_COOLDOWN_S))
    return {key: _to_clock(ctx, at) for key, at in stored.items()}
