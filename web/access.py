"""Credential and access changes reach every live socket, on every node of a cluster.

Logout, password change or reset, two-factor reset, token revocation, an agent disabled or its
role changed, a visitor banned or erased, a workspace suspended: the HTTP handler (or
``livechat admin``) changes storage, then calls one of the ``close_*`` methods here. Each is an
*event* (a small JSON document) that is applied to this process's sockets at once and, when a
bus is configured (``cluster.bus_url``), broadcast on it (``Bus.broadcast``): every other node
applies the same event to its own sockets as it arrives, well within a second. Settings, agent
and group changes (``workspace_changed``) go the same way, so every node drops what its engine
cached for that workspace, and the workspace's owner reloads its router. Every node also drops
its connect cache's entry for the workspace (web/workspace_cache.py: the row a visitor's
upgrade checks, and its bans) on each event about a workspace: changed, suspended, a visitor
banned or erased, and ``workspace_updated`` (a ban lifted, a change the engine does not read).

Redis pub/sub is at-most-once: an event published while a node's subscription is reconnecting
is lost for that node. The safety net stays: every node re-reads each live agent session and
API token once per ``websocket.ping_interval_s`` (``SocketRegistry.recheck_credentials``) and
closes what ended, so a lost logout, reset or revocation delays a close by at most that
interval instead of the second it normally takes; a lost role change, ban or erasure applies
when the socket next connects (the handshake checks them), once that node's connect cache has
read the workspace again (within ``workspace_cache.MAX_AGE_S``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from engine import DomainError
from web.bus import BusError, Message, publish_once
from web.protocol import CloseCode
from web.sockets import LiveSocket, SocketRegistry

if TYPE_CHECKING:
    from engine import ChatEngine
    from web.cluster import ClusterGateway
    from web.workspace_cache import WorkspaceCache

log = logging.getLogger("livechat.access")

CLI_SENDER = "cli"


def _matches(sock: LiveSocket, event: Message) -> bool:
    """Whether ``event`` (a close) concerns ``sock``."""
    kind = event["t"]
    if kind == "session":
        return bool(sock.session_hash == event["session"])
    if kind == "token":
        return bool(sock.token_id == event["token"])
    if sock.workspace_id != event["ws"]:
        return False
    if kind == "agent":
        keep = event.get("keep_session")
        return bool(sock.agent_id == event["agent"]) and (keep is None or sock.session_hash != keep)
    if kind == "visitor":
        ip = event.get("ip")
        return bool(sock.visitor_id == event["visitor"]) or (
            ip is not None and sock.kind == "visitor" and sock.ip == ip
        )
    return bool(kind == "workspace")


def _candidates(sockets: SocketRegistry, event: Message) -> list[LiveSocket]:
    """The sockets an event may concern, through the registry's indexes."""
    kind = event["t"]
    if kind == "session":
        return sockets.of_session(str(event["session"]))
    if kind == "token":
        return sockets.of_token(str(event["token"]))
    if kind == "agent":
        return sockets.of_agent(str(event["ws"]), str(event["agent"]))
    if kind == "visitor" and event.get("ip") is None:
        return sockets.of_visitor(str(event["ws"]), str(event["visitor"]))
    return sockets.of_workspace(str(event["ws"]))


