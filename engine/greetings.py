"""Page-view triggers: greetings and invitations before a chat exists (issue 16).

The visitor's actor owns one ``VisitTriggers``. It knows when the visitor arrived and when they
opened the current page, on the engine clock (``EngineContext.clock``: the manual clock in
tests), and which triggers fired for them (``engine.firings``, durable). After every change of
the visitor (arrival, page, profile) and on ``VisitorTick`` it fires the first greeting or
invitation whose conditions hold (``engine.triggers.visit_matches``), while the visitor is
online and has no open chat, at most one per page view: a ``GreetingPush`` to the visitor's
sockets and a ``VisitorGreeting`` on the live visitor list. For a time condition not yet met it
sets an alarm (``EngineContext.visitor_alarms``) at which the engine's ticker sends a
``VisitorTick``; no timer runs inside the actor. The clocks live in the actor's ``Visit``
(engine.visit), which outlives the actor's passivation while the visitor is connected, and the
ticker re-activates a passivated visitor's actor whose alarm comes due: a ten-minute condition
fires at ten minutes even when the visitor did nothing for longer than ``idle_timeout_s``.

A greeting fires only within business hours and (``only_when_available``, the default) while
an agent accepts chats, as the router last published (``EngineContext.set_availability``).
One that is due meanwhile sets the alarm ``WAIT_FOR_AGENTS``, which the router's next change
to open or available brings due.

When the visitor starts a chat, ``at_chat_start`` picks what applies to it: the greeting the
visitor answered (``send_message.greeting_id``; it fired for this visitor within its cooldown)
and the page_view ``add_tag``/``assign_group`` triggers the visitor matches then.
``announce`` tells the new chat's actor each of them (``RouterTrigger``) before the visitor's
message reaches it, so the greeting is the chat's first visible event and each firing is a
note for agents.
"""

from __future__ import annotations

import attrs

from engine.context import WAIT_FOR_AGENTS, EngineContext, WorkspaceSettings
from engine.conversation_rules import RouterTrigger
from engine.firings import record_firing, visitor_firings
from engine.messages import GreetingPush, VisitorGreeting, VisitorSummary
from engine.triggers import GREETING_ACTIONS, Trigger, visit_due_in, visit_matches
from engine.visit import Visit

__all__ = ["ANSWERABLE_S", "VisitTriggers", "VisitorTick"]

# A greeting answered this long after it was shown still opens the chat it starts.
ANSWERABLE_S = 86400.0


@attrs.frozen(kw_only=True, eq=False)
class VisitorTick:
    """The visitor's alarm came due: check the page_view triggers' time conditions again."""


