"""Overload policy over real sockets: senders are pushed back, receivers that read are never cut.

docs/protocol.md, "Overload": a backed-up outbox whose peer still reads is the process being
behind, not a slow consumer; only a receiver that stops reading is cut (1013), after
``ws_slow_consumer_grace_s``, and it then resumes without losing anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio
from trio_websocket import ConnectionClosed

from tests.web.client import Http, Peer, open_peer, visitor
from tests.web.server import run_test_server
from tests.web.test_ws_chat import agent_peer_login, events_of, start_agent
from web.overload import OverloadGate

RETRYABLE = ("rate_limited", "overloaded")
SENDERS = 4
MESSAGES_EACH = 30


async def _blast(peer: Peer, conversation_id: str, prefix: str, acked: dict[str, int]) -> int:
    """Send every message at once, then resend each refused one after ``retry_after_s`` with the
    same ``client_msg_id`` until all are acknowledged; returns how many refusals it got."""
    pending = {f"{prefix}-{i}": f"{prefix} says {i}" for i in range(MESSAGES_EACH)}
    refused = 0

    async def send(cmid: str) -> None:
        frame = {
            "type": "send_message",
            "id": cmid,
            "client_msg_id": cmid,
            "conversation_id": conversation_id,
            "text": pending[cmid],
        }
        await peer.ws.send_message(json.dumps(frame))

    async with trio.open_nursery() as resends:
        for cmid in list(pending):
            await send(cmid)
        while not all(cmid in acked for cmid in pending):
            frame = await peer.recv(timeout=30)
            if frame.get("type") == "result" and frame.get("id") in pending:
                acked[frame["id"]] = frame["result"]["seq"]
            elif frame.get("type") == "error" and frame.get("id") in pending:
                assert frame["code"] in RETRYABLE, frame
                assert frame["retry_after_s"] is not None and frame["retry_after_s"] > 0, frame
                refused += 1

                async def later(cmid: str, wait_s: float) -> None:
                    await trio.sleep(min(wait_s, 2.0))
                    await send(cmid)

                resends.start_soon(later, frame["id"], float(frame["retry_after_s"]))
    return refused


async def test_senders_far_over_rate_are_pushed_back_and_readers_are_never_cut(
    tmp_path: Path,
) -> None:
    overrides = {
        "ws_outbox_size": 2,  # every burst backs the agent's outbox up
        "overload_retry_after_s": 0.2,
        "rate_messages_per_10s": 100_000,
        "rate_ip_messages_per_10s": 100_000,
        "rate_frames_per_10s": 100_000,
        "rate_new_conversations_per_hour": 1000,
    }
    async with run_test_server(tmp_path, **overrides) as srv:
        assert srv.services is not None
        http = await agent_peer_login(srv, Http(srv.base_url))
        url = srv.visitor_ws_url(srv.acme.widget_key)
        async with open_peer(srv.agent_ws_url, cookie=http.cookie) as agent:
            await start_agent(agent)
            visitors: list[Peer] = []
            conversations: list[str] = []
            async with trio.open_nursery() as nursery:
                for _ in range(SENDERS):
                    cm = open_peer(url, origin=srv.acme.site_origin)
                    visitors.append(await nursery.start(_hold, cm))
                for i, vis in enumerate(visitors):
                    await visitor(srv, vis)
                    ack = await vis.request("send_message", client_msg_id=f"open-{i}", text="hi")
                    conversations.append(ack["result"]["conversation_id"])
                for conv in conversations:
                    watching = await agent.request("watch", conversation_id=conv, after_seq=0)
                    assert watching["result"]["type"] == "watching"

                # Every visitor sends far over the engine's rate (5/s, bursts of 20), all at
                # once, while the agent reads every push as it comes.
                acked: dict[str, int] = {}
                refusals: list[int] = []
                seen: dict[str, int] = {}
                agent_closed: list[int | None] = []

                async def read_agent() -> None:
                    try:
                        while True:
                            frame = json.loads(await agent.ws.get_message())
                            if frame.get("type") == "ping":
                                await agent.ws.send_message('{"type":"pong"}')
                            elif frame.get("type") == "event":
                                cmid = frame["event"].get("client_msg_id") or ""
                                seen[cmid] = seen.get(cmid, 0) + 1
                    except ConnectionClosed as closed:
                        agent_closed.append(closed.reason.code if closed.reason else None)

                async def one(i: int) -> None:
                    refusals.append(await _blast(visitors[i], conversations[i], f"v{i}", acked))

                with trio.fail_after(120):
                    async with trio.open_nursery() as traffic:
                        traffic.start_soon(read_agent)
                        async with trio.open_nursery() as senders:
                            for i in range(SENDERS):
                                senders.start_soon(one, i)
                        # Every acknowledged message reaches the agent, exactly once.
                        while not all(cmid in seen for cmid in acked) and not agent_closed:
                            await trio.sleep(0.05)
                        traffic.cancel_scope.cancel()
                nursery.cancel_scope.cancel()

            assert agent_closed == [], f"the agent was cut although it read: {agent_closed}"
            assert len(acked) == SENDERS * MESSAGES_EACH
            assert sum(refusals) > 0, "nobody was pushed back"
            assert {cmid: seen.get(cmid) for cmid in acked} == dict.fromkeys(acked, 1)
            assert srv.services.metrics.ws_closes.get(1013, 0) == 0


async def _hold(cm: Any, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    async with cm as peer:
        task_status.started(peer)
        await trio.sleep_forever()


async def test_overloaded_server_refuses_messages_with_retry_after_and_stores_nothing(
    tmp_path: Path,
) -> None:
    # A lag threshold no tick can stay under: the gate sheds from the first tick on.
    async with run_test_server(tmp_path, overload_loop_lag_s=1e-9) as srv:
        assert srv.services is not None
        gate = srv.services.overload
        url = srv.visitor_ws_url(srv.acme.widget_key)
        with trio.fail_after(10):
            while not gate.shedding:
                await trio.sleep(0.05)
        async with open_peer(url, origin=srv.acme.site_origin) as vis:
            await visitor(srv, vis)
            refused = await vis.request("send_message", client_msg_id="m-1", text="hello")
            assert refused["type"] == "error"
            assert refused["code"] == "overloaded"
            assert 0 < refused["retry_after_s"] <= 2 * gate.retry_after_s
            # Other requests still work: only chat messages are shed.
            pong = await vis.request("page_view", url="http://site.test/next")
            assert pong["type"] == "result"
        assert srv.services.metrics.ws_errors["overloaded"] == 1


def test_gate_sheds_for_loop_lag_or_draining_backlog_not_for_one_stalled_peer() -> None:
    gate = OverloadGate(loop_lag_s=0.5, backed_up_fraction=0.01, retry_after_s=1.0)
    gate.update(lag_s=0.01, behind=0, sockets=1000)
    assert not gate.shedding
    gate.update(lag_s=0.8, behind=0, sockets=1000)
    assert gate.shedding and "late" in gate.reason
    gate.update(lag_s=0.01, behind=9, sockets=1000)  # fewer than 1 % draining slowly
    assert not gate.shedding
    gate.update(lag_s=0.01, behind=10, sockets=1000)
    assert gate.shedding and "backed up" in gate.reason
    waits = {gate.retry_after() for _ in range(50)}
    assert all(0.5 <= w <= 1.5 for w in waits) and len(waits) > 1


async def test_receiver_that_stops_reading_is_cut_after_the_grace_and_resumes_everything(
    tmp_path: Path,
) -> None:
    overrides = {
        "ws_outbox_size": 4,
        "ws_slow_consumer_grace_s": 2.0,
        "rate_messages_per_10s": 100_000,
        "rate_ip_messages_per_10s": 100_000,
        "rate_frames_per_10s": 100_000,
    }
    async with run_test_server(tmp_path, **overrides) as srv:
        assert srv.services is not None
        sockets = srv.services.sockets
        http = await agent_peer_login(srv, Http(srv.base_url))
        url = srv.visitor_ws_url(srv.acme.widget_key)
        async with (
            open_peer(srv.agent_ws_url, cookie=http.cookie) as agent,
            open_peer(url, origin=srv.acme.site_origin) as slow,
            open_peer(url, origin=srv.acme.site_origin) as fast,
        ):
            await start_agent(agent)
            slow_hello = await visitor(srv, slow)
            ack = await slow.request("send_message", client_msg_id="s-1", text="slow here")
            slow_conv = ack["result"]["conversation_id"]
            await visitor(srv, fast)
            fast_ack = await fast.request("send_message", client_msg_id="f-1", text="fast here")
            fast_conv = fast_ack["result"]["conversation_id"]

            def slow_cut() -> bool:
                return any(
                    s.visitor_id == slow_hello["visitor_id"] and s.close_code == 1013
                    for s in sockets
                )

            # The slow visitor stops reading; the agent writes large messages into its chat
            # until the socket buffers fill and the grace runs out.
            big = "€" * 9_000  # 27 kB of UTF-8 per frame
            acked: list[int] = []
            with trio.fail_after(60):
                i = 0
                while not slow_cut():
                    r = await agent.request(
                        "send_message", conversation_id=slow_conv, client_msg_id=f"b-{i}", text=big
                    )
                    if r["type"] == "error":
                        assert r["code"] in RETRYABLE, r
                        await trio.sleep(min(1.0, r["retry_after_s"]))
                        continue
                    acked.append(r["result"]["seq"])
                    i += 1
                    if i % 25 == 0:
                        # Meanwhile the fast visitor's chat keeps flowing promptly.
                        with trio.fail_after(5):
                            ping = await agent.request(
                                "send_message",
                                conversation_id=fast_conv,
                                client_msg_id=f"p-{i}",
                                text="still there?",
                            )
                            if ping["type"] == "result":
                                seq = ping["result"]["seq"]
                                while (await fast.push("event"))["event"]["seq"] != seq:
                                    pass
                    if len(acked) > 400 and not slow_cut():
                        await trio.sleep(0.1)  # buffers are full: wait out the grace
            # Only the one that stopped reading was cut.
            assert [s.close_code for s in sockets if s.close_code is not None] == [1013]
            # When it reads again it finds what was already in flight, then the close: 1013.
            received: list[int] = []
            with trio.fail_after(30):
                try:
                    while True:
                        frame = json.loads(await slow.ws.get_message())
                        if frame.get("type") == "event":
                            received.append(frame["event"]["seq"])
                except ConnectionClosed as closed:
                    assert closed.reason is not None and closed.reason.code == 1013
            assert received == sorted(received)
        # It resumes from the last seq it saw and gets every acknowledged message after it.
        last_seq = max(acked)
        async with open_peer(url, origin=srv.acme.site_origin) as again:
            resume_from = received[-1]
            hello = await visitor(
                srv, again, token=slow_hello["visitor_token"], resume={slow_conv: resume_from}
            )
            assert hello["visitor_id"] == slow_hello["visitor_id"]
            got = await _catch_up(again, slow_conv, resume_from, last_seq)
            assert got == list(range(resume_from + 1, last_seq + 1))


async def _catch_up(peer: Peer, conversation_id: str, after: int, last_seq: int) -> list[int]:
    """Replayed events, or after ``resync_required`` the history pages: every seq up to
    ``last_seq``, as a client following docs/protocol.md gets them."""
    got: list[int] = [e["seq"] for e in events_of(peer.pushes, conversation_id)]
    resync = [f for f in peer.pushes if f["type"] == "resync_required"]
    with trio.fail_after(30):
        while not resync and (not got or got[-1] < last_seq):
            frame = await peer.recv()
            if frame["type"] == "resync_required":
                resync.append(frame)
            elif frame["type"] == "event":
                got.append(frame["event"]["seq"])
        if resync:
            got = []
            cursor = after
            while cursor < last_seq:
                page = await peer.request(
                    "get_history", conversation_id=conversation_id, after_seq=cursor, limit=200
                )
                seqs = [e["seq"] for e in page["result"]["events"]]
                assert seqs, page
                got.extend(seqs)
                cursor = seqs[-1]
    return [s for s in got if s <= last_seq]


async def test_a_receiver_that_reads_slowly_backs_up_and_the_senders_are_shed_not_it(
    tmp_path: Path,
) -> None:
    overrides = {
        "ws_outbox_size": 4,
        "ws_slow_consumer_grace_s": 30.0,
        "overload_retry_after_s": 0.5,
        "rate_messages_per_10s": 100_000,
        "rate_ip_messages_per_10s": 100_000,
        "rate_frames_per_10s": 100_000,
        "rate_visitor_messages_per_s": 10_000,
        "rate_visitor_message_burst": 10_000,
    }
    big = "€" * 9_000  # 27 kB of UTF-8: the socket buffers fill, then the outbox backs up
    async with run_test_server(tmp_path, **overrides) as srv:
        assert srv.services is not None
        metrics = srv.services.metrics
        http = await agent_peer_login(srv, Http(srv.base_url))
        url = srv.visitor_ws_url(srv.acme.widget_key)
        async with (
            open_peer(srv.agent_ws_url, cookie=http.cookie) as agent,
            open_peer(url, origin=srv.acme.site_origin) as vis,
        ):
            await start_agent(agent)
            await visitor(srv, vis)
            first = await vis.request("send_message", client_msg_id="open", text="hi")
            conv = first["result"]["conversation_id"]
            watching = await agent.request("watch", conversation_id=conv, after_seq=0)
            assert watching["result"]["type"] == "watching"

            acked: set[str] = set()
            seen: dict[str, int] = {}
            shed = trio.Event()

            async def read_slowly() -> None:
                # Reads, but at 25 frames/s: far slower than the visitor sends.
                while True:
                    frame = json.loads(await agent.ws.get_message())
                    if frame.get("type") == "ping":
                        await agent.ws.send_message('{"type":"pong"}')
                    elif frame.get("type") == "event":
                        cmid = frame["event"].get("client_msg_id") or ""
                        seen[cmid] = seen.get(cmid, 0) + 1
                    await trio.sleep(0 if shed.is_set() else 0.04)

            async def send_until_shed() -> None:
                i = 0
                while not shed.is_set():
                    reply = await vis.request(
                        "send_message", client_msg_id=f"big-{i}", text=big, timeout=30
                    )
                    if reply["type"] == "error":
                        assert reply["code"] == "overloaded", reply
                        assert reply["retry_after_s"] > 0
                        shed.set()
                        break
                    acked.add(f"big-{i}")
                    i += 1

            with trio.fail_after(90):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read_slowly)
                    await send_until_shed()
                    # The reader was never cut; it now catches up with every acked message.
                    while not all(cmid in seen for cmid in acked):
                        await trio.sleep(0.05)
                    nursery.cancel_scope.cancel()
            assert metrics.ws_errors["overloaded"] >= 1
            assert metrics.ws_closes.get(1013, 0) == 0
            assert all(s.close_code is None for s in srv.services.sockets)
            assert {cmid: seen[cmid] for cmid in acked} == dict.fromkeys(acked, 1)
