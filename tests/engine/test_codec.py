from __future__ import annotations

import json

import pytest

from engine.codec import error_result, structure_command, unstructure
from engine.errors import AlreadyAssigned, InvalidMessage
from engine.messages import MessageAck, SendMessage, VisitorChange, VisitorSummary, VisitorUpdate


@pytest.mark.parametrize(
    ("frame", "code", "field"),
    [
        ({"type": "nope"}, "unknown_type", "type"),
        ({"text": "x"}, "unknown_type", "type"),
        ({"type": "send_message", "client_msg_id": "a"}, "missing_field", "text"),
        (
            {"type": "send_message", "client_msg_id": "a", "text": "x" * 10_001},
            "invalid_field",
            "text",
        ),
        (
            {"type": "send_message", "client_msg_id": "i" * 129, "text": "x"},
            "invalid_field",
            "client_msg_id",
        ),
        (
            {"type": "send_message", "client_msg_id": 5, "text": "x"},
            "invalid_field",
            "client_msg_id",
        ),
        (
            {"type": "typing", "conversation_id": "c", "is_typing": "yes"},
            "invalid_field",
            "is_typing",
        ),
        ({"type": "rate", "conversation_id": "c", "rating": 6}, "invalid_field", "rating"),
        ({"type": "set_status", "status": "offline"}, "invalid_field", "status"),
        ({"type": "close", "conversation_id": "c", "tags": ["ok", 3]}, "invalid_field", "tags.1"),
        ({"type": "update_profile", "attributes": {"x": [1]}}, "invalid_field", "attributes.x"),
    ],
)
def test_codec_errors_carry_code_and_field_path(frame: dict, code: str, field: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        structure_command(frame)
    assert (info.value.code, info.value.field) == (code, field)
    assert error_result(info.value).code == code


def test_commands_round_trip_and_extra_keys_are_ignored() -> None:
    cmd = structure_command(
        {"type": "send_message", "id": "r1", "client_msg_id": "a", "text": "hi"}
    )
    assert cmd == SendMessage(client_msg_id="a", text="hi")


def test_results_and_pushes_unstructure_to_json_with_type() -> None:
    ack = unstructure(MessageAck(conversation_id="c", seq=3, created_at=1.0, duplicate=False))
    assert ack["type"] == "message_ack" and ack["seq"] == 3
    summary = VisitorSummary(
        visitor_id="v",
        name=None,
        email=None,
        online=True,
        current_page=None,
        pages_viewed=0,
        visits=1,
        browser=None,
        browser_version=None,
        os=None,
        device=None,
        ip=None,
        attributes={},
        conversation_id=None,
        arrived_at=0.0,
    )
    push = unstructure(VisitorUpdate(change=VisitorChange.ARRIVED, visitor=summary))
    assert json.loads(json.dumps(push))["change"] == "arrived"
    assert error_result(AlreadyAssigned("taken")).code == "already_assigned"
