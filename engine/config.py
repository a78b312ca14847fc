"""The engine's settings: one frozen object, read once at start-up and passed down.

Every field carries its one-line documentation in ``metadata["doc"]``: the web layer's settings
loader makes each of them settable (section ``[engine]``) and ``docs/configuration.md`` is
generated from it.
"""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["EngineConfig"]


def _knob(default: Any, doc: str) -> Any:
    """A field with its documentation (units are in the field's name)."""
    return attrs.field(default=default, metadata={"doc": doc})


@attrs.frozen(kw_only=True)
class EngineConfig:
    """Every engine knob, read once at start-up; units in the names."""

    mailbox_size: int = _knob(1024, "Messages queued per actor; a sender waits when it is full.")
    outbox_size: int = _knob(
        256,
        "Pushes queued per connection before it counts as backed up (the web layer creates "
        "each connection's outbox with this size).",
    )
    idle_timeout_s: float = _knob(
        300.0, "Passivate a conversation or visitor actor after this long without messages."
    )
    ask_timeout_s: float = _knob(
        10.0, "Deadline for one command crossing into an actor; past it: overloaded."
    )
    storage_timeout_s: float = _knob(
        4.0,
        "Deadline for one storage call made by an actor: a sender hears storage_unavailable "
        "within it when the database cannot commit; a commit stuck for half of it refuses "
        "newcomers at once. Keep it below ask_timeout_s.",
    )
    agent_response_timeout_s: float = _knob(
        60.0, "Re-route a chat whose assignee has not answered within this."
    )
    disconnect_grace_s: float = _knob(
        30.0,
        "A dropped agent keeps their chats this long (the visitor sees that the agent is "
        "reconnecting), then they are offline and the chats are re-routed.",
    )
    agent_auto_away_after_s: float = _knob(
        0.0, "An accepting agent idle this long becomes away (0: never)."
    )
    visitor_leave_grace_s: float = _knob(15.0, "A visitor with no tab open has left after this.")
    typing_ttl_s: float = _knob(6.0, "A typing or viewing signal expires unless refreshed.")
    typing_min_interval_s: float = _knob(
        0.3, "Minimum interval between ephemeral signals of one sender."
    )
    message_rate_per_s: float = _knob(
        5.0, "Token bucket per visitor (all its connections) for durable sends: refill rate."
    )
    message_burst: int = _knob(20, "Token bucket per visitor for durable sends: burst size.")
    max_resume_gap: int = _knob(
        500, "A client that missed more events than this gets resync_required."
    )
    recent_events: int = _knob(200, "Events a conversation keeps in memory for fast replay.")
    restart_max: int = _knob(
        5,
        "Restart intensity of one conversation, visitor, agent or router actor: restarts "
        "within restart_period_s, beyond which that key alone is stopped.",
    )
    restart_period_s: float = _knob(10.0, "The window of restart_max.")
    engine_restart_max: int = _knob(
        3,
        "Restart intensity of the engine supervisor (a crashed registry or task), kept low "
        "because nested intensities multiply.",
    )
    engine_restart_period_s: float = _knob(60.0, "The window of engine_restart_max.")
    shutdown_deadline_s: float = _knob(5.0, "A graceful shutdown stops the engine within this.")
    default_routing_mode: str = _knob(
        "auto", "Routing mode of a workspace that has not chosen one: auto or manual."
    )
    avg_handle_time_s: float = _knob(
        300.0, "Seed for the estimated wait before a workspace has data."
    )
    abandon_queued_after_s: float = _knob(
        0.0, "Close a chat still queued after this as missed (0: never)."
    )
    tick_interval_s: float = _knob(
        1.0, "Routers check response timeouts and grace periods this often."
    )
    router_idle_timeout_s: float = _knob(
        3600.0, "Passivate a workspace's router after this long without messages."
    )
