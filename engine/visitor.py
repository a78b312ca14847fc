"""The visitor actor: one per visitor, across tabs and reconnects.

Tracks the visit (pages viewed with URL, title, referrer and time; device and browser from the
user agent; the returning-visit count; custom attributes set by the site) and the visitor's
open conversation, creating one when a first message needs it (serialized here, so two tabs
sending at once share one conversation). Every change goes to the workspace router, which keeps
the live visitor list that agents watch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from engine.actor import Actor, Reply
from engine.context import EngineContext, PreChatRule
from engine.errors import AlreadyOpen, InvalidMessage, PersistenceUnavailable
from engine.greetings import VisitorTick, VisitTriggers
from engine.messages import (
    PageViewInfo,
    ReportPageView,
    UpdateProfile,
    VisitorChange,
    VisitorSummary,
    is_email,
)
from engine.principals import ConnectionMeta
from engine.triggers import Trigger
from engine.useragent import DeviceInfo, parse_user_agent
from engine.visit import Visit
from storage import ConversationState, PageView, Visitor

__all__ = [
    "ConversationStateChanged",
    "OpenConversation",
    "VisitorActor",
    "VisitorArrived",
    "VisitorLeft",
    "VisitorNavigated",
    "VisitorProfile",
    "VisitorTick",
]

NEW_VISIT_AFTER_S = 30 * 60  # a visitor seen again after this long is on a new visit
# ``last_seen_at`` is written on arrival only when older than this (or with another change): a
# new visitor's row was just written, and each page of a visit opens a new connection.
LAST_SEEN_RESOLUTION_S = 60.0


@attrs.frozen(kw_only=True, eq=False)
class VisitorArrived:
    meta: ConnectionMeta
    reply: Reply[str | None]  # the open conversation id, if any


@attrs.frozen(kw_only=True, eq=False)
class VisitorNavigated:
    page: ReportPageView
    reply: Reply[None]  # answered once the page view is stored: the request's result means it is


@attrs.frozen(kw_only=True, eq=False)
class VisitorProfile:
    update: UpdateProfile
    reply: Reply[None]


@attrs.frozen(kw_only=True, eq=False)
class VisitorLeft:
    """The visitor's last connection closed (the router waits a grace period)."""


@attrs.frozen(kw_only=True, eq=False)
class OpenConversation:
    """The open conversation, created if there is none (``create``).

    With ``origin_key`` (an agent's proactive ``start_chat``) the conversation opened with that
    key is answered if it exists (a retry); otherwise an open chat of the visitor fails the
    ask with ``AlreadyOpen``, and a new chat is created with the key.
    """

    create: bool
    reply: Reply[str | None]
    origin_key: str | None = None
    group_id: str | None = None  # the visitor's department choice (a public group)
    greeting_id: str | None = None  # the trigger greeting the visitor answers (engine.greetings)


@attrs.frozen(kw_only=True, eq=False)
class ConversationStateChanged:
    conversation_id: str
    state: ConversationState


@attrs.frozen(kw_only=True, eq=False)
class VisitorSeen:
    change: VisitorChange
    visitor: VisitorSummary


@attrs.frozen(kw_only=True, eq=False)
class VisitorGone:
    visitor_id: str


VisitorMsg = (
    VisitorArrived
    | VisitorNavigated
    | VisitorProfile
    | VisitorLeft
    | OpenConversation
    | ConversationStateChanged
    | VisitorTick
)


