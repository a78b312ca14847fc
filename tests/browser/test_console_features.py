"""Console tools: canned responses, internal notes, proactive chat, history search, reports,
audit log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.sync_api import expect

from tests.browser.conftest import Server, make_agent
from tests.browser.helpers import (
    TIMEOUT_MS,
    WIDGET_FRAME,
    agent_console,
    agent_send,
    console_login,
    open_widget,
    visitor_send,
)


def test_canned_response_note_and_history_search(server: Server, browser: Any) -> None:
    api = server.api()
    api.call("POST", "/canned-responses", {"shortcut": "thanks", "text": "Thanks for waiting!"})
    agent = make_agent(server, name="Canny Agent")
    with agent_console(browser, server, agent) as console:
        console.reload()  # picks up the new canned response
        expect(console.locator("body")).to_have_attribute("data-conn", "online", timeout=TIMEOUT_MS)
        visitor_ctx = browser.new_context()
        widget = open_widget(visitor_ctx.new_page(), server)
        visitor_send(widget, "zebra-unique-word question")
        expect(console.locator("#mine-list li")).to_have_count(1, timeout=TIMEOUT_MS)
        console.locator("#mine-list li button").first.click()

        box = console.locator("#composer-input")
        # The chat opens on the hash change after the click: typing before it would send the
        # first key to a hidden composer (the CI run lost the "/" that way).
        expect(box).to_be_focused(timeout=TIMEOUT_MS)
        box.press_sequentially("/tha", delay=30)
        suggestion = console.locator("#canned-suggest li").first
        expect(suggestion).to_contain_text("/thanks")
        box.press("Tab")
        expect(box).to_have_value("Thanks for waiting!")
        box.press("Enter")
        expect(widget.locator("#lc-log")).to_contain_text("Thanks for waiting!", timeout=TIMEOUT_MS)

        agent_send(console, "internal: visitor seems to be a VIP", mode="note")
        expect(console.locator("#chat-log .msg.note").last).to_have_attribute(
            "data-state", "sent", timeout=TIMEOUT_MS
        )
        agent_send(console, "Anything else?")
        expect(widget.locator("#lc-log")).to_contain_text("Anything else?", timeout=TIMEOUT_MS)
        assert "VIP" not in widget.locator("body").inner_text()

        console.goto(server.base_url + "/console#/history")
        console.fill("#history-q", "zebra")
        console.click("#history-form button[type=submit]")
        hit = console.locator("#history-results li button").first
        expect(hit).to_contain_text("zebra", timeout=TIMEOUT_MS)
        hit.click()
        expect(console.locator("#history-transcript")).to_contain_text(
            "internal: visitor seems to be a VIP", timeout=TIMEOUT_MS
        )
        visitor_ctx.close()


def test_agent_starts_a_chat_from_the_live_visitor_list(server: Server, browser: Any) -> None:
    agent = make_agent(server, name="Proactive Agent")
    with agent_console(browser, server, agent) as console:
        visitor_ctx = browser.new_context()
        visitor = visitor_ctx.new_page()
        visitor.goto(server.base_url + "/demo/pricing?campaign=proactive")
        frame = visitor.frame_locator(WIDGET_FRAME)
        expect(frame.locator("html[data-ready='1']")).to_have_count(1, timeout=TIMEOUT_MS)
        console.goto(server.base_url + "/console#/visitors")
        row = console.locator(
            "#visitors-body tr", has=console.locator("a[href*='campaign=proactive']")
        )
        expect(row.first).to_be_visible(timeout=TIMEOUT_MS)
        row.first.get_by_role("button", name="Start chat").click()
        row.first.locator("input").fill("Hi! Questions about our plans?")
        row.first.get_by_role("button", name="Send").click()
        expect(console.locator("#chat-log")).to_contain_text(
            "Questions about our plans?", timeout=TIMEOUT_MS
        )
        # The widget opens on the invitation: who invites, and what they wrote (issue 16).
        invite = frame.locator("#lc-invite")
        expect(invite).to_be_visible(timeout=TIMEOUT_MS)
        expect(invite).to_contain_text("Proactive Agent invites you to chat")
        expect(invite).to_contain_text("Hi! Questions about our plans?")
        expect(frame.locator("#lc-log")).to_contain_text("Questions about our plans?")
        # Answering it makes it a chat like any other: the card goes.
        box = frame.locator("#lc-input")
        box.fill("Yes, about the team plan")
        box.press("Enter")
        expect(invite).to_be_hidden(timeout=TIMEOUT_MS)
        expect(console.locator("#chat-log")).to_contain_text(
            "about the team plan", timeout=TIMEOUT_MS
        )
        visitor_ctx.close()


def test_reports_and_audit_log_screens(server: Server, browser: Any, artifacts: Path) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    console_login(page, server, server.owner_username, server.owner_password)
    page.goto(server.base_url + "/console#/admin/reports")
    chart = page.locator(".chart svg").first
    expect(chart).to_be_visible(timeout=TIMEOUT_MS)
    assert page.locator(".chart svg rect").count() >= 1
    expect(page.locator(".stats")).to_contain_text("Chats")
    page.screenshot(path=str(artifacts / "console-reports.png"))
    page.goto(server.base_url + "/console#/admin/audit")
    expect(page.locator("#audit-table tbody tr").first).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.locator("#audit-table")).to_contain_text("login.success")
    for section in ("groups", "canned", "routing", "export"):
        page.goto(server.base_url + f"/console#/admin/{section}")
        expect(page.locator("#admin-body h1")).to_be_visible(timeout=TIMEOUT_MS)
        assert page.locator("#admin-body .error").count() == 0, section
    page.click("#logout-btn")
    expect(page.locator("#login-view")).to_be_visible(timeout=TIMEOUT_MS)
    context.close()
