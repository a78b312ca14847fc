"""Commands (client → engine): what ``ChatEngine.request`` takes, and who may send which.

Each is a small immutable struct whose field validators bound every size a client controls;
a violation raises ``InvalidMessage``. See ``engine.messages`` for the conventions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import attrs

from engine.errors import InvalidMessage
from engine.limits import (
    MAX_DRAFT_CHARS,
    MAX_NAME_CHARS,
    MAX_REASON_CHARS,
    MAX_TEXT_CHARS,
    MAX_TITLE_CHARS,
    MAX_URL_CHARS,
    frozen_tags,
    valid_attachment_ids,
    valid_attributes,
    valid_email,
    valid_id,
    valid_limit,
    valid_rating,
    valid_seq,
    valid_tags,
    valid_text,
)
from engine.summaries import (
    SettableStatus,
)


@attrs.frozen(kw_only=True)
class SendMessage:
    """A chat message. Visitors may omit ``conversation_id`` (current or new conversation)."""

    TYPE: ClassVar[str] = "send_message"
    conversation_id: str | None = attrs.field(default=None, validator=valid_id)
    client_msg_id: str = attrs.field(validator=valid_id)
    text: str = attrs.field(validator=valid_text(MAX_TEXT_CHARS, allow_empty=True))  # "" with files
    # Ids of files uploaded over HTTP by the same sender (``POST .../files``).
    attachments: tuple[str, ...] = attrs.field(
        default=(), converter=frozen_tags, validator=valid_attachment_ids
    )
    # A visitor's department (a public group) for the new chat this message starts; ignored
    # when the message goes to a chat that is open already.
    group_id: str | None = attrs.field(default=None, validator=valid_id)
    # The trigger whose greeting this message answers (the ``greeting`` push): the new chat
    # opens with that greeting. Ignored when the message goes to a chat that is open already.
    greeting_id: str | None = attrs.field(default=None, validator=valid_id)

    def __attrs_post_init__(self) -> None:
        if not self.text.strip() and not self.attachments:
            raise InvalidMessage(
                "text: must not be empty (or send attachments)", code="invalid_field", field="text"
            )


@attrs.frozen(kw_only=True)
class SetTyping:
    """Typing indicator; a visitor's ``draft`` is the sneak peek (used only if enabled)."""

    TYPE: ClassVar[str] = "typing"
    conversation_id: str = attrs.field(validator=valid_id)
    is_typing: bool
    draft: str | None = attrs.field(
        default=None, validator=valid_text(MAX_DRAFT_CHARS, allow_empty=True)
    )


@attrs.frozen(kw_only=True)
class ReportPageView:
    TYPE: ClassVar[str] = "page_view"
    url: str = attrs.field(validator=valid_text(MAX_URL_CHARS))
    title: str | None = attrs.field(
        default=None, validator=valid_text(MAX_TITLE_CHARS, allow_empty=True)
    )
    referrer: str | None = attrs.field(
        default=None, validator=valid_text(MAX_URL_CHARS, allow_empty=True)
    )


@attrs.frozen(kw_only=True)
class UpdateProfile:
    """Visitor name/email and custom attributes set by the site (merged; ``None`` deletes)."""

    TYPE: ClassVar[str] = "update_profile"
    name: str | None = attrs.field(
        default=None, validator=valid_text(MAX_NAME_CHARS, allow_empty=True)
    )
    email: str | None = attrs.field(default=None, validator=valid_email(allow_empty=True))
    attributes: Mapping[str, Any] = attrs.field(factory=dict, validator=valid_attributes)


@attrs.frozen(kw_only=True)
class Rate:
    TYPE: ClassVar[str] = "rate"
    conversation_id: str = attrs.field(validator=valid_id)
    rating: int = attrs.field(validator=valid_rating)
    comment: str | None = attrs.field(default=None, validator=valid_text(2_000, allow_empty=True))