class VisitorActor(Actor[VisitorMsg]):
    __slots__ = ("ctx", "device", "key", "open_id", "record", "triggers", "visit")

    def __init__(self, ctx: EngineContext, key: tuple[str, str]) -> None:
        self.ctx = ctx
        self.key = key
        self.record: Visitor | None = None
        self.device = DeviceInfo()
        self.open_id: str | None = None
        # The visit the previous activation left when passivated with the visitor connected.
        now = ctx.clock()
        kept = ctx.kept_visits.pop(key, None)
        self.visit = kept if kept is not None else Visit(site_since=now, page_since=now)
        self.triggers = VisitTriggers(ctx, key, self.visit)

    async def on_start(self) -> None:
        ctx = self.ctx
        ws, visitor_id = self.key
        # A visitor created just now comes with its row (``ChatEngine.connect``) and, having
        # had no connection yet, no conversation: nothing to read.
        seed = ctx.visitors.take_seed(self.key) if ctx.visitors is not None else None
        if isinstance(seed, Visitor):
            self.record = seed
            ctx.visitor_names[self.key] = seed.name
            self.device = parse_user_agent(seed.user_agent)
            return
        self.record = await ctx.call(ctx.storage.get_visitor(ws, visitor_id))
        if self.record is not None:
            ctx.visitor_names[self.key] = self.record.name
            self.device = parse_user_agent(self.record.user_agent)
            conversations = await ctx.call(ctx.storage.list_visitor_conversations(ws, visitor_id))
            open_ = [c for c in conversations if c.state != ConversationState.CLOSED]
            if open_:
                self.open_id = max(open_, key=lambda c: c.created_at).id

    async def on_stop(self) -> None:
        """Passivated while the visitor is still connected: keep the visit for the next
        activation (time on the page runs on; a due trigger's alarm re-activates it)."""
        if self.record is not None and self.ctx.hub.visitor_online(*self.key):
            self.ctx.kept_visits[self.key] = self.visit

    async def handle(self, msg: VisitorMsg) -> None:
        ctx = self.ctx
        ws, visitor_id = self.key
        if isinstance(msg, ConversationStateChanged):
            if msg.state == ConversationState.CLOSED and self.open_id == msg.conversation_id:
                self.open_id = None
            elif msg.state != ConversationState.CLOSED:
                self.open_id = msg.conversation_id
            await self._tell_router(VisitorChange.UPDATED)
            await self._greet()
            return
        if self.record is None:
            if isinstance(msg, VisitorArrived | OpenConversation | VisitorProfile):
                msg.reply.send(None)
            return
        if isinstance(msg, VisitorArrived):
            now = _wall()
            visit = self.visit
            first = not ctx.hub.visitor_online(ws, visitor_id) or visit.arrived_at == 0.0
            changes: dict[str, Any] = {}
            meta = msg.meta
            if meta.user_agent and meta.user_agent != self.record.user_agent:
                changes["user_agent"] = meta.user_agent
                self.device = parse_user_agent(meta.user_agent)
            if meta.ip and meta.ip != self.record.ip:
                changes["ip"] = meta.ip
            if changes or now - self.record.last_seen_at >= LAST_SEEN_RESOLUTION_S:
                changes["last_seen_at"] = now
            if (
                first
                and now - self.record.last_seen_at > NEW_VISIT_AFTER_S
                and self.record.last_seen_at
            ):
                changes["visits"] = self.record.visits + 1
            if first:
                visit.arrived_at = now
                visit.pages = 0
                self.triggers.arrived()
            if changes:  # none for a visitor just created, or back within a minute unchanged
                self.record = await ctx.call(ctx.storage.update_visitor(ws, visitor_id, **changes))
            view = (
                self._visit(meta.page_url, meta.page_title, meta.page_referrer, now)
                if meta.page_url
                else None
            )
            msg.reply.send(self.open_id)
            # The arriving connection joins the hub only after this answer: it is online.
            await self._tell_router(
                VisitorChange.ARRIVED if first else VisitorChange.NAVIGATED, online=True
            )
            # The page view need not be durable before the visitor's first frame: stored
            # after the answer, in order with later page views (this actor's next steps).
            if view is not None:
                await ctx.call(ctx.storage.add_page_view(ws, view))
            # Greet on the next tick: the arriving connection is not in the hub yet.
            if (await ctx.workspace_settings(ws)).visit_triggers:
                ctx.visitor_alarms[self.key] = ctx.clock()
        elif isinstance(msg, VisitorNavigated):
            await self._page(msg.page.url, msg.page.title, msg.page.referrer, _wall())
            msg.reply.send(None)
            await self._tell_router(VisitorChange.NAVIGATED)
            await self._greet()
        elif isinstance(msg, VisitorTick):
            await self._greet()
        elif isinstance(msg, VisitorProfile):
            update = msg.update
            changes = {}
            if update.name is not None:
                changes["name"] = update.name or None
            if update.email is not None:
                changes["email"] = update.email or None
            if update.attributes:
                merged = dict(self.record.attributes)
                for key, value in update.attributes.items():
                    if value is None:
                        merged.pop(key, None)
                    else:
                        merged[key] = value
                changes["attributes"] = merged
            if update.attributes:
                settings = await ctx.workspace_settings(ws)
                _check_emails(settings.pre_chat, update.attributes)
            if changes:
                self.record = await ctx.call(ctx.storage.update_visitor(ws, visitor_id, **changes))
                ctx.visitor_names[self.key] = self.record.name
            msg.reply.send(None)
            await self._tell_router(VisitorChange.UPDATED)
            await self._greet()
        elif isinstance(msg, VisitorLeft):
            if not ctx.hub.visitor_online(ws, visitor_id):
                ctx.visitor_alarms.pop(self.key, None)
                assert ctx.routers is not None
                router = await ctx.routers.get(ws)
                await router.tell(VisitorGone(visitor_id=visitor_id))
        elif isinstance(msg, OpenConversation):
            if msg.origin_key is not None:
                earlier = await ctx.call(
                    ctx.storage.find_conversation_by_origin(ws, msg.origin_key)
                )
                if earlier is not None:
                    msg.reply.send(earlier.id)
                    return
                if self.open_id is not None:
                    msg.reply.fail(
                        AlreadyOpen("the visitor already has an open chat", field="visitor_id")
                    )
                    return
            if self.open_id is None and msg.create:
                settings = await ctx.workspace_settings(ws)
                group_id = settings.default_group_id
                if msg.origin_key is None:  # the visitor starts it: their pre-chat form
                    _check_pre_chat(settings.pre_chat, self.record)
                if msg.group_id is not None:
                    group = await ctx.call(ctx.storage.get_group(ws, msg.group_id))
                    if group is None or not group.public:
                        msg.reply.fail(
                            InvalidMessage(
                                "group_id: not a department of this site",
                                code="invalid_field",
                                field="group_id",
                            )
                        )
                        return
                    group_id = group.id
                fired: tuple[Trigger, ...] = ()
                if msg.origin_key is None:  # page_view triggers apply to a visitor's own chat
                    fired = await self.triggers.at_chat_start(
                        settings, self.summary(), msg.greeting_id
                    )
                    if msg.group_id is not None:  # the visitor's department choice stands
                        fired = tuple(t for t in fired if t.action != "assign_group")
                    moves = [t for t in fired if t.action == "assign_group"]
                    if moves:  # the first that matches: the chat opens in its group
                        group_id = moves[0].to_group_id
                        fired = tuple(
                            t for t in fired if t.action != "assign_group" or t is moves[0]
                        )
                conv = await ctx.call(
                    ctx.storage.create_conversation(
                        ws,
                        visitor_id=visitor_id,
                        group_id=group_id,
                        origin_key=msg.origin_key,
                    )
                )
                self.open_id = conv.id
                await self.triggers.announce(settings, conv.id, fired)
            msg.reply.send(self.open_id)

    async def _page(self, url: str, title: str | None, referrer: str | None, at: float) -> None:
        """Record a page view (``_visit``), durably."""
        view = self._visit(url, title, referrer, at)
        if view is not None:
            await self.ctx.call(self.ctx.storage.add_page_view(self.key[0], view))

    def _visit(
        self, url: str, title: str | None, referrer: str | None, at: float
    ) -> PageView | None:
        """The visitor is on ``url``: the page view to store, or None when it is the page the
        visitor is already on (a reload, or a reconnect whose hello repeats the page, is not a
        new view; it only refreshes ``at``)."""
        visit = self.visit
        if visit.page is not None and visit.page.url == url:
            visit.page = PageViewInfo(
                url=url, title=title or visit.page.title, referrer=visit.page.referrer, at=at
            )
            return None
        visit.page = PageViewInfo(url=url, title=title, referrer=referrer, at=at)
        visit.pages += 1
        self.triggers.new_page()
        return PageView(visitor_id=self.key[1], url=url, title=title, referrer=referrer, at=at)

    def summary(self, *, online: bool | None = None) -> VisitorSummary:
        """``online``: known better than the hub (a connection that is arriving)."""
        record = self.record
        assert record is not None
        attributes: Mapping[str, Any] = record.attributes
        return VisitorSummary(
            visitor_id=record.id,
            name=record.name,
            email=record.email,
            online=self.ctx.hub.visitor_online(*self.key) if online is None else online,
            current_page=self.visit.page,
            pages_viewed=self.visit.pages,
            visits=record.visits,
            browser=self.device.browser,
            browser_version=self.device.browser_version,
            os=self.device.os,
            device=self.device.device,
            ip=record.ip,
            attributes=dict(attributes),
            conversation_id=self.open_id,
            arrived_at=self.visit.arrived_at,
            greeting=self.visit.shown,
        )

    async def _greet(self) -> None:
        """Fire a due page_view greeting (engine.greetings); the visitor list shows it."""
        ws, visitor_id = self.key
        settings = await self.ctx.workspace_settings(ws)
        if self.record is None or not settings.visit_triggers:
            self.ctx.visitor_alarms.pop(self.key, None)
            return
        can_greet = self.open_id is None and self.ctx.hub.visitor_online(ws, visitor_id)
        try:
            shown = await self.triggers.check(settings, self.summary(), can_greet=can_greet)
        except PersistenceUnavailable:  # the firings could not be read: greet on a later change
            return
        if shown is not None:
            await self._tell_router(VisitorChange.UPDATED)

    async def _tell_router(self, change: VisitorChange, *, online: bool | None = None) -> None:
        if self.record is None:
            return
        assert self.ctx.routers is not None
        router = await self.ctx.routers.get(self.key[0])
        await router.tell(VisitorSeen(change=change, visitor=self.summary(online=online)))


