"""The load generator recovers what a cut socket missed, as docs/protocol.md tells clients to.

A server whose outboxes hold two pushes drops its receivers (1013) again and again under bursts,
and a resuming socket's gap is then too large to replay: it gets ``resync_required``. The load
generator must fetch the gap with ``get_history`` and resend what was not acknowledged, so that
nothing acknowledged is counted lost; before, it ignored ``resync_required`` and counted every
message of the gap as lost.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from bench.livechat_wire import LiveChatWire
from bench.loadgen_generator import Generator
from tests.web.server import run_test_server

PAIRS = 2


async def test_cut_receivers_resync_from_history_and_nothing_acknowledged_is_lost(
    tmp_path: Path,
) -> None:
    overrides = {
        "ws_outbox_size": 1,
        "ws_outbox_max_size": 2,  # a burst of three pushes drops the receiver; replay room: 1
        "rate_messages_per_10s": 100_000,
        "rate_ip_messages_per_10s": 100_000,
        "rate_new_conversations_per_hour": 1000,
        "overload_retry_after_s": 0.2,
    }
    async with run_test_server(tmp_path, **overrides) as srv:
        setup = {
            "widget_key": srv.acme.widget_key,
            "origin": srv.acme.site_origin,
            "agent_tokens": [srv.acme.agents[0].token],  # both chats on one agent socket
        }
        config: dict[str, Any] = {"indices": list(range(PAIRS)), "mode": "pairs"}
        gen = Generator(LiveChatWire(srv.ws_base, setup), config)
        with trio.fail_after(120):
            async with trio.open_nursery() as sockets:
                async with trio.open_nursery() as readers:
                    ready = await gen.open_all(sockets, readers)
                    assert ready["connected"] == PAIRS, ready
                    for ws, role, routes in gen.socket_routes():
                        if role == "agent":
                            readers.start_soon(gen.read_socket, ws, role, routes)
                    # Six messages in flight per pair: bursts that overflow every outbox.
                    result = await gen.closed_loop(
                        {"window": 6, "duration_s": 3.0, "drain_s": 10.0}
                    )
                    gen.closing = True
                    readers.cancel_scope.cancel()
                sockets.cancel_scope.cancel()

    cuts = sum(n for reason, n in result["close_reasons"].items() if reason.startswith("1013"))
    assert cuts > 0, result["close_reasons"]  # the scenario did cut receivers
    assert result["resyncs"] > 0 and result["via_history"] > 0, result
    assert result["acked_undelivered"] == result["outstanding_acked"] == 0, result
    assert result["unacked"] == result["outstanding_unacked"] == 0, result
    assert result["duplicates"] == 0
    assert sum(result["delivered"].values()) == sum(result["sent"].values()) > 0