@attrs.frozen(kw_only=True)
class EndChat:
    """The visitor ends its chat (``None``: the open one); closes it as resolved."""

    TYPE: ClassVar[str] = "end_chat"
    conversation_id: str | None = attrs.field(default=None, validator=valid_id)


@attrs.frozen(kw_only=True)
class LeaveOfflineMessage:
    """Left when no agent is available; stored as a closed conversation (reason ``offline``)."""

    TYPE: ClassVar[str] = "offline_message"
    name: str | None = attrs.field(
        default=None, validator=valid_text(MAX_NAME_CHARS, allow_empty=True)
    )
    email: str = attrs.field(validator=valid_email(allow_empty=False))
    text: str = attrs.field(validator=valid_text(MAX_TEXT_CHARS))
    client_msg_id: str = attrs.field(validator=valid_id)


@attrs.frozen(kw_only=True)
class GetHistory:
    """Scroll back (``before_seq``) or catch up (``after_seq``); at most one of the two."""

    TYPE: ClassVar[str] = "get_history"
    conversation_id: str = attrs.field(validator=valid_id)
    before_seq: int | None = attrs.field(default=None, validator=valid_seq)
    after_seq: int | None = attrs.field(default=None, validator=valid_seq)
    limit: int = attrs.field(default=50, validator=valid_limit)

    def __attrs_post_init__(self) -> None:
        if self.before_seq is not None and self.after_seq is not None:
            raise InvalidMessage(
                "give before_seq or after_seq, not both", code="invalid_field", field="after_seq"
            )


@attrs.frozen(kw_only=True)
class SetStatus:
    TYPE: ClassVar[str] = "set_status"
    status: SettableStatus


@attrs.frozen(kw_only=True)
class Accept:
    """Take a chat: the offered one, or pick one from the queue (manual mode)."""

    TYPE: ClassVar[str] = "accept"
    conversation_id: str = attrs.field(validator=valid_id)


@attrs.frozen(kw_only=True)
class AddNote:
    """Internal note, visible to agents only."""

    TYPE: ClassVar[str] = "add_note"
    conversation_id: str = attrs.field(validator=valid_id)
    client_msg_id: str = attrs.field(validator=valid_id)
    text: str = attrs.field(validator=valid_text(MAX_TEXT_CHARS))


@attrs.frozen(kw_only=True)
class Whisper:
    """Supervisor to the chat's agents only."""

    TYPE: ClassVar[str] = "whisper"
    conversation_id: str = attrs.field(validator=valid_id)
    client_msg_id: str = attrs.field(validator=valid_id)
    text: str = attrs.field(validator=valid_text(MAX_TEXT_CHARS))


@attrs.frozen(kw_only=True)
class Transfer:
    """Hand the chat to an agent or a group (exactly one); history stays with the chat."""

    TYPE: ClassVar[str] = "transfer"
    conversation_id: str = attrs.field(validator=valid_id)
    to_agent_id: str | None = attrs.field(default=None, validator=valid_id)
    to_group_id: str | None = attrs.field(default=None, validator=valid_id)
    reason: str | None = attrs.field(
        default=None, validator=valid_text(MAX_REASON_CHARS, allow_empty=True)
    )

    def __attrs_post_init__(self) -> None:
        if (self.to_agent_id is None) == (self.to_group_id is None):
            raise InvalidMessage(
                "give exactly one of to_agent_id and to_group_id",
                code="invalid_field",
                field="to_agent_id",
            )


@attrs.frozen(kw_only=True)
class Invite:
    """Bring another agent into the chat (several agents in one chat)."""

    TYPE: ClassVar[str] = "invite"
    conversation_id: str = attrs.field(validator=valid_id)
    agent_id: str = attrs.field(validator=valid_id)


@attrs.frozen(kw_only=True)
class Join:
    """Join a chat; ``silent`` (supervisors only): the visitor is not told."""

    TYPE: ClassVar[str] = "join"
    conversation_id: str = attrs.field(validator=valid_id)
    silent: bool = False


