"""What every domain actor shares: storage, config, the hub, the registries and small caches.

One ``EngineContext`` is built by ``ChatEngine`` and passed to each actor factory; it holds no
actor state (that lives in the actors) and outlives every actor instance.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import trio

from engine.config import EngineConfig
from engine.decisions import DecisionLog
from engine.errors import STORAGE_FAILED_MESSAGE, PersistenceRefused, PersistenceUnavailable
from engine.failure_log import FailureLog
from engine.hours import Hours, read_hours
from engine.metrics import EngineMetrics
from engine.presence import Hub
from engine.registry import Registry
from engine.triggers import Trigger, read_triggers
from engine.visit import Visit
from storage import (
    AppendRefused,
    CommitFailed,
    Fence,
    Group,
    LeaseLost,
    Storage,
    StorageUnavailable,
    Workspace,
)

__all__ = ["WAIT_FOR_AGENTS", "EngineContext", "PreChatRule", "WorkspaceSettings"]

# A visitor alarm at this time waits for ``EngineContext.set_availability`` rather than a time:
# a greeting whose conditions hold while no agent is available (or the workspace is closed).
WAIT_FOR_AGENTS = math.inf


@attrs.frozen(kw_only=True)
class PreChatRule:
    """One pre-chat form field as the engine enforces it (``settings["widget"]``).

    ``name`` "name" and "email" are the visitor's profile fields; any other name is a custom
    attribute. ``kind`` "email" values must look like an email address.
    """

    name: str
    label: str
    kind: str  # "text" | "email" | "textarea"
    required: bool


def _pre_chat_rules(widget: Mapping[str, Any]) -> tuple[PreChatRule, ...]:
    if widget.get("pre_chat_enabled") is not True:
        return ()
    fields = widget.get("pre_chat_fields")
    rules = []
    for field in fields if isinstance(fields, list | tuple) else ():
        name = field.get("name") if isinstance(field, Mapping) else None
        if not isinstance(name, str) or not name:
            continue
        label = field.get("label")
        rules.append(
            PreChatRule(
                name=name,
                label=label if isinstance(label, str) and label else name,
                kind=str(field.get("kind") or "text"),
                required=field.get("required") is True,
            )
        )
    return tuple(rules)


log = logging.getLogger(__name__)


@attrs.frozen(kw_only=True)
class WorkspaceSettings:
    """The engine's reading of ``Workspace.settings``, in the layout the admin API stores.

    ``settings["routing"]`` holds ``RoutingSettings`` (``mode``, ``agent_response_timeout_s``,
    ``abandon_queued_after_s``, ``sticky_agent``, ``default_group_id``) and
    ``settings["widget"]`` holds ``WidgetSettings`` (of which the engine reads ``sneak_peek``).
    A missing or malformed value falls back to the ``EngineConfig`` default. This is the one
    place that knows the layout; ``EngineContext`` caches the result until
    ``ChatEngine.workspace_changed``.
    """

    routing_mode: str  # "auto" | "manual"
    sneak_peek_enabled: bool
    agent_response_timeout_s: float
    abandon_queued_after_s: float  # 0: never; else a chat queued this long is closed as missed
    sticky_agent: bool  # a returning visitor goes back to their previous agent if free
    default_group_id: str | None  # group of new chats
    pre_chat: tuple[PreChatRule, ...] = ()  # enforced when a visitor starts a chat
    max_concurrent_chats: int = 0  # the workspace's cap on active chats (0: none)
    sticky_new_chats: bool = False  # a returning visitor's new chat prefers their last agent
    hours: Hours = attrs.field(factory=Hours)  # business hours (engine.hours); default: open
    # a proactive invitation the visitor has not answered by then is closed as missed (0: never)
    invitation_expires_after_s: float = 600.0
    triggers: tuple[Trigger, ...] = ()  # for queued chats (engine.triggers)
    visit_triggers: tuple[Trigger, ...] = ()  # page_view: before a chat (engine.greetings)
    workspace_name: str = ""  # the default author of a trigger's greeting

    @classmethod
    def from_workspace(cls, workspace: Workspace | None, config: EngineConfig) -> WorkspaceSettings:
        raw: Mapping[str, Any] = workspace.settings if workspace is not None else {}
        routing = _section(raw, "routing")
        widget = _section(raw, "widget")
        mode = routing.get("mode", config.default_routing_mode)
        timeout = _number(routing.get("agent_response_timeout_s"))
        abandon = _number(routing.get("abandon_queued_after_s"))
        group = routing.get("default_group_id")
        sticky = routing.get("sticky_agent", True)
        invite_s = _number(routing.get("invitation_expires_after_s"))
        every_trigger = read_triggers(raw)
        return cls(
            routing_mode=mode if mode in ("auto", "manual") else "auto",
            sneak_peek_enabled=widget.get("sneak_peek") is True,
            agent_response_timeout_s=timeout
            if timeout is not None and timeout > 0
            else config.agent_response_timeout_s,
            abandon_queued_after_s=abandon
            if abandon is not None and abandon >= 0
            else config.abandon_queued_after_s,
            sticky_agent=sticky if isinstance(sticky, bool) else True,
            default_group_id=group if isinstance(group, str) and group else None,
            pre_chat=_pre_chat_rules(widget),
            max_concurrent_chats=workspace.max_concurrent_chats if workspace is not None else 0,
            sticky_new_chats=routing.get("sticky_new_chats") is True,
            hours=read_hours(raw),
            triggers=tuple(t for t in every_trigger if t.event == "queued"),
            visit_triggers=tuple(t for t in every_trigger if t.event == "page_view"),
            workspace_name=workspace.name if workspace is not None else "",
            invitation_expires_after_s=600.0 if invite_s is None or invite_s < 0 else invite_s,
        )


def _section(raw: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = raw.get(name)
    return value if isinstance(value, Mapping) else {}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


@attrs.define(kw_only=True, eq=False)
class EngineContext:
    storage: Storage
    config: EngineConfig
    hub: Hub
    metrics: EngineMetrics
    clock: Callable[[], float]
    decisions: DecisionLog
    conversations: Registry[tuple[str, str], Any] | None = None
    visitors: Registry[tuple[str, str], Any] | None = None
    agents: Registry[tuple[str, str], Any] | None = None
    routers: Registry[str, Any] | None = None
    agent_names: dict[tuple[str, str], str] = attrs.field(factory=dict)
    visitor_names: dict[tuple[str, str], str | None] = attrs.field(factory=dict)
    settings: dict[str, WorkspaceSettings] = attrs.field(factory=dict)
    settings_version: dict[str, int] = attrs.field(factory=dict)
    # workspace -> its public groups (the widget's departments), cached like ``settings``
    public_groups_cache: dict[str, tuple[Group, ...]] = attrs.field(factory=dict)
    # visitor -> engine-clock time their actor wants a ``VisitorTick`` (a page_view trigger's
    # time condition comes due); the ticker sends it (engine.greetings)
    visitor_alarms: dict[tuple[str, str], float] = attrs.field(factory=dict)
    # visitor -> the visit their passivated actor left while they were connected (engine.visit)
    kept_visits: dict[tuple[str, str], Visit] = attrs.field(factory=dict)
    # workspace -> (within business hours, an agent accepting chats), as its router last saw it
    availability: dict[str, tuple[bool, bool]] = attrs.field(factory=dict)
    # Cluster (issue 13): the fence a workspace's appends carry (its lease and epoch on this
    # node); None: one process, nothing to fence.
    fence: Callable[[str], Fence] | None = None
    # the warnings of a storage outage: its first failure, a summary every few seconds, the
    # recovery (engine.failure_log); not one per failed call
    storage_failures: FailureLog = attrs.field(factory=lambda: FailureLog(log, "storage call"))
    # routers waiting for storage to load their workspace (engine.routing): one summary for
    # all of them, not a line per workspace
    router_load_failures: FailureLog = attrs.field(
        factory=lambda: FailureLog(logging.getLogger("engine.routing"), "router load")
    )
    firing_failures: FailureLog = attrs.field(
        factory=lambda: FailureLog(logging.getLogger("engine.firings"), "trigger firing write")
    )

    def set_availability(self, workspace_id: str, *, open_now: bool, available: bool) -> None:
        """The router's view of the workspace. When it opens, or an agent becomes available,
        the visitors whose greeting waited for that (alarm ``WAIT_FOR_AGENTS``) are woken."""
        now = (open_now, available)
        before = self.availability.get(workspace_id)
        if before == now:
            return
        self.availability[workspace_id] = now
        if before is not None and not (open_now > before[0] or available > before[1]):
            return
        due = self.clock()
        for key, at in self.visitor_alarms.items():
            if at == WAIT_FOR_AGENTS and key[0] == workspace_id:
                self.visitor_alarms[key] = due

    async def workspace_settings(self, workspace_id: str) -> WorkspaceSettings:
        """The workspace's settings, from the cache or storage (then cached until
        `forget_workspace`)."""
        cached = self.settings.get(workspace_id)
        if cached is None:
            version = self.settings_version.get(workspace_id, 0)
            workspace = await self.call(self.storage.get_workspace(workspace_id))
            cached = WorkspaceSettings.from_workspace(workspace, self.config)
            # A change while this read was in flight wins: do not cache what may be stale.
            if self.settings_version.get(workspace_id, 0) == version:
                self.settings[workspace_id] = cached
        return cached

    async def public_groups(self, workspace_id: str) -> tuple[Group, ...]:
        """The workspace's public groups (the departments a visitor may choose), from the cache
        or storage (then cached until `forget_workspace`: group changes call it)."""
        cached = self.public_groups_cache.get(workspace_id)
        if cached is None:
            version = self.settings_version.get(workspace_id, 0)
            groups = await self.call(self.storage.list_groups(workspace_id))
            cached = tuple(g for g in groups if g.public)
            if self.settings_version.get(workspace_id, 0) == version:
                self.public_groups_cache[workspace_id] = cached
        return cached

    def forget_workspace(self, workspace_id: str) -> None:
        """Drop what is cached about the workspace (its settings, its public groups); the next
        read reloads."""
        self.settings.pop(workspace_id, None)
        self.public_groups_cache.pop(workspace_id, None)
        self.settings_version[workspace_id] = self.settings_version.get(workspace_id, 0) + 1

    async def agent_name(self, workspace_id: str, agent_id: str) -> str | None:
        name = self.agent_names.get((workspace_id, agent_id))
        if name is None:
            agent = await self.call(self.storage.get_agent(workspace_id, agent_id))
            if agent is None:
                return None
            name = self.agent_names[(workspace_id, agent_id)] = agent.display_name
        return name

    async def call(self, awaitable: Any) -> Any:
        """Await a storage call under the storage deadline; failures become
        ``PersistenceUnavailable`` (code ``storage_unavailable``), cancellation passes.
        Failures and timeouts are logged through ``storage_failures`` (rate-limited).

        A bare cancel scope rather than ``trio.fail_after``, which wraps one in a generator
        context manager: this runs once per routed message.
        """
        scope = trio.CancelScope(deadline=trio.current_time() + self.config.storage_timeout_s)
        try:
            with scope:
                result = await awaitable
                self.storage_failures.succeeded()
                return result
        except AppendRefused as exc:
            raise PersistenceRefused(STORAGE_FAILED_MESSAGE) from exc
        except (StorageUnavailable, CommitFailed, LeaseLost) as exc:
            self.storage_failures.failed(exc)
            raise PersistenceUnavailable(STORAGE_FAILED_MESSAGE) from exc
        # Only the scope's own deadline ends the block without a value or an exception.
        self.storage_failures.failed(trio.TooSlowError("storage did not answer in time"))
        raise PersistenceUnavailable("storage did not answer in time")
