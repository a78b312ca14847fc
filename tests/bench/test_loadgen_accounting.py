"""The load generator's delivery accounting after a resync: a history page and the resumed
socket's live pushes overlap (an event stored before the page was read can still be on its
way as a push); a message seen in both is one delivery, neither a duplicate nor out of order.
A message pushed live twice is still a duplicate."""

from __future__ import annotations

from typing import Any, cast

import trio

from bench.livechat_wire import LiveChatWire
from bench.loadgen_generator import Generator
from bench.wire import PairLink


def _generator() -> tuple[Generator, PairLink]:
    wire = LiveChatWire("ws://127.0.0.1:9", {"widget_key": "k", "origin": "http://127.0.0.1"})
    unused = cast(Any, None)  # no socket is opened: only the accounting runs
    return Generator(wire, {}), PairLink(index=0, visitor=unused, agent=unused)


def _sent(gen: Generator, *msg_ids: str) -> None:
    for msg_id in msg_ids:
        gen.pending[msg_id] = trio.current_time()


async def test_a_message_in_a_history_page_then_pushed_live_is_one_delivery() -> None:
    gen, link = _generator()
    _sent(gen, "a0-1", "a0-2", "a0-3")
    assert gen._on_delivery("visitor", link, "a0-1", 4)  # live, then the socket is cut
    assert gen._on_delivery("visitor", link, "a0-2", 5, history=True)  # the gap's page
    assert gen._on_delivery("visitor", link, "a0-3", 6, history=True)
    assert not gen._on_delivery("visitor", link, "a0-2", 5)  # its push, after the page
    assert not gen._on_delivery("visitor", link, "a0-3", 6)
    assert gen.stats.duplicates == gen.stats.seq_violations == 0
    assert gen.stats.delivered == {"v2a": 0, "a2v": 3}
    assert gen.last_seq[("visitor", 0)] == 6  # the next resume starts after the page


async def test_a_message_pushed_live_twice_is_a_duplicate() -> None:
    gen, link = _generator()
    _sent(gen, "a0-1", "a0-2")
    assert gen._on_delivery("visitor", link, "a0-1", 4, history=True)
    assert not gen._on_delivery("visitor", link, "a0-1", 4)  # the overlap: one delivery
    assert not gen._on_delivery("visitor", link, "a0-1", 4)  # again: a duplicate
    assert gen._on_delivery("visitor", link, "a0-2", 5)
    assert not gen._on_delivery("visitor", link, "a0-2", 5)
    assert gen.stats.duplicates == 2
    assert gen.stats.seq_violations == 2  # each repeat went back in the live order