@attrs.frozen(kw_only=True)
class Leave:
    TYPE: ClassVar[str] = "leave"
    conversation_id: str = attrs.field(validator=valid_id)


@attrs.frozen(kw_only=True)
class Close:
    TYPE: ClassVar[str] = "close"
    conversation_id: str = attrs.field(validator=valid_id)
    tags: tuple[str, ...] = attrs.field(default=(), converter=frozen_tags, validator=valid_tags)


@attrs.frozen(kw_only=True)
class Tag:
    """Add and remove tags on a chat."""

    TYPE: ClassVar[str] = "tag"
    conversation_id: str = attrs.field(validator=valid_id)
    add: tuple[str, ...] = attrs.field(default=(), converter=frozen_tags, validator=valid_tags)
    remove: tuple[str, ...] = attrs.field(default=(), converter=frozen_tags, validator=valid_tags)


@attrs.frozen(kw_only=True)
class StartChat:
    """Proactive chat: an agent opens a conversation with a visitor on the site."""

    TYPE: ClassVar[str] = "start_chat"
    visitor_id: str = attrs.field(validator=valid_id)
    client_msg_id: str = attrs.field(validator=valid_id)
    text: str = attrs.field(validator=valid_text(MAX_TEXT_CHARS))


@attrs.frozen(kw_only=True)
class Watch:
    """Open a chat: missed events after ``after_seq`` are pushed, then live ones."""

    TYPE: ClassVar[str] = "watch"
    conversation_id: str = attrs.field(validator=valid_id)
    after_seq: int = attrs.field(default=0, validator=valid_seq)


@attrs.frozen(kw_only=True)
class Unwatch:
    TYPE: ClassVar[str] = "unwatch"
    conversation_id: str = attrs.field(validator=valid_id)


@attrs.frozen(kw_only=True)
class ListQueue:
    TYPE: ClassVar[str] = "list_queue"


@attrs.frozen(kw_only=True)
class ListMyChats:
    TYPE: ClassVar[str] = "list_my_chats"


@attrs.frozen(kw_only=True)
class ListVisitors:
    """Snapshot of the live visitor list; ``subscribe`` keeps ``visitor_update`` pushes coming."""

    TYPE: ClassVar[str] = "list_visitors"
    subscribe: bool = True


@attrs.frozen(kw_only=True)
class GetRoutingLog:
    """Why did this chat go to Ann: the routing decisions recorded for a conversation."""

    TYPE: ClassVar[str] = "routing_log"
    conversation_id: str = attrs.field(validator=valid_id)
    limit: int = attrs.field(default=100, validator=valid_limit)


Command = (
    SendMessage
    | SetTyping
    | ReportPageView
    | UpdateProfile
    | Rate
    | EndChat
    | LeaveOfflineMessage
    | GetHistory
    | SetStatus
    | Accept
    | AddNote
    | Whisper
    | Transfer
    | Invite
    | Join
    | Leave
    | Close
    | Tag
    | StartChat
    | Watch
    | Unwatch
    | ListQueue
    | ListMyChats
    | ListVisitors
    | GetRoutingLog
)

VISITOR_COMMANDS: frozenset[type] = frozenset(
    {
        SendMessage,
        SetTyping,
        ReportPageView,
        UpdateProfile,
        Rate,
        EndChat,
        LeaveOfflineMessage,
        GetHistory,
    }
)
AGENT_COMMANDS: frozenset[type] = frozenset(
    {
        SendMessage,
        SetTyping,
        GetHistory,
        SetStatus,
        Accept,
        AddNote,
        Whisper,
        Transfer,
        Invite,
        Join,
        Leave,
        Close,
        Tag,
        StartChat,
        Watch,
        Unwatch,
        ListQueue,
        ListMyChats,
        ListVisitors,
        GetRoutingLog,
    }
)
