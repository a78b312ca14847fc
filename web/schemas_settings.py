"""Bodies of a workspace's settings: the widget, what the widget is told, routing, business
hours and the identity secret.
"""

from __future__ import annotations

from typing import Literal

import attrs

from web.schemas import ID
from web.wire import items, number, text

# ---------------------------------------------------------------- widget and routing settings


@attrs.frozen(kw_only=True)
class PreChatField:
    name: str = attrs.field(**text(max_len=64, min_len=1, pattern=r"[A-Za-z0-9_]+"))
    label: str = attrs.field(**text(max_len=200, min_len=1))
    kind: Literal["text", "email", "textarea"] = "text"
    required: bool = False


@attrs.frozen(kw_only=True)
class WidgetSettings:
    """What the widget looks like and asks; ``allowed_origins`` may embed it."""

    color: str = attrs.field(default="#2f6fed", **text(max_len=7, pattern=r"#[0-9a-fA-F]{6}"))
    title: str = attrs.field(default="Chat with us", **text(max_len=100, min_len=1))
    greeting: str = attrs.field(default="Hi! How can we help?", **text(max_len=1000))
    position: Literal["right", "left"] = "right"
    pre_chat_enabled: bool = False
    pre_chat_fields: tuple[PreChatField, ...] = ()
    offline_form_enabled: bool = True
    offline_message: str = attrs.field(
        default="We are away. Leave a message and we will email you.", **text(max_len=1000)
    )
    sneak_peek: bool = False
    allowed_origins: tuple[str, ...] = attrs.field(default=(), **items(max_items=50, max_len=300))


@attrs.frozen(kw_only=True)
class WidgetSettingsIn:
    """``PUT /settings/widget``: the WHOLE widget configuration, every field required (a body
    missing a field is refused, never read as "reset it"); ``PATCH`` changes some fields."""

    color: str = attrs.field(**text(max_len=7, pattern=r"#[0-9a-fA-F]{6}"))
    title: str = attrs.field(**text(max_len=100, min_len=1))
    greeting: str = attrs.field(**text(max_len=1000))
    position: Literal["right", "left"]
    pre_chat_enabled: bool
    pre_chat_fields: tuple[PreChatField, ...]
    offline_form_enabled: bool
    offline_message: str = attrs.field(**text(max_len=1000))
    sneak_peek: bool
    allowed_origins: tuple[str, ...] = attrs.field(**items(max_items=50, max_len=300))


@attrs.frozen(kw_only=True)
class WidgetSettingsPatch:
    """``PATCH /settings/widget``: only the fields given change; absent (or null) ones keep
    their current value."""

    color: str | None = attrs.field(default=None, **text(max_len=7, pattern=r"#[0-9a-fA-F]{6}"))
    title: str | None = attrs.field(default=None, **text(max_len=100, min_len=1))
    greeting: str | None = attrs.field(default=None, **text(max_len=1000))
    position: Literal["right", "left"] | None = None
    pre_chat_enabled: bool | None = None
    pre_chat_fields: tuple[PreChatField, ...] | None = None
    offline_form_enabled: bool | None = None
    offline_message: str | None = attrs.field(default=None, **text(max_len=1000))
    sneak_peek: bool | None = None
    allowed_origins: tuple[str, ...] | None = attrs.field(
        default=None, **items(max_items=50, max_len=300)
    )


@attrs.frozen(kw_only=True)
class Department:
    """A public group, as the widget offers it."""

    id: str
    name: str


@attrs.frozen(kw_only=True)
class WidgetConfig:
    """Public widget configuration (``/api/v1/widget/config``): no secrets, no agent data."""

    workspace_name: str
    color: str
    title: str
    greeting: str
    position: Literal["right", "left"]
    pre_chat_enabled: bool
    pre_chat_fields: tuple[PreChatField, ...]
    offline_form_enabled: bool
    offline_message: str
    sneak_peek: bool
    online: bool
    # this server sends mail (smtp_url): the offline form may promise an email reply, and the
    # widget offers the transcript by email
    mail_enabled: bool = False
    # groups marked public: the pre-chat form offers them as a department choice
    departments: tuple[Department, ...] = ()
    # within the workspace's business hours (false: the widget offers the offline form)
    open: bool = True


# --- business hours (issue 16; engine/hours.py reads the stored layout) ---

_HHMM = r"([01][0-9]|2[0-3]):[0-5][0-9]|24:00"
_DATE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
_Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


@attrs.frozen(kw_only=True)
class OpeningPeriod:
    """Open from ``open`` to ``close`` (local time, ``close`` after ``open``; 24:00 = midnight)."""

    day: _Day
    open: str = attrs.field(**text(max_len=5, min_len=5, pattern=_HHMM))
    close: str = attrs.field(**text(max_len=5, min_len=5, pattern=_HHMM))


@attrs.frozen(kw_only=True)
class GroupHours:
    """A group's own schedule: its chats are routed only while both it and the workspace are
    open."""

    group_id: str = attrs.field(**text(max_len=ID, min_len=1))
    time_zone: str = attrs.field(**text(max_len=64, min_len=1))
    weekly: tuple[OpeningPeriod, ...] = attrs.field(
        default=(), validator=attrs.validators.max_len(28)
    )
    holidays: tuple[str, ...] = attrs.field(default=(), **items(max_items=100, max_len=10))


@attrs.frozen(kw_only=True)
class BusinessHours:
    """When chats are taken. ``enabled: false``: always open."""

    enabled: bool = False
    time_zone: str = attrs.field(default="UTC", **text(max_len=64, min_len=1))
    weekly: tuple[OpeningPeriod, ...] = attrs.field(
        default=(), validator=attrs.validators.max_len(28)
    )
    holidays: tuple[str, ...] = attrs.field(default=(), **items(max_items=100, max_len=10))
    groups: tuple[GroupHours, ...] = attrs.field(
        default=(), validator=attrs.validators.max_len(100)
    )


@attrs.frozen(kw_only=True)
class BusinessHoursOut:
    """The stored schedule and whether the workspace is open now."""

    hours: BusinessHours
    open_now: bool


@attrs.frozen(kw_only=True)
class RoutingSettings:
    """How chats reach agents; read by the engine from the workspace settings."""

    mode: Literal["auto", "manual"] = "auto"
    agent_response_timeout_s: float = attrs.field(default=60.0, **number(minimum=5, maximum=3600))
    abandon_queued_after_s: float = attrs.field(default=0.0, **number(minimum=0, maximum=86400))
    sticky_agent: bool = True
    default_group_id: str | None = attrs.field(default=None, **text(max_len=ID, min_len=1))
    # issue 16: a returning visitor's new chat goes first to the agent of their last chat
    sticky_new_chats: bool = False
    # issue 16: an unanswered proactive invitation is closed as missed after this (0: never)
    invitation_expires_after_s: float = attrs.field(
        default=600.0, **number(minimum=0, maximum=86400)
    )


@attrs.frozen(kw_only=True)
class IdentitySecret:
    """HMAC-SHA256 key for signed visitor identity; keep it on your server."""

    identity_secret: str


@attrs.frozen(kw_only=True)
class WidgetKeyQuery:
    key: str = attrs.field(**text(max_len=200, min_len=1))
