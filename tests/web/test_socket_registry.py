"""The live-socket registry finds sockets by workspace, visitor, agent, session and token
through its indexes, and keeps them exact as sockets authenticate and close; and a connection's own
rate window."""

from __future__ import annotations

import logging
from functools import partial

import pytest
import trio
import trio.testing

from storage import StorageUnavailable
from web.protocol import CloseCode
from web.ratelimit import HitWindow
from web.sockets import LiveSocket, SocketRegistry


def _sock(sid: str, kind: str = "visitor", workspace_id: str = "") -> LiveSocket:
    return LiveSocket(id=sid, kind=kind, workspace_id=workspace_id, ip="10.0.0.1")


def test_lookups_find_exactly_the_sockets_bound_to_each_identity() -> None:
    reg = SocketRegistry()
    v1a, v1b, v2 = _sock("v1a", workspace_id="W1"), _sock("v1b", workspace_id="W1"), _sock("v2")
    agent_cookie, agent_token, other_ws = _sock("a1", "agent"), _sock("a2", "agent"), _sock("a3")
    for sock in (v1a, v1b, v2, agent_cookie, agent_token, other_ws):
        reg.add(sock)
    assert {s.id for s in reg.of_workspace("W1")} == {"v1a", "v1b"}  # before hello: workspace
    reg.bind(v1a, workspace_id="W1", visitor_id="V1")
    reg.bind(v1b, workspace_id="W1", visitor_id="V1")
    reg.bind(v2, workspace_id="W1", visitor_id="V2")
    reg.bind(agent_cookie, workspace_id="W1", agent_id="A", session_hash="S1")
    reg.bind(agent_token, workspace_id="W1", agent_id="A", token_id="T1")
    reg.bind(other_ws, workspace_id="W2", visitor_id="V1")  # same visitor id, other workspace

    assert {s.id for s in reg.of_visitor("W1", "V1")} == {"v1a", "v1b"}
    assert {s.id for s in reg.of_visitor("W2", "V1")} == {"a3"}
    assert {s.id for s in reg.of_agent("W1", "A")} == {"a1", "a2"}
    assert [s.id for s in reg.of_session("S1")] == ["a1"]
    assert [s.id for s in reg.of_token("T1")] == ["a2"]
    assert {s.id for s in reg.of_workspace("W1")} == {"v1a", "v1b", "v2", "a1", "a2"}
    assert reg.of_agent("W2", "A") == [] and reg.of_session("nope") == []
    assert len(reg) == 6


def test_closed_sockets_leave_every_index() -> None:
    reg = SocketRegistry()
    a, b = _sock("a", "agent"), _sock("b", "agent")
    for sock in (a, b):
        reg.add(sock)
        reg.bind(sock, workspace_id="W", agent_id="A", session_hash="S", token_id=None)
    reg.remove(a)
    assert a.finished and not b.finished
    assert [s.id for s in reg.of_agent("W", "A")] == ["b"]
    assert [s.id for s in reg.of_session("S")] == ["b"]
    reg.remove(b)
    reg.remove(b)  # idempotent
    assert reg.of_agent("W", "A") == [] and reg.of_workspace("W") == [] and len(reg) == 0
    # A lookup's result is a copy: closing while iterating is safe.
    c = _sock("c", workspace_id="W")
    reg.add(c)
    for sock in reg.of_workspace("W"):
        sock.close(CloseCode.POLICY, "gone")
        reg.remove(sock)
    assert c.close_code == CloseCode.POLICY and reg.of_workspace("W") == []


def test_binding_again_moves_the_socket() -> None:
    reg = SocketRegistry()
    sock = _sock("s")
    reg.add(sock)
    reg.bind(sock, workspace_id="W", visitor_id="V1")
    reg.bind(sock, workspace_id="W", visitor_id="V2")
    assert reg.of_visitor("W", "V1") == [] and reg.of_visitor("W", "V2") == [sock]
    assert reg.of_workspace("") == [] and reg.of_workspace("W") == [sock]


