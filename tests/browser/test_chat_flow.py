"""A visitor on the demo site chats with an agent in the console, live, through bad networks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.sync_api import expect

from tests.browser.conftest import Server, make_agent
from tests.browser.helpers import (
    TIMEOUT_MS,
    agent_console,
    agent_send,
    open_widget,
    visitor_send,
    watch_dialogs,
)


def test_visitor_chat_reaches_agent_live_then_survives_offline_and_reload(
    server: Server, browser: Any, artifacts: Path
) -> None:
    dialogs: list[str] = []
    agent = make_agent(server, name="Ann Agent")
    with agent_console(browser, server, agent, dialogs=dialogs) as console:
        visitor_ctx = browser.new_context(viewport={"width": 1200, "height": 850})
        visitor = visitor_ctx.new_page()
        watch_dialogs(visitor, dialogs)
        widget = open_widget(visitor, server)

        # The visitor starts the chat; the message goes sending -> sent.
        visitor_send(widget, "Hello, I need help with my order")
        mine = widget.locator("#lc-log .lc-msg.mine")
        expect(mine).to_have_count(1, timeout=TIMEOUT_MS)
        expect(mine.first).to_have_attribute("data-state", "sent", timeout=TIMEOUT_MS)

        # The agent gets it without reloading: in "My chats", opened, with the message.
        expect(console.locator("#mine-list li")).to_have_count(1, timeout=TIMEOUT_MS)
        console.locator("#mine-list li button").first.click()
        log = console.locator("#chat-log")
        expect(log.locator(".msg[data-author=visitor]")).to_have_count(1, timeout=TIMEOUT_MS)
        expect(log).to_contain_text("Hello, I need help with my order")

        # Typing shows both ways.
        widget.locator("#lc-input").press_sequentially("Where is my", delay=40)
        expect(console.locator("#chat-typing")).to_contain_text("is typing", timeout=TIMEOUT_MS)
        widget.locator("#lc-input").fill("")
        console.locator("#composer-input").press_sequentially("Let me check", delay=40)
        expect(widget.locator("#lc-typing")).to_contain_text("is typing", timeout=TIMEOUT_MS)

        # The agent replies: sent in the console, shown with the agent's name in the widget.
        agent_send(console, "Hi! I'm looking at your order now.")
        out = log.locator(".msg.out")
        expect(out.last).to_have_attribute("data-state", "sent", timeout=TIMEOUT_MS)
        theirs = widget.locator("#lc-log .lc-msg:not(.mine)")
        expect(theirs.last).to_contain_text("I'm looking at your order now", timeout=TIMEOUT_MS)
        expect(theirs.last).to_contain_text("Ann Agent")
        expect(widget.locator("#lc-typing")).to_have_text("", timeout=TIMEOUT_MS)
        visitor.screenshot(path=str(artifacts / "widget-chat.png"))
        console.screenshot(path=str(artifacts / "console-chat.png"))

        # Offline: two messages queue up, then go out once each, in order, when back.
        visitor_ctx.set_offline(True)
        expect(widget.locator("#lc-conn")).to_be_visible(timeout=TIMEOUT_MS)
        visitor_send(widget, "offline message one")
        visitor_send(widget, "offline message two")
        expect(widget.locator("#lc-log .lc-msg[data-state=sending]")).to_have_count(2)
        visitor.screenshot(path=str(artifacts / "widget-offline.png"))
        visitor_ctx.set_offline(False)
        expect(widget.locator("#lc-log .lc-msg[data-state=sending]")).to_have_count(
            0, timeout=TIMEOUT_MS
        )
        expect(log).to_contain_text("offline message two", timeout=TIMEOUT_MS)
        texts = log.locator(".msg[data-author=visitor] .text").all_inner_texts()
        assert texts.count("offline message one") == 1, texts
        assert texts.count("offline message two") == 1, texts
        assert texts.index("offline message one") < texts.index("offline message two"), texts

        # The stored transcript agrees: each once, in order.
        conv_id = console.locator("#mine-list li button").first.get_attribute("data-conv")
        transcript = server.api().call("GET", f"/conversations/{conv_id}/transcript")
        bodies = [e["body"] for e in transcript["events"] if e["kind"] == "message"]
        assert bodies.count("offline message one") == 1, bodies
        assert bodies.count("offline message two") == 1, bodies
        assert bodies.index("offline message one") < bodies.index("offline message two")

        # A reload keeps the conversation (token and last seq in the widget's storage).
        visitor.reload()
        widget = open_widget(visitor, server, path=visitor.url.replace(server.base_url, ""))
        msgs = widget.locator("#lc-log .lc-msg")
        expect(msgs.filter(has_text="offline message two")).to_have_count(1, timeout=TIMEOUT_MS)
        expect(msgs.filter(has_text="Hello, I need help with my order")).to_have_count(1)
        expect(msgs.filter(has_text="I'm looking at your order now")).to_have_count(1)

        # ...and the chat goes on after the reload.
        agent_send(console, "Found it: it ships tomorrow.")
        expect(widget.locator("#lc-log")).to_contain_text("ships tomorrow", timeout=TIMEOUT_MS)
        visitor_ctx.close()
    assert dialogs == []


def test_page_views_reach_the_visitor_sidebar(server: Server, browser: Any) -> None:
    agent = make_agent(server, name="Page Watcher")
    with agent_console(browser, server, agent) as console:
        visitor_ctx = browser.new_context()
        visitor = visitor_ctx.new_page()
        widget = open_widget(visitor, server)
        visitor_send(widget, "Question about pricing")
        expect(console.locator("#mine-list li")).to_have_count(1, timeout=TIMEOUT_MS)
        console.locator("#mine-list li button").first.click()
        visitor.click("header.site a[href='/demo/pricing']")
        expect(console.locator("#sidebar")).to_contain_text("Pricing", timeout=TIMEOUT_MS)
        console.goto(server.base_url + "/console#/visitors")
        expect(console.locator("#visitors-body tr").first).to_be_visible(timeout=TIMEOUT_MS)
        visitor_ctx.close()