def _check_emails(rules: tuple[PreChatRule, ...], attributes: Mapping[str, Any]) -> None:
    """Custom attributes that are email fields of the pre-chat form must look like one."""
    for rule in rules:
        value = attributes.get(rule.name)
        filled = isinstance(value, str) and value.strip()
        if rule.kind == "email" and filled and not is_email(str(value).strip()):
            raise InvalidMessage(
                f"{rule.label}: not an email address", code="invalid_field", field=rule.name
            )


def _check_pre_chat(rules: tuple[PreChatRule, ...], record: Visitor) -> None:
    """The pre-chat form, checked on the server: every required field has a value (in the
    visitor's profile, as ``update_profile`` set it) and email fields look like emails.
    Raises ``InvalidMessage`` (``invalid_field``) naming the first field that fails."""
    for rule in rules:
        if rule.name in ("name", "email"):
            value = getattr(record, rule.name)
        else:
            value = record.attributes.get(rule.name)
        text = value.strip() if isinstance(value, str) else value
        if text in (None, ""):
            if rule.required:
                raise InvalidMessage(
                    f"{rule.label}: required", code="invalid_field", field=rule.name
                )
            continue
        if (rule.kind == "email" or rule.name == "email") and not (
            isinstance(text, str) and is_email(text)
        ):
            raise InvalidMessage(
                f"{rule.label}: not an email address", code="invalid_field", field=rule.name
            )


def _wall() -> float:
    import time

    return time.time()
