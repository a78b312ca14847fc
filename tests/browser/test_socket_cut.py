"""A socket cut while messages are being typed and sent loses nothing, on either side.

The server cuts a socket with 1013 when that receiver stops reading (docs/protocol.md,
"Overload"); the client must then reconnect, resume, and resend every message the server had
not acknowledged, with the same ``client_msg_id``, so a message that was stored but whose ack
was lost in the cut is not stored twice. Playwright sits between the page and the server
(``route_web_socket``): it swallows the server's frames (the acks are lost in flight), then cuts
the socket with 1013, as the server does.
"""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import Page, expect

from tests.browser.conftest import Server, make_agent
from tests.browser.helpers import (
    TIMEOUT_MS,
    SocketCutter,
    agent_console,
    agent_send,
    console_login,
    open_widget,
    set_accepting,
    visitor_send,
    wait_until,
)


def _transcript(server: Server, conv_id: str) -> list[str]:
    events = server.api().call("GET", f"/conversations/{conv_id}/transcript")["events"]
    return [e["body"] for e in events if e["kind"] == "message"]


def _exactly_once_in_order(texts: list[str], wanted: list[str]) -> None:
    for text in wanted:
        assert texts.count(text) == 1, (text, texts)
    positions = [texts.index(text) for text in wanted]
    assert positions == sorted(positions), texts


def test_cut_sockets_under_typing_lose_and_duplicate_nothing(server: Server, browser: Any) -> None:
    agent = make_agent(server, name="Cut Tester")
    visitor_cut = SocketCutter()
    with agent_console(browser, server, agent) as console:
        visitor_ctx = browser.new_context()
        visitor_ctx.route_web_socket(re.compile(r".*/ws/v1/visitor.*"), visitor_cut.handle)
        visitor: Page = visitor_ctx.new_page()
        widget = open_widget(visitor, server)
        visitor_send(widget, "hello before the cut")
        expect(widget.locator("#lc-log .lc-msg.mine").first).to_have_attribute(
            "data-state", "sent", timeout=TIMEOUT_MS
        )
        expect(console.locator("#mine-list li")).to_have_count(1, timeout=TIMEOUT_MS)
        console.locator("#mine-list li button").first.click()
        conv_id = console.locator("#mine-list li button").first.get_attribute("data-conv")
        assert conv_id
        log = console.locator("#chat-log")
        expect(log).to_contain_text("hello before the cut", timeout=TIMEOUT_MS)

        # The visitor types fast; the server's answers are lost in flight, then the socket is
        # cut while the rest are still queued, and more are typed while it is down.
        visitor_cut.swallow = True
        typed = [f"typed {i}" for i in range(1, 6)]
        for text in typed:
            visitor_send(widget, text)
        wait_until(visitor, lambda: visitor_cut.acked("typed 1"), "the first send's lost ack")
        assert "typed 1" in _transcript(server, conv_id)  # stored, but the page never heard
        visitor_cut.cut()
        for text in ("typed 6", "typed 7"):
            visitor_send(widget, text)
            typed.append(text)
        expect(widget.locator("#lc-log .lc-msg[data-state=sending]")).to_have_count(
            0, timeout=TIMEOUT_MS
        )
        expect(log).to_contain_text("typed 7", timeout=TIMEOUT_MS)
        assert len(visitor_cut.routes) >= 2, "the widget did not reconnect"
        first_ids = visitor_cut.sends_of("typed 1")
        assert len(first_ids) >= 2 and len(set(first_ids)) == 1, first_ids  # resent, same id
        _exactly_once_in_order(
            log.locator(".msg[data-author=visitor] .text").all_inner_texts(), typed
        )
        _exactly_once_in_order(_transcript(server, conv_id), typed)
        mine = widget.locator("#lc-log .lc-msg.mine").all_inner_texts()
        for text in typed:
            assert sum(text in m for m in mine) == 1, (text, mine)
        visitor_ctx.close()


def test_console_resends_unacknowledged_replies_after_a_cut(server: Server, browser: Any) -> None:
    agent = make_agent(server, name="Cut Console")
    console_cut = SocketCutter()
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.route_web_socket(re.compile(r".*/ws/v1/agent.*"), console_cut.handle)
    page = context.new_page()
    try:
        console_login(page, server, agent["username"], agent["password"])
        set_accepting(page, True)
        visitor_ctx = browser.new_context()
        visitor = visitor_ctx.new_page()
        widget = open_widget(visitor, server)
        visitor_send(widget, "I need an answer")
        expect(page.locator("#mine-list li")).to_have_count(1, timeout=TIMEOUT_MS)
        page.locator("#mine-list li button").first.click()
        conv_id = page.locator("#mine-list li button").first.get_attribute("data-conv")
        assert conv_id
        expect(page.locator("#chat-log")).to_contain_text("I need an answer", timeout=TIMEOUT_MS)

        console_cut.swallow = True
        replies = [f"reply {i}" for i in range(1, 4)]
        for text in replies:
            agent_send(page, text)
        wait_until(page, lambda: console_cut.acked("reply 1"), "the first reply's lost ack")
        console_cut.cut()
        agent_send(page, "reply 4")
        replies.append("reply 4")
        expect(page.locator("#chat-log .msg.out[data-state=sending]")).to_have_count(
            0, timeout=TIMEOUT_MS
        )
        theirs = widget.locator("#lc-log .lc-msg:not(.mine)")
        expect(theirs.filter(has_text="reply 4")).to_have_count(1, timeout=TIMEOUT_MS)
        first_ids = console_cut.sends_of("reply 1")
        assert len(first_ids) >= 2 and len(set(first_ids)) == 1, first_ids
        _exactly_once_in_order(_transcript(server, conv_id), ["I need an answer", *replies])
        shown = page.locator("#chat-log .msg.out .text").all_inner_texts()
        _exactly_once_in_order(shown, replies)
        for text in replies:
            assert theirs.filter(has_text=text).count() == 1, text
        visitor_ctx.close()
    finally:
        context.close()