class AccessEvents:
    """This process's end: apply events to its sockets, and broadcast them in a cluster."""

    def __init__(
        self,
        sockets: SocketRegistry,
        engine: ChatEngine,
        gateway: ClusterGateway | None = None,
        workspaces: WorkspaceCache | None = None,
    ) -> None:
        self.sockets = sockets
        self.engine = engine
        self.gateway = gateway
        self.workspaces = workspaces
        if gateway is not None:
            gateway.on_event = self.receive

    # -- what the HTTP handlers call

    async def close_session(self, session_hash: str, reason: str) -> None:
        await self.publish({"t": "session", "session": session_hash, "reason": reason})

    async def close_agent(
        self,
        workspace_id: str,
        agent_id: str,
        reason: str,
        *,
        keep_session: str | None = None,
        code: int = CloseCode.POLICY,
    ) -> None:
        """Close the agent's sockets (but those of ``keep_session``)."""
        event = {"t": "agent", "ws": workspace_id, "agent": agent_id, "reason": reason}
        await self.publish({**event, "keep_session": keep_session, "code": int(code)})

    async def close_token(self, token_id: str, reason: str) -> None:
        await self.publish({"t": "token", "token": token_id, "reason": reason})

    async def close_visitor(
        self, workspace_id: str, visitor_id: str, reason: str, *, ip: str | None = None
    ) -> None:
        """Close the visitor's sockets and, with ``ip``, every visitor socket from that IP."""
        event = {"t": "visitor", "ws": workspace_id, "visitor": visitor_id, "ip": ip}
        await self.publish({**event, "reason": reason})

    async def close_workspace(self, workspace_id: str, reason: str) -> None:
        await self.publish({"t": "workspace", "ws": workspace_id, "reason": reason})

    async def workspace_updated(self, workspace_id: str) -> None:
        """The workspace's row or bans changed in a way its engine does not read (a ban
        lifted, a rename, a setting only HTTP handlers use): every node drops its connect
        cache's entry, and nobody else is asked anything."""
        await self.publish({"t": "updated", "ws": workspace_id})

    async def workspace_changed(self, workspace_id: str) -> None:
        """Settings, agents or groups changed: the owner applies it before this returns (as
        with one process), and every other node drops what it cached."""
        self._forget(workspace_id)
        if self.gateway is None:
            await self.engine.workspace_changed(workspace_id)
            return
        try:
            await self.gateway.workspace_changed(workspace_id)
        except DomainError:  # the owner unreachable: the others still drop their caches,
            # and the owner (if it hears the broadcast) reloads its router
            await self._broadcast({"t": "changed", "ws": workspace_id, "owner_told": False})
            raise
        await self._broadcast({"t": "changed", "ws": workspace_id, "owner_told": True})

    # -- applying

    async def publish(self, event: Message) -> None:
        """Apply a close here, then broadcast it; a bus that fails is logged (the other
        nodes' periodic re-check closes those sockets instead)."""
        self.apply(event)
        await self._broadcast(event)

    async def _broadcast(self, event: Message) -> None:
        if self.gateway is None:
            return
        try:
            await self.gateway.bus.broadcast({"k": "ev", "ev": event})
        except BusError as err:
            log.warning("could not broadcast %s: %s", event["t"], err)

    def apply(self, event: Message) -> int:
        """Close this process's sockets that ``event`` concerns; returns how many. An event
        about a workspace also drops the connect cache's entry for it."""
        if "ws" in event:
            self._forget(str(event["ws"]))
        if event["t"] == "updated":
            return 0
        code = int(event.get("code") or CloseCode.POLICY)
        reason = str(event.get("reason") or "access changed")
        closed = 0
        for sock in _candidates(self.sockets, event):
            if _matches(sock, event):
                sock.close(code, reason)
                closed += 1
        return closed

    def receive(self, message: Message, nursery: trio.Nursery) -> None:
        """An event from another node (or ``livechat admin``), as the bus delivers it."""
        event = message.get("ev")
        if not isinstance(event, dict) or self.gateway is None:
            return
        if message.get("from") == self.gateway.node_id:
            return
        try:
            if event["t"] == "changed":
                self._forget(str(event["ws"]))
                nursery.start_soon(self._changed_here, event)
            else:
                self.apply(event)
        except (KeyError, TypeError, ValueError):
            log.warning("dropped a malformed access event")

    def _forget(self, workspace_id: str) -> None:
        if self.workspaces is not None:
            self.workspaces.forget(workspace_id)

    async def _changed_here(self, event: Message) -> None:
        workspace_id = str(event["ws"])
        assert self.gateway is not None
        if event.get("owner_told") and workspace_id in self.gateway.ownership.owned:
            return  # the node the change came in through asked this owner already
        await self.engine.workspace_changed(workspace_id)


async def publish_from_cli(settings_bus: tuple[str, str] | None, event: Message) -> str:
    """``livechat admin`` changed storage directly: tell the running nodes, if any. Returns a
    line for the operator."""
    if settings_bus is None:
        return "Open sockets of this account close within one heartbeat interval."
    url, prefix = settings_bus
    try:
        heard = await publish_once(url, prefix, {"k": "ev", "ev": event}, sender=CLI_SENDER)
    except BusError as err:
        return f"The cluster bus did not answer ({err}): sockets close within one heartbeat."
    return f"Told {heard} running node(s): open sockets of this account close now."
