"""Engine fixtures: a real SQLite storage, a served ChatEngine, helpers to connect clients."""

from __future__ import annotations

import inspect
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from engine.api import (
    AgentPrincipal,
    ChatEngine,
    Connection,
    ConnectionMeta,
    EngineConfig,
    VisitorPrincipal,
)
from engine.messages import EventPush, Push
from storage import Visitor, open_storage
from storage.api import Role, Storage

_ids = itertools.count(1)


@attrs.define
class Client:
    conn: Connection
    inbox: trio.MemoryReceiveChannel[Push]

    def drain(self) -> list[Push]:
        out: list[Push] = []
        while True:
            try:
                out.append(self.inbox.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                return out

    def events(self, pushes: list[Push] | None = None) -> list[Any]:
        return [
            p.event
            for p in (self.drain() if pushes is None else pushes)
            if isinstance(p, EventPush)
        ]


@attrs.define
class ManualTime:
    """An engine clock that moves only when the test says so: deadlines and grace periods are
    then checked at exactly the time the test chose, however busy the machine is."""

    now: float = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@attrs.define
class World:
    engine: ChatEngine
    storage: Storage
    workspace_id: str
    nursery: trio.Nursery
    time: ManualTime | None = None  # set with @pytest.mark.parametrize("engine_clock", ["manual"])

    async def tick(self) -> None:
        """Have the workspace's agent actors, then its router, check their deadlines now;
        returns once they have (each ask is queued behind the tick)."""
        from engine.agent import AgentTick, GetAgentView
        from engine.routing_messages import GetAgents, Tick

        agents = self.engine._ctx.agents
        router = await self.engine._router(self.workspace_id)
        with trio.fail_after(30):
            # Agents first: a grace period that ends tells the router, which then re-routes.
            for key in agents.keys():  # noqa: SIM118 (a Registry)
                if key[0] == self.workspace_id and agents.is_active(key):
                    agent = await agents.get(key)
                    await agent.tell(AgentTick())
                    await agent.ask(lambda r: GetAgentView(reply=r))
            await router.tell(Tick())
            await router.ask(lambda r: GetAgents(reply=r))
            await self.wake_visitors()

    async def wake_visitors(self) -> None:
        """Have the visitor actors whose alarm is due (page_view triggers' time conditions)
        check them now, as the engine's ticker does; returns once they have."""
        from engine.visitor import OpenConversation

        ctx = self.engine._ctx
        visitors = ctx.visitors
        with trio.fail_after(30):
            # Each visitor first finishes what it is doing (an arrival stores its page view
            # after answering the connection, then sets its alarm): queued behind that.
            for key in list(visitors.keys()):
                if key[0] == self.workspace_id and visitors.is_active(key):
                    ref = await visitors.get(key)
                    await ref.ask(lambda r: OpenConversation(create=False, reply=r))
        due = [k for k, at in ctx.visitor_alarms.items() if at <= ctx.clock()]
        self.engine._wake_visitors()
        with trio.fail_after(30):
            for key in due:
                if key[0] == self.workspace_id and visitors.is_active(key):
                    ref = await visitors.get(key)
                    await ref.ask(lambda r: OpenConversation(create=False, reply=r))

    async def agent(
        self,
        username: str,
        *,
        role: Role = Role.AGENT,
        max_chats: int = 5,
        group_ids: tuple[str, ...] = (),
    ) -> AgentPrincipal:
        record = await self.storage.create_agent(
            self.workspace_id,
            username=f"{username}-{next(_ids)}",
            display_name=username.title(),
            password_hash=None,
            role=role,
            max_chats=max_chats,
            group_ids=group_ids,
        )
        return AgentPrincipal(
            workspace_id=self.workspace_id,
            agent_id=record.id,
            role=role,
            display_name=record.display_name,
        )

    async def visitor(self) -> VisitorPrincipal:
        record = await self.storage.create_visitor(self.workspace_id, token_hash=None)
        return VisitorPrincipal(workspace_id=self.workspace_id, visitor_id=record.id)

    async def connect(
        self,
        principal: Any,
        *,
        resume: dict[str, int] | None = None,
        outbox_size: int = 1000,
        meta: ConnectionMeta | None = None,
        new_visitor: Visitor | None = None,
    ) -> Client:
        send, recv = trio.open_memory_channel[Push](outbox_size)
        conn = await self.engine.connect(
            principal,
            send,
            connection_id=f"c{next(_ids)}",
            resume=resume or {},
            meta=meta,
            new_visitor=new_visitor,
        )
        return Client(conn=conn, inbox=recv)


@pytest.fixture
def fast_clock() -> trio.testing.MockClock:
    """Virtual time 25x faster than real time. Not autojump: the SQLite storage works in
    threads, and autojump would fire every deadline while a thread is busy."""
    return trio.testing.MockClock(rate=25)


@pytest.fixture
def engine_config() -> dict[str, Any]:
    """Override with ``@pytest.mark.parametrize("engine_config", [{...}])``."""
    return {}


@pytest.fixture
def workspace_settings() -> dict[str, Any]:
    return {}


@pytest.fixture
def engine_clock() -> str:
    """The engine's clock: "trio" (trio's, the default) or "manual" (``World.time``)."""
    return "trio"


@pytest.fixture
async def world(
    tmp_path: Path,
    engine_config: dict[str, Any],
    workspace_settings: dict[str, Any],
    engine_clock: str,
) -> AsyncIterator[World]:
    async with open_storage(f"sqlite:///{tmp_path / 'engine.db'}") as storage:
        workspace = await storage.create_workspace(name="Acme", settings=workspace_settings)
        cfg = EngineConfig(**{"tick_interval_s": 0.5, **engine_config})
        manual = ManualTime() if engine_clock == "manual" else None
        engine = ChatEngine(storage, cfg, clock=manual or trio.current_time)
        async with trio.open_nursery() as inner:
            await inner.start(engine.serve)
            yield World(
                engine=engine,
                storage=storage,
                workspace_id=workspace.id,
                nursery=inner,
                time=manual,
            )
            inner.cancel_scope.cancel()


async def wait_until(
    predicate: Callable[[], object | Awaitable[object]],
    timeout: float = 30.0,
    *,
    interval: float = 0.02,
    what: str = "",
) -> None:
    """Poll ``predicate`` (sync or async) until it is truthy.

    ``timeout`` and ``interval`` are *wall-clock* seconds whatever trio clock the test runs on
    (the engine tests use ``MockClock(rate=...)``), so a generous default bound stays generous
    on a slow, shared CI machine while a behaviour that never happens still fails the test.
    """
    clock = trio.lowlevel.current_clock()
    rate = getattr(clock, "rate", 1.0) or 1.0  # autojump (rate 0): sleeping is instant anyway
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"not true within {timeout} s: {what or predicate}")
        await trio.sleep(interval * rate)