def test_a_connections_window_allows_limit_events_per_window_and_says_when_to_retry() -> None:
    now = [100.0]
    window = HitWindow(3, 10.0, clock=lambda: now[0])
    for t in (100.0, 101.0, 102.0):
        now[0] = t
        assert window.hit() == 0.0
    now[0] = 103.0
    assert window.hit() == 7.0  # the oldest (100.0) leaves the window at 110.0
    now[0] = 110.0
    assert window.hit() == 0.0  # 100.0 is out; 101, 102 and 110 are in
    assert window.hit() == 1.0  # until 101.0 leaves
    now[0] = 200.0
    assert [window.hit() for _ in range(4)] == [0.0, 0.0, 0.0, 10.0]


async def test_close_all_cancels_every_handler_and_waits_until_each_has_unregistered() -> None:
    reg = SocketRegistry()
    socks = [_sock(f"s{i}", "visitor") for i in range(3)]
    unregistered: list[str] = []

    async def handler(sock: LiveSocket) -> None:
        # What SocketSession.run does: cancelled by close, then a (shielded) cleanup.
        with trio.CancelScope() as scope:
            sock.cancel_scope = scope
            await trio.sleep_forever()
        with trio.CancelScope(shield=True):
            for _ in range(5):  # a cleanup that takes a few scheduling rounds
                await trio.lowlevel.checkpoint()
        unregistered.append(sock.id)
        reg.remove(sock)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for sock in socks:
                reg.add(sock)
                nursery.start_soon(handler, sock)
            await trio.testing.wait_all_tasks_blocked()
            await reg.close_all(1001, "shutting down", timeout_s=5)
            assert sorted(unregistered) == ["s0", "s1", "s2"]
            assert all(s.finished and s.close_code == 1001 for s in socks)
            await reg.close_all(1001, "again", timeout_s=5)  # nothing left: returns at once


async def test_the_timer_skips_an_idle_socket_until_its_check_at_or_a_wake(
    autojump_clock: trio.testing.MockClock,
) -> None:
    reg = SocketRegistry()
    sock = _sock("s")
    checked: list[float] = []

    def check(now: float) -> None:
        checked.append(now)
        sock.check_at = now + 10  # nothing can be due for 10 s
        return None

    sock.check = check
    reg.add(sock)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reg.watch, 1.0)
        await trio.sleep(5.5)
        assert checked == [1.0]  # the first tick, then skipped
        sock.wake()  # its outbox got something
        await trio.sleep(1)
        assert checked == [1.0, 6.0]
        await trio.sleep(20)
        assert checked == [1.0, 6.0, 16.0, 26.0]
        nursery.cancel_scope.cancel()


async def test_a_storage_outage_fails_every_credential_recheck_in_a_few_log_lines(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="livechat.ws")
    reg = SocketRegistry()
    down = True

    async def recheck() -> tuple[int, str] | None:
        if down:
            raise StorageUnavailable("connection refused")
        return None

    for n in range(50):  # 50 agents, each signed in with their own session
        sock = _sock(f"a{n}", kind="agent", workspace_id="w")
        sock.session_hash, sock.recheck = f"session-{n}", recheck
        reg.add(sock)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(reg.recheck_credentials, 10.0, timeout_s=1.0))
        await trio.sleep(35)  # passes at 10, 20 and 30 s: 150 failed checks
        down = False
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    lines = [r.getMessage() for r in caplog.records if r.name == "livechat.ws"]
    assert lines == [
        "credential re-check failed: StorageUnavailable: connection refused",
        "credential re-check failed 50 times in the last 10.0 s (StorageUnavailable 50)",
        "credential re-check failed 50 times in the last 10.0 s (StorageUnavailable 50)",
        "credential re-checks succeed again after 150 failures"
        " (the last 49 not logged: StorageUnavailable 49)",
    ]
    assert caplog.records[0].exc_info is not None  # the first carries its traceback
    assert all(s.close_code is None for s in reg)  # a failed check closes nothing
