"""The engine's settings: one frozen object, read once at start-up and passed down."""

from __future__ import annotations

import attrs

__all__ = ["EngineConfig"]


@attrs.frozen(kw_only=True)
class EngineConfig:
    """Every engine knob, read once at start-up; units in the names."""

    mailbox_size: int = 1024  # per actor; ``tell`` waits when full
    outbox_size: int = 256  # per connection, created by the web layer with this size
    idle_timeout_s: float = 300.0  # passivate a virtual actor after this long without messages
    ask_timeout_s: float = 10.0  # deadline for one command crossing into an actor
    # deadline for one storage call made by an actor (below ask_timeout_s, so a sender hears
    # storage_unavailable rather than overloaded when the database is stuck)
    storage_timeout_s: float = 4.0
    agent_response_timeout_s: float = 60.0  # re-route a chat the assignee has not answered
    disconnect_grace_s: float = 30.0  # an agent with no connection is offline after this
    agent_auto_away_after_s: float = 0.0  # 0: never; else an accepting agent idle this long is away
    visitor_leave_grace_s: float = 15.0  # a visitor with no tab open "left" after this
    typing_ttl_s: float = 6.0  # a typing/viewing signal expires unless refreshed
    typing_min_interval_s: float = 0.3  # rate limit for ephemeral signals per sender
    message_rate_per_s: float = 5.0  # token bucket per visitor for durable sends
    message_burst: int = 20
    max_resume_gap: int = 500  # more missed events than this: resync_required
    recent_events: int = 200  # events a conversation keeps in memory for fast replay
    restart_max: int = 5  # restart intensity of a conversation/visitor/agent/router actor
    restart_period_s: float = 10.0
    # restart intensity of the engine supervisor (a crashed registry or task); kept low
    # because nested intensities multiply
    engine_restart_max: int = 3
    engine_restart_period_s: float = 60.0
    shutdown_deadline_s: float = 5.0  # drain() stops the engine within this
    default_routing_mode: str = "auto"  # "auto" | "manual"; workspace settings override
    avg_handle_time_s: float = 300.0  # seed for the estimated wait before data exists
    abandon_queued_after_s: float = 0.0  # 0: never; else close a queued chat as missed
    tick_interval_s: float = 1.0  # routers check response timeouts and grace periods this often
    router_idle_timeout_s: float = 3600.0