class VisitTriggers:
    """One visitor's page_view triggers: their clocks, firings and the greeting shown."""

    __slots__ = ("ctx", "firings", "key", "visit")

    def __init__(self, ctx: EngineContext, key: tuple[str, str], visit: Visit) -> None:
        self.ctx = ctx
        self.key = key
        self.visit = visit  # its clocks and the greeting shown (kept across passivation)
        self.firings: dict[str, float] | None = None  # trigger id -> engine clock; lazily read

    def arrived(self) -> None:
        visit = self.visit
        visit.site_since = visit.page_since = self.ctx.clock()
        visit.shown = None

    def new_page(self) -> None:
        self.visit.page_since = self.ctx.clock()

    def _ready(self, trigger: Trigger, now: float) -> bool:
        assert self.firings is not None
        last = self.firings.get(trigger.id)
        return last is None or now - last >= trigger.cooldown_s

    async def _load(self) -> dict[str, float]:
        if self.firings is None:
            self.firings = await visitor_firings(self.ctx, *self.key)
        return self.firings

    async def _fired(self, trigger: Trigger, now: float) -> None:
        (await self._load())[trigger.id] = now
        await record_firing(self.ctx, self.key[0], self.key[1], trigger.id)

    def _alarm(self, due: float | None) -> None:
        if due is None:
            self.ctx.visitor_alarms.pop(self.key, None)
        else:
            self.ctx.visitor_alarms[self.key] = due

    async def check(
        self, settings: WorkspaceSettings, visitor: VisitorSummary, *, can_greet: bool
    ) -> VisitorGreeting | None:
        """Fire the first due greeting or invitation (``can_greet``: the visitor is online
        without a chat) and set the alarm for the next; returns the greeting shown, if any."""
        greetings = [t for t in settings.visit_triggers if t.action in GREETING_ACTIONS]
        visit = self.visit
        if not can_greet or not greetings or visit.greeted_page == visit.page_since:
            self._alarm(None)
            return None
        await self._load()
        now = self.ctx.clock()
        on_page, on_site = now - visit.page_since, now - visit.site_since
        open_now, available = self.ctx.availability.get(self.key[0], (False, False))
        next_due: float | None = None
        for trigger in greetings:
            if not self._ready(trigger, now):
                continue
            wait = visit_due_in(trigger, on_page, on_site)
            if wait > 0:
                next_due = now + wait if next_due is None else min(next_due, now + wait)
                continue
            if not visit_matches(trigger, visitor, on_page, on_site):
                continue
            if not (available if trigger.only_when_available else open_now):
                next_due = WAIT_FOR_AGENTS if next_due is None else next_due  # or sooner
                continue
            await self._fired(trigger, now)
            visit.greeted_page = visit.page_since
            self._alarm(None)
            sender = trigger.sender_name or settings.workspace_name or "Support"
            hub = self.ctx.hub
            hub.deliver_all(
                hub.visitor_connections(*self.key),
                GreetingPush(
                    greeting_id=trigger.id,
                    style=trigger.action,
                    sender_name=sender,
                    text=trigger.text or "",
                ),
            )
            visit.shown = VisitorGreeting(
                trigger_id=trigger.id,
                trigger_name=trigger.name,
                action=trigger.action,
                text=trigger.text or "",
                at=visitor.current_page.at if visitor.current_page else visitor.arrived_at,
            )
            return visit.shown
        self._alarm(next_due)
        return None

    async def at_chat_start(
        self, settings: WorkspaceSettings, visitor: VisitorSummary, greeting_id: str | None
    ) -> tuple[Trigger, ...]:
        """The triggers that apply to the chat the visitor starts now: the greeting they
        answered, then the matching ``add_tag``/``assign_group`` page_view triggers."""
        self._alarm(None)
        if not settings.visit_triggers:
            return ()
        firings = await self._load()
        now = self.ctx.clock()
        on_page, on_site = now - self.visit.page_since, now - self.visit.site_since
        chosen: list[Trigger] = []
        for trigger in settings.visit_triggers:
            if trigger.action in GREETING_ACTIONS:
                last = firings.get(trigger.id)
                if trigger.id == greeting_id and last is not None and now - last < ANSWERABLE_S:
                    chosen.insert(0, trigger)
            elif self._ready(trigger, now) and visit_matches(trigger, visitor, on_page, on_site):
                chosen.append(trigger)
        return tuple(chosen)

    async def announce(
        self, settings: WorkspaceSettings, conversation_id: str, fired: tuple[Trigger, ...]
    ) -> None:
        """Tell the new chat's actor the triggers that apply to it, in order (awaited: they
        are queued before the visitor's message), and store the firings."""
        if not fired:
            return
        assert self.ctx.conversations is not None
        ref = await self.ctx.conversations.get((self.key[0], conversation_id))
        now = self.ctx.clock()
        for trigger in fired:
            if trigger.action not in GREETING_ACTIONS:  # a greeting's firing is stored already
                await self._fired(trigger, now)
            await ref.tell(
                RouterTrigger(
                    trigger_id=trigger.id,
                    name=trigger.name,
                    action=trigger.action,
                    text=trigger.text,
                    tag=trigger.tag,
                    to_group_id=trigger.to_group_id,
                    sender_name=trigger.sender_name or settings.workspace_name or "Support",
                )
            )
        self.visit.shown = None
