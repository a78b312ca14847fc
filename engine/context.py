"""What every domain actor shares: storage, config, the hub, the registries and small caches.

One ``EngineContext`` is built by ``ChatEngine`` and passed to each actor factory; it holds no
actor state (that lives in the actors) and outlives every actor instance.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import trio

from engine.errors import PersistenceUnavailable
from engine.metrics import EngineMetrics
from engine.presence import Hub
from storage.api import Storage, Workspace

if TYPE_CHECKING:
    from engine.api import EngineConfig
    from engine.registry import Registry

__all__ = ["EngineContext", "WorkspaceSettings"]


@attrs.frozen(kw_only=True)
class WorkspaceSettings:
    """The engine's reading of ``Workspace.settings`` (read when an actor starts)."""

    routing_mode: str  # "auto" | "manual"
    sneak_peek_enabled: bool
    agent_response_timeout_s: float

    @classmethod
    def from_workspace(cls, workspace: Workspace | None, config: EngineConfig) -> WorkspaceSettings:
        raw: Mapping[str, Any] = workspace.settings if workspace is not None else {}
        mode = raw.get("routing_mode", config.default_routing_mode)
        timeout = raw.get("agent_response_timeout_s", config.agent_response_timeout_s)
        return cls(
            routing_mode=mode if mode in ("auto", "manual") else "auto",
            sneak_peek_enabled=bool(raw.get("sneak_peek_enabled", False)),
            agent_response_timeout_s=float(timeout)
            if isinstance(timeout, int | float) and timeout > 0
            else config.agent_response_timeout_s,
        )


@attrs.define(kw_only=True, eq=False)
class EngineContext:
    storage: Storage
    config: EngineConfig
    hub: Hub
    metrics: EngineMetrics
    clock: Callable[[], float]
    conversations: Registry[tuple[str, str], Any] | None = None
    visitors: Registry[tuple[str, str], Any] | None = None
    routers: Registry[str, Any] | None = None
    agent_names: dict[tuple[str, str], str] = attrs.field(factory=dict)
    visitor_names: dict[tuple[str, str], str | None] = attrs.field(factory=dict)
    settings: dict[str, WorkspaceSettings] = attrs.field(factory=dict)

    async def workspace_settings(self, workspace_id: str) -> WorkspaceSettings:
        cached = self.settings.get(workspace_id)
        if cached is None:
            workspace = await self.call(self.storage.get_workspace(workspace_id))
            cached = WorkspaceSettings.from_workspace(workspace, self.config)
            self.settings[workspace_id] = cached
        return cached

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
        ``PersistenceUnavailable`` (code ``storage_unavailable``), cancellation passes."""
        from storage.errors import CommitFailed, StorageUnavailable

        try:
            with trio.fail_after(self.config.storage_timeout_s):
                return await awaitable
        except trio.TooSlowError as exc:
            raise PersistenceUnavailable("storage did not answer in time") from exc
        except (StorageUnavailable, CommitFailed) as exc:
            raise PersistenceUnavailable(str(exc) or "storage unavailable") from exc
