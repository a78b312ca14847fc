"""The real server under test: start ``livechat serve``, seed it over the admin API, speak v1.

``open_server`` starts ``python -m web.cli serve`` on a fresh SQLite database in the bench's
temporary directory, with the per-IP limits lifted (every bench client comes from 127.0.0.1, which
the production defaults rightly treat as one abusive visitor), reads the owner's one-time password
from the first-start banner, logs in and mints an admin API token. With ``--url`` it targets a
running server instead and needs ``--token`` (an admin-scope API token of a workspace whose
limits allow the load).

``prepare`` creates, through the admin API, the agents (each with an ``agent``-scope API token),
raises the workspace's seats, and returns what the load generator needs (``setup``): the widget
key and the agent tokens. With ``workspaces=W`` above 1 it also creates W-1 more workspaces
(``POST /workspaces`` as the server operator, then an admin token of each new owner, who creates
that workspace's agents) and the mapping is, for pair ``i`` and A agents in all:

- workspace ``w = i % W``: the visitor says ``hello`` with ``setup["widget_keys"][w]``;
- agent ``i % A`` (``setup["agent_tokens"]``, one flat list as with one workspace), and agent
  ``k`` belongs to workspace ``k % W``. A is a multiple of W (``agents_for``), so
  ``(i % A) % W == i % W``: a pair's agent and visitor are always in the same workspace, each
  workspace has A / W agents, and A being a multiple of the load-generator processes too keeps
  every agent's pairs in one child.

``setup["widget_key"]`` stays the first workspace's key, for readers that know only one.

``LiveChatWire`` speaks ``docs/protocol.md``: a pair is an agent socket (``auth`` with its token)
and a visitor socket (``hello`` on ``/ws/v1/visitor?key=...`` with an allowed ``Origin``); the
agent opens the conversation with ``start_chat`` and the pair is ready once the visitor has
received that first event. Chat messages are ``send_message`` requests whose ``id`` is also their
``client_msg_id``; the peer receives them as ``event`` pushes carrying ``client_msg_id`` and the
conversation's ``seq``. Server heartbeats (``ping``) are answered with ``pong``.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
from trio_websocket import WebSocketConnection

from bench.target import (
    ServerProcess,
    TargetError,
    free_port,
    http_json,
    read_rss_kib,
    start_server,
)
from bench.wire import (
    Acked,
    Delivery,
    HistoryPage,
    PairLink,
    Parsed,
    Rejected,
    RelayWire,
    Reply,
    Resync,
    Wire,
    WireError,
    connect,
)

API = "/api/v1"
BENCH_PASSWORD = "bench-password-not-secret"  # throwaway accounts in a throwaway database
HANDSHAKE_TIMEOUT_S = 30.0
SETUP_CONCURRENCY = 8
FRAMES_PER_10S = 200  # the server's fixed per-connection frame budget (docs/protocol.md)
HISTORY_PAGE = 200  # get_history's largest page
HISTORY_ID_PREFIX = "history:"  # request ids of history fetches (sends use their client_msg_id)
_UNLIMITED = 1_000_000_000

# Every bench client shares one IP: lift the per-IP limits that would otherwise refuse it.
SERVER_CONFIG = {
    "demo": False,
    "secret_key": "bench-secret-key-not-secret",
    "ws_max_connections_per_ip": _UNLIMITED,
    "rate_messages_per_10s": _UNLIMITED,
    "rate_typing_per_10s": _UNLIMITED,
    "rate_ip_messages_per_10s": _UNLIMITED,
    "rate_new_conversations_per_hour": _UNLIMITED,
    "login_failures_per_ip_per_15min": _UNLIMITED,
    "log_level": "warning",
}
_BANNER_OWNER = re.compile(r"owner: username '([^']+)' password '([^']+)'")


def _toml(config: dict[str, Any]) -> str:
    return "".join(f"{key} = {json.dumps(value)}\n" for key, value in config.items())


@asynccontextmanager
async def open_server(
    *,
    workdir: Path,
    cpus: frozenset[int] | None,
    url: str | None = None,
    server_pid: int | None = None,
    token: str | None = None,
) -> AsyncIterator[ServerProcess]:
    """The real server, started here (fresh database, owner token) or found at ``url``."""
    if url is not None:
        if not token:
            raise TargetError("--url needs --token: an admin API token for the set-up")
        base = url.rstrip("/")
        base = "http" + base[len("ws") :] if base.startswith("ws") else base
        server = ServerProcess(name="server", base_url=base, pid=server_pid)
        server.credentials["token"] = token
        if server_pid is None:
            server.notes.append("no --server-pid: server CPU and RSS are not measured")
        elif read_rss_kib(server_pid) is None:
            server.notes.append(f"cannot read /proc/{server_pid}: CPU and RSS not measured")
        yield server
        return
    port = free_port()
    config = workdir / "livechat-bench.toml"
    config.write_text(_toml(SERVER_CONFIG))
    argv = [
        sys.executable,
        "-m",
        "web.cli",
        "serve",
        "--port",
        str(port),
        "--config",
        str(config),
        "--database-url",
        f"sqlite:///{workdir / 'livechat-bench.db'}",
    ]
    async with start_server("server", argv, port=port, workdir=workdir, cpus=cpus) as server:
        server.credentials["token"] = await _owner_token(server)
        yield server


async def _owner_token(server: ServerProcess) -> str:
    """Log in as the first-start owner (password from the banner) and mint an admin token."""
    match = None
    with trio.move_on_after(10):
        while match is None:
            match = _BANNER_OWNER.search(server.log_tail(200, secrets=True))
            if match is None:
                await trio.sleep(0.1)
    if match is None:
        raise TargetError(f"no first-start banner with the owner's password:\n{server.log_tail()}")
    username, password = match.groups()
    return await _admin_token(server, username, password)


async def _admin_token(server: ServerProcess, username: str, password: str) -> str:
    """Log in as ``username`` (an owner) and mint an admin-scope API token of its workspace."""
    login = await http_json(
        "POST", server.base_url + API + "/auth/login", {"username": username, "password": password}
    )
    _check(login.status, login.json, "log in as the owner")
    cookie = login.headers.get("set-cookie", "").split(";", 1)[0]
    headers = {"Cookie": cookie, "X-CSRF-Token": str(login.json.get("csrf_token") or "")}
    created = await http_json(
        "POST",
        server.base_url + API + "/tokens",
        {"name": "bench", "scopes": ["admin"]},
        headers=headers,
    )
    _check(created.status, created.json, "create the bench's admin token")
    return str(created.json["token"])


def _check(status: int, body: Any, what: str) -> None:
    if not 200 <= status < 300:
        raise TargetError(f"could not {what}: HTTP {status} {body}")


async def _api(
    server: ServerProcess, method: str, path: str, body: Any = None, *, token: str | None = None
) -> Any:
    """An admin API call with ``token``, by default the server's (the operator's) token."""
    headers = {"Authorization": f"Bearer {token or server.credentials['token']}"}
    reply = await http_json(method, server.base_url + API + path, body, headers=headers)
    _check(reply.status, reply.json, f"{method} {path}")
    return reply.json


def agents_for(pairs: int, chats_per_agent: int, processes: int, workspaces: int = 1) -> int:
    """How many agents serve ``pairs`` chats, ``chats_per_agent`` each (at least).

    Pair ``i`` belongs to agent ``i % agents``; load-generator child ``c`` drives the pairs with
    ``i % processes == c``. A multiple of ``processes`` keeps every agent's pairs in one child,
    so one agent socket sees only conversations its own process drives; a multiple of
    ``workspaces`` keeps each agent's pairs in the agent's own workspace (module docstring).
    """
    if pairs <= 0:
        return 0
    agents = max(1, math.ceil(pairs / max(1, chats_per_agent)))
    step = math.lcm(max(1, processes), max(1, workspaces))
    return math.ceil(agents / step) * step


async def prepare(
    server: ServerProcess,
    *,
    pairs: int,
    idle: int,
    chats_per_agent: int = 1,
    processes: int = 1,
    workspaces: int = 1,
    on_progress: Callable[[int, int], None] = lambda done, total: None,
) -> dict[str, Any]:
    """Seed the workspaces through the admin API; returns the load generator's ``setup``.

    Creating an agent hashes its password (argon2id, deliberately slow): this is the slow part
    of the set-up, and the reason several chats share one agent by default.
    """
    agents = agents_for(pairs, chats_per_agent, processes, workspaces)
    spaces = await _workspaces(server, workspaces)
    seats = agents // len(spaces)  # each workspace's agents
    for workspace, _token in spaces:
        chats = int(workspace["max_concurrent_chats"])
        if seats + 5 > int(workspace["agent_seats"]) or pairs > chats:
            await _api(
                server,
                "PUT",
                f"/workspaces/{workspace['id']}/limits",
                {"agent_seats": seats + 100, "max_concurrent_chats": max(pairs * 2, 1000)},
            )
    tokens: list[str] = [""] * agents
    done = 0
    limiter = trio.CapacityLimiter(SETUP_CONCURRENCY)

    async def one(i: int) -> None:
        admin = spaces[i % len(spaces)][1]  # agent i belongs to workspace i % W
        async with limiter:
            created = await _api(
                server,
                "POST",
                "/agents",
                {
                    "username": f"bench-agent-{i}",
                    "display_name": f"Bench Agent {i}",
                    "password": BENCH_PASSWORD,
                    "max_chats": min(100, max(1, chats_per_agent)),
                },
                token=admin,
            )
            token = await _api(
                server,
                "POST",
                "/tokens",
                {"name": f"bench {i}", "scopes": ["agent"], "agent_id": created["agent"]["id"]},
                token=admin,
            )
            tokens[i] = str(token["token"])
            nonlocal done
            done += 1
            on_progress(done, agents)

    async with trio.open_nursery() as nursery:
        for i in range(agents):
            nursery.start_soon(one, i)
    return {
        "widget_key": spaces[0][0]["widget_key"],
        "widget_keys": [workspace["widget_key"] for workspace, _token in spaces],
        "workspace_ids": [workspace["id"] for workspace, _token in spaces],
        "origin": server.base_url,  # the server's own URL is always an allowed widget origin
        "agent_tokens": tokens,
    }


async def _workspaces(server: ServerProcess, count: int) -> list[tuple[dict[str, Any], str]]:
    """``count`` workspaces, each with an admin token of it: the first the server lists (the
    server's own token), then ``count - 1`` created here, each with its new owner's token."""
    first = (await _api(server, "GET", "/workspaces"))["workspaces"][0]
    spaces = [(first, str(server.credentials["token"]))]
    for w in range(1, count):
        created = await _api(
            server,
            "POST",
            "/workspaces",
            {
                "name": f"Bench {w}",
                "owner_username": f"bench-owner-{w}",
                "owner_display_name": f"Bench Owner {w}",
            },
        )
        owner = await _admin_token(server, f"bench-owner-{w}", str(created["owner_password"]))
        spaces.append((created["workspace"], owner))
    return spaces


class LiveChatWire:
    """``docs/protocol.md`` version 3, as a visitor and as an agent (the result of one's own
    message carries its event: no echo frame; a burst of pushes comes as one array)."""

    def __init__(self, base_url: str, setup: dict[str, Any]) -> None:
        self.base_url = base_url.rstrip("/")
        # pair i's visitor is in workspace i % W (module docstring)
        self.widget_keys = [str(k) for k in setup.get("widget_keys") or [setup["widget_key"]]]
        self.origin = str(setup["origin"])
        self.agent_tokens: list[str] = list(setup.get("agent_tokens", []))
        # One socket per agent, shared by its pairs; opened by the first pair that needs it.
        self._agents: dict[int, WebSocketConnection] = {}
        self._agent_locks: dict[int, trio.Lock] = {}

    @property
    def max_frames_per_10s(self) -> int | None:
        return FRAMES_PER_10S

    @property
    def acknowledges(self) -> bool:
        return True

    def heartbeat_frame(self) -> str | None:
        return '{"type":"ping","id":"hb"}'

    def history_frame(self, conversation_id: str, after_seq: int) -> str | None:
        return json.dumps(
            {
                "type": "get_history",
                "id": f"{HISTORY_ID_PREFIX}{conversation_id}:{after_seq}",
                "conversation_id": conversation_id,
                "after_seq": after_seq,
                "limit": HISTORY_PAGE,
            }
        )

    async def _visitor(
        self,
        nursery: trio.Nursery,
        index: int,
        token: str | None = None,
        resume: dict[str, int] | None = None,
    ) -> tuple[WebSocketConnection, dict[str, Any]]:
        """A visitor socket of pair (or idle socket) ``index``, in workspace ``index % W``."""
        key = self.widget_keys[index % len(self.widget_keys)]
        ws = await connect(
            nursery, f"{self.base_url}/ws/v1/visitor?key={key}", [("Origin", self.origin)]
        )
        hello = {
            "type": "hello",
            "id": "hello",
            "protocol": 3,
            "token": token,
            "resume": resume or {},
        }
        await ws.send_message(json.dumps(hello))
        result = await _await_result(ws, "hello")
        return ws, result

    async def _agent(
        self, nursery: trio.Nursery, agent_index: int, resume: dict[str, int] | None = None
    ) -> WebSocketConnection:
        agent = await connect(nursery, f"{self.base_url}/ws/v1/agent")
        token = self.agent_tokens[agent_index]
        auth = {"type": "auth", "id": "auth", "protocol": 3, "token": token, "resume": resume or {}}
        await agent.send_message(json.dumps(auth))
        await _await_result(agent, "auth")
        return agent

    async def reopen(
        self, nursery: trio.Nursery, role: str, links: list[PairLink], last_seq: dict[str, int]
    ) -> WebSocketConnection | None:
        """The protocol's reconnect: same visitor token or agent token, ``resume`` seqs."""
        if role == "agent":
            agent = await self._agent(nursery, links[0].index % len(self.agent_tokens), last_seq)
            self._agents[links[0].index % len(self.agent_tokens)] = agent
            return agent
        visitor, _hello = await self._visitor(
            nursery, links[0].index, links[0].visitor_token, last_seq
        )
        return visitor

    async def open_idle(
        self, nursery: trio.Nursery, index: int, spec: dict[str, Any]
    ) -> WebSocketConnection:
        ws, _hello = await self._visitor(nursery, index)
        return ws

    async def open_pair(self, nursery: trio.Nursery, index: int, spec: dict[str, Any]) -> PairLink:
        visitor, hello = await self._visitor(nursery, index)
        visitor_id = str(hello["visitor_id"])
        agent_index = index % len(self.agent_tokens)
        opening = f"open{index}"
        # The agent socket is shared: one pair at a time talks on it until its chat is open.
        async with self._agent_locks.setdefault(agent_index, trio.Lock()):
            agent = self._agents.get(agent_index)
            if agent is None:
                agent = self._agents[agent_index] = await self._agent(nursery, agent_index)
            await agent.send_message(
                json.dumps(
                    {
                        "type": "start_chat",
                        "id": opening,
                        "visitor_id": visitor_id,
                        "client_msg_id": opening,
                        "text": "Hello, how can I help?",
                    }
                )
            )
            ack = await _await_result(agent, opening)
        await _await_event(visitor, opening)
        return PairLink(
            index=index,
            visitor=visitor,
            agent=agent,
            conversation_id=str(ack["conversation_id"]),
            visitor_token=str(hello["visitor_token"]),
        )

    def message_frame(self, role: str, link: PairLink, client_msg_id: str, body: str) -> str:
        return json.dumps(
            {
                "type": "send_message",
                "id": client_msg_id,
                "client_msg_id": client_msg_id,
                "conversation_id": link.conversation_id,
                "text": body,
            },
            separators=(",", ":"),
        )

    def parse(self, role: str, text: str) -> list[Parsed]:
        return [_parse_frame(frame) for frame in frames_of(json.loads(text))]


def frames_of(data: Any) -> list[dict[str, Any]]:
    """The frames of one WebSocket message: protocol 3 sends a burst as a JSON array."""
    return data if isinstance(data, list) else [data]


def _parse_frame(frame: dict[str, Any]) -> Parsed:
    kind = frame.get("type")
    if kind == "event":
        return _delivery(frame.get("event") or {})
    if kind == "ping":
        return Reply(text='{"type":"pong"}')
    if kind == "result":
        rid = frame.get("id")
        result = frame.get("result") or {}
        if result.get("type") == "message_ack" and isinstance(rid, str):
            return Acked(request_id=rid)
        if result.get("type") == "history":
            return HistoryPage(
                conversation_id=str(result.get("conversation_id")),
                events=tuple(_delivery(e) for e in result.get("events") or ()),
                has_more=bool(result.get("has_more")),
            )
        return None
    if kind == "resync_required":
        return Resync(
            conversation_id=str(frame.get("conversation_id")),
            from_seq=int(frame.get("from_seq") or 0),
        )
    if kind == "error":
        rid = frame.get("id")
        return Rejected(
            request_id=rid if isinstance(rid, str) else None,
            code=str(frame.get("code")),
            message=str(frame.get("message") or ""),
            retry_after_s=_float_or_none(frame.get("retry_after_s")),
        )
    return None


def _delivery(event: dict[str, Any]) -> Delivery:
    seq = event.get("seq")
    return Delivery(
        client_msg_id=str(event.get("client_msg_id") or ""),
        seq=seq if isinstance(seq, int) else None,
        conversation_id=event.get("conversation_id"),
    )


def _float_or_none(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


async def _next_frames(ws: WebSocketConnection) -> list[dict[str, Any]]:
    """The frames of the next message that is not a server heartbeat (answered on the way)."""
    while True:
        frames = frames_of(json.loads(await ws.get_message()))
        if frames and frames[0].get("type") == "ping":
            await ws.send_message('{"type":"pong"}')
            continue
        return frames


async def _await_result(ws: WebSocketConnection, request_id: str) -> dict[str, Any]:
    """Read until the answer to ``request_id``; other frames (pushes) are skipped."""
    with trio.fail_after(HANDSHAKE_TIMEOUT_S):
        while True:
            for frame in await _next_frames(ws):
                if frame.get("id") != request_id:
                    continue
                if frame.get("type") == "error":
                    raise WireError(f"{request_id}: {frame.get('code')}: {frame.get('message')}")
                if frame.get("type") == "result":
                    result: dict[str, Any] = frame["result"]
                    return result


async def _await_event(ws: WebSocketConnection, client_msg_id: str) -> None:
    with trio.fail_after(HANDSHAKE_TIMEOUT_S):
        while True:
            for frame in await _next_frames(ws):
                if frame.get("type") == "event":
                    if (frame.get("event") or {}).get("client_msg_id") == client_msg_id:
                        return
                elif frame.get("type") == "error":
                    raise WireError(f"waiting for {client_msg_id}: {frame.get('code')}")


def make_wire(protocol: str, base_url: str, setup: dict[str, Any]) -> Wire:
    if protocol == "relay":
        return RelayWire(base_url)
    if protocol == "livechat":
        wire: Wire = LiveChatWire(base_url, setup)
        return wire
    raise ValueError(f"unknown protocol {protocol!r}")
