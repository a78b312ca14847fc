"""The conversation's state as data: the transition table, the invariants, and ``apply``.

A conversation is its storage row (``storage.api.Conversation``) plus one marker the actor
keeps in memory (``ChatState.waiting_for``: the agent the router chose who has not answered
yet). Its lifecycle is the table below; an event whose patch would move the row along an edge
that is not in the table, or leave it breaking an invariant, raises ``IllegalTransition``
(code ``invalid_state``), so a mistaken plan fails that one command instead of being stored.

Transition table (``TRANSITIONS``)::

    from \\ to   queued                      active                   closed
    queued      transferred to a group      assigned, accepted,      missed, abandoned,
                                            proactive start,         resolved, offline
                                            transferred to an agent  message
    active      requeued (no answer, agent  transferred to an        resolved
                offline, assignee left),    agent
                transferred to a group
    closed      reopened by the visitor     (never)                  a retried offline message

Invariants (``violations``): a queued chat has no assignee; an active chat has one assignee,
who is its first participant; participants are distinct; a closed chat has a reason and a
close time, an open one has neither.

Everything here is synchronous and does no I/O: the rules (``engine.conversation_rules``) and
the property tests use it directly.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Any, NamedTuple

import attrs

from engine.errors import IllegalTransition
from storage import AppendRequest, Conversation, ConversationPatch, ConversationState

__all__ = [
    "TRANSITIONS",
    "ChatState",
    "apply",
    "apply_patch",
    "check_transition",
    "evolved",
    "violations",
]

_Q, _A, _C = ConversationState.QUEUED, ConversationState.ACTIVE, ConversationState.CLOSED

# From each state, the states an event may move the chat to (see the module docstring).
TRANSITIONS: Mapping[ConversationState, frozenset[ConversationState]] = {
    _Q: frozenset({_Q, _A, _C}),
    _A: frozenset({_Q, _A, _C}),
    _C: frozenset({_Q, _C}),
}


class ChatState(NamedTuple):
    """What the rules decide against: the row, and the auto-assigned agent who has not
    answered yet (``None``: nobody; cleared by the agent's answer, an accept, or losing the
    chat). The row's ``last_seq`` is storage's: the rules never number events.

    A ``NamedTuple`` (immutable, and cheaper to build than a frozen attrs class: the actor
    builds one per batch)."""

    conv: Conversation
    waiting_for: str | None = None


def check_transition(source: ConversationState, target: ConversationState) -> None:
    """Raise ``IllegalTransition`` unless ``source → target`` is in the table."""
    if target not in TRANSITIONS[source]:
        raise IllegalTransition(f"a {source} chat cannot become {target}")


def violations(conv: Conversation) -> list[str]:
    """The invariants ``conv`` breaks (empty: none); see the module docstring."""
    broken: list[str] = []
    participants = conv.participant_ids
    if len(set(participants)) != len(participants):
        broken.append("participants are not distinct")
    if conv.state == _Q and conv.assignee_id is not None:
        broken.append("a queued chat has an assignee")
    if conv.state == _A and (not participants or participants[0] != conv.assignee_id):
        broken.append("an active chat's assignee is not its first participant")
    closed = conv.state == _C
    if closed != (conv.close_reason is not None) or closed != (conv.closed_at is not None):
        broken.append("close reason and time do not match the state")
    return broken


def apply(conv: Conversation, event: AppendRequest, now: float) -> Conversation:
    """The row after ``event`` (a planned event, before storage numbers it), as storage will
    write it; raises ``IllegalTransition`` for a move outside the table or a broken invariant."""
    patch = event.patch
    if patch is None:
        return conv
    after = apply_patch(conv, patch, now)
    if patch.state is not None:
        check_transition(conv.state, patch.state)
    if (
        patch.state is not None
        or patch.participant_ids is not None
        or patch.clear_assignee
        or (patch.assignee_id is not None)
    ):
        broken = violations(after)
        if broken:
            raise IllegalTransition(f"{event.kind} would break: {'; '.join(broken)}")
    return after


def apply_patch(conv: Conversation, patch: ConversationPatch | None, now: float) -> Conversation:
    """The row after ``patch``, as storage will write it (no checks: see ``apply``).

    Without a patch the row is returned as is (no copy on the message path): the commit sets
    ``last_activity_at`` and ``last_seq`` in one step.
    """
    if patch is None:
        return conv
    changes: dict[str, Any] = {"last_activity_at": now}
    for name in ("state", "close_reason", "group_id", "assignee_id", "previous_assignee_id"):
        value = getattr(patch, name)
        if value is not None:
            changes[name] = value
    for name in ("participant_ids", "tags", "rating", "rating_comment", "closed_at"):
        value = getattr(patch, name)
        if value is not None:
            changes[name] = value
    if patch.first_response_at is not None and conv.first_response_at is None:
        changes["first_response_at"] = patch.first_response_at
    if patch.clear_close_reason:
        changes["close_reason"] = None
    if patch.clear_assignee:
        changes["assignee_id"] = None
    if patch.clear_closed_at:
        changes["closed_at"] = None
    return evolved(conv, **changes)


_ROW_FIELDS = tuple(a.name for a in attrs.fields(Conversation))
_row_values = operator.attrgetter(*_ROW_FIELDS)


def evolved(conv: Conversation, **changes: Any) -> Conversation:
    """``attrs.evolve(conv, **changes)`` for the row, at about a third of its cost: the field
    names are read once here rather than on every call. Every routed message makes one (the
    commit's ``last_seq``), through the class's own ``__init__`` all the same."""
    values = dict(zip(_ROW_FIELDS, _row_values(conv), strict=True))
    values.update(changes)
    return Conversation(**values)
