"""``evolved``: the row copy every routed message makes, the same as ``attrs.evolve``."""

from __future__ import annotations

import attrs
import pytest

from engine.conversation_state import evolved
from storage.api import CloseReason, Conversation, ConversationState


def _row() -> Conversation:
    return Conversation(
        id="c1",
        workspace_id="w1",
        visitor_id="v1",
        state=ConversationState.ACTIVE,
        assignee_id="a1",
        participant_ids=("a1", "a2"),
        tags=("vip",),
        last_seq=7,
        created_at=1.0,
        last_activity_at=2.0,
        origin_key="o1",
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"last_seq": 8, "last_activity_at": 3.0},
        {"state": ConversationState.CLOSED, "close_reason": CloseReason.RESOLVED, "closed_at": 4.0},
        {"assignee_id": None, "participant_ids": ()},
        {},
    ],
)
def test_evolved_is_attrs_evolve(changes: dict[str, object]) -> None:
    row = _row()
    assert evolved(row, **changes) == attrs.evolve(row, **changes)  # type: ignore[arg-type]
    assert row == _row()  # the original is untouched


def test_evolved_refuses_a_field_the_row_does_not_have() -> None:
    with pytest.raises(TypeError):
        evolved(_row(), last_sequence=8)
