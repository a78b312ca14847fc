"""The widget's own features: tabs sharing one chat, unread badge, rating, transcript, offline
form, sneak peek."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from playwright.sync_api import expect

from tests.browser.conftest import Server, make_agent
from tests.browser.helpers import (
    TIMEOUT_MS,
    SocketLog,
    agent_console,
    agent_send,
    open_widget,
    visitor_send,
    wait_until,
)

VISITOR_ZONE = "Pacific/Chatham"  # UTC+13:45 in (southern) summer, +12:45 in winter


def test_two_tabs_share_one_conversation(server: Server, browser: Any) -> None:
    agent = make_agent(server, name="Tab Agent")
    with agent_console(browser, server, agent) as console:
        visitor_ctx = browser.new_context()
        tab_a = open_widget(visitor_ctx.new_page(), server)
        tab_b_page = visitor_ctx.new_page()
        tab_b = open_widget(tab_b_page, server, "/demo/docs")
        visitor_send(tab_a, "sent from tab A")
        expect(tab_b.locator("#lc-log")).to_contain_text("sent from tab A", timeout=TIMEOUT_MS)
        visitor_send(tab_b, "sent from tab B")
        expect(tab_a.locator("#lc-log")).to_contain_text("sent from tab B", timeout=TIMEOUT_MS)
        expect(console.locator("#mine-list li")).to_have_count(1, timeout=TIMEOUT_MS)
        console.locator("#mine-list li button").first.click()
        expect(console.locator("#chat-log")).to_contain_text("sent from tab B", timeout=TIMEOUT_MS)
        agent_send(console, "both tabs see this")
        expect(tab_a.locator("#lc-log")).to_contain_text("both tabs see this", timeout=TIMEOUT_MS)
        expect(tab_b.locator("#lc-log")).to_contain_text("both tabs see this", timeout=TIMEOUT_MS)
        visitor_ctx.close()


def test_unread_badge_rating_and_transcript_after_agent_closes(
    server: Server, browser: Any, tmp_path: Path
) -> None:
    agent = make_agent(server, name="Closing Agent")
    with agent_console(browser, server, agent) as console:
        # A zone far from UTC (+13:45): the transcript must use it, as the widget does.
        visitor_ctx = browser.new_context(timezone_id=VISITOR_ZONE)
        page = visitor_ctx.new_page()
        widget = open_widget(page, server)
        visitor_send(widget, "Can you close this for me?")
        expect(console.locator("#mine-list li")).to_have_count(1, timeout=TIMEOUT_MS)
        console.locator("#mine-list li button").first.click()
        expect(console.locator("#chat-log")).to_contain_text(
            "Can you close this for me?", timeout=TIMEOUT_MS
        )
        expect(widget.locator("#lc-log .lc-msg.mine").first).to_have_attribute(
            "data-state", "sent", timeout=TIMEOUT_MS
        )

        # Minimised widget: an agent reply raises the unread badge (and the host page event).
        page.evaluate(
            "window.__unread = []; window.LiveChat.on('unread', n => window.__unread.push(n))"
        )
        widget.locator("#lc-min").click()
        expect(widget.locator("#lc-panel")).to_be_hidden()
        agent_send(console, "Sure, all done. Anything else?")
        badge = widget.locator("#lc-badge")
        expect(badge).to_have_text("1", timeout=TIMEOUT_MS)
        expect(widget.locator("#lc-launcher")).to_have_attribute(
            "aria-label", "Open chat (1 unread)"
        )
        wait_until(
            page, lambda: bool(page.evaluate("window.__unread.includes(1)")), "the unread event"
        )
        widget.locator("#lc-launcher").click()
        expect(badge).to_be_hidden()

        # The transcript downloads as text.
        with page.expect_download() as download_info:
            widget.locator("#lc-download").click()
        saved = tmp_path / "transcript.txt"
        download_info.value.save_as(saved)
        text = saved.read_text()
        assert "You: Can you close this for me?" in text
        assert re.search(r"\(UTC\+1[23]:45\)", text.splitlines()[0])
        stamp = re.search(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\] You:", text)
        assert stamp is not None
        written = datetime.datetime.fromisoformat(stamp.group(1))
        local_now = datetime.datetime.now(ZoneInfo(VISITOR_ZONE)).replace(tzinfo=None)
        assert abs((local_now - written).total_seconds()) < 600, (written, local_now)
        assert "Closing Agent: Sure, all done. Anything else?" in text

        # The agent closes with tags (from the demo's catalogue); the visitor rates.
        console.click("#act-close")
        console.fill("#close-tags", "billing, feedback")
        console.click("#panel-close button[type=submit]")
        rating = widget.locator("#lc-rating")
        expect(rating).to_be_visible(timeout=TIMEOUT_MS)
        expect(widget.locator("#lc-composer")).to_be_hidden()
        widget.locator(".lc-stars label").nth(3).click()
        widget.locator("#lc-rate-comment").fill("Quick and friendly")
        widget.locator("#lc-rating button[type=submit]").click()
        expect(widget.locator("#lc-rate-done")).to_be_visible(timeout=TIMEOUT_MS)
        conv_id = console.locator("#chat-pane").evaluate("() => location.hash.split('/').pop()")
        conv = server.api().call("GET", f"/conversations/{conv_id}")
        assert conv["rating"] == 4
        assert conv["rating_comment"] == "Quick and friendly"
        assert set(conv["tags"]) >= {"billing", "feedback"}
        visitor_ctx.close()


def test_offline_form_when_no_agent_is_available(server: Server, browser: Any) -> None:
    visitor_ctx = browser.new_context()
    page = visitor_ctx.new_page()
    widget = open_widget(page, server)
    form = widget.locator("#lc-offline")
    expect(form).to_be_visible(timeout=TIMEOUT_MS)
    expect(widget.locator("#lc-composer")).to_be_hidden()
    widget.locator("#lc-off-name").fill("Olga Offline")
    widget.locator("#lc-off-email").fill("olga@example.com")
    widget.locator("#lc-off-msg").fill("Please call me back tomorrow")
    form.locator("button[type=submit]").click()
    expect(widget.locator("#lc-off-done")).to_be_visible(timeout=TIMEOUT_MS)
    closed = server.api().call("GET", "/conversations?state=closed&limit=50")["conversations"]
    assert any(c["close_reason"] == "offline" for c in closed)
    visitor_ctx.close()


@contextmanager
def _sneak_peek_on(server: Server) -> Iterator[None]:
    api = server.api()
    before = api.call("GET", "/settings/widget")
    api.call("PUT", "/settings/widget", {**before, "sneak_peek": True})
    try:
        yield
    finally:
        api.call("PUT", "/settings/widget", before)


def test_sneak_peek_shows_notice_and_sends_drafts_only_when_enabled(
    server: Server, browser: Any
) -> None:
    agent = make_agent(server, name="Peeking Agent")
    sent: list[str] = []

    def record(ws: Any) -> None:
        ws.on("framesent", lambda payload: sent.append(str(payload)))

    with agent_console(browser, server, agent):
        # Off (the default): no notice, and typing frames carry no draft.
        visitor_ctx = browser.new_context()
        page = visitor_ctx.new_page()
        page.on("websocket", record)
        widget = open_widget(page, server)
        visitor_send(widget, "hello without sneak peek")
        expect(widget.locator("#lc-log .lc-msg.mine").first).to_have_attribute(
            "data-state", "sent", timeout=TIMEOUT_MS
        )
        widget.locator("#lc-input").press_sequentially("secret draft", delay=30)
        wait_until(page, lambda: any('"typing"' in f for f in sent), "a typing frame")
        expect(widget.locator("#lc-peek")).to_be_hidden()
        typing = [json.loads(f) for f in sent if '"typing"' in f]
        assert all(not t.get("draft") for t in typing), typing
        visitor_ctx.close()

    with _sneak_peek_on(server), agent_console(browser, server, agent):
        sent.clear()
        visitor_ctx = browser.new_context()
        page = visitor_ctx.new_page()
        page.on("websocket", record)
        widget = open_widget(page, server)
        visitor_send(widget, "hello with sneak peek")
        expect(widget.locator("#lc-peek")).to_be_visible(timeout=TIMEOUT_MS)
        expect(widget.locator("#lc-log .lc-msg.mine").first).to_have_attribute(
            "data-state", "sent", timeout=TIMEOUT_MS
        )
        widget.locator("#lc-input").press_sequentially("my order number is 12", delay=30)

        def drafts() -> list[str | None]:
            return [json.loads(f).get("draft") for f in sent if '"typing"' in f]

        wait_until(
            page,
            lambda: any(d and d.startswith("my order number") for d in drafts()),
            "a typing frame carrying the draft",
        )
        visitor_ctx.close()


def test_sneak_peek_draft_reaches_the_console(server: Server, browser: Any) -> None:
    agent = make_agent(server, name="Peeking Agent 2")
    with _sneak_peek_on(server), agent_console(browser, server, agent) as console:
        visitor_ctx = browser.new_context()
        widget = open_widget(visitor_ctx.new_page(), server)
        visitor_send(widget, "peek at this")
        expect(console.locator("#mine-list li")).to_have_count(1, timeout=TIMEOUT_MS)
        console.locator("#mine-list li button").first.click()
        expect(console.locator("#chat-log")).to_contain_text("peek at this", timeout=TIMEOUT_MS)
        widget.locator("#lc-input").press_sequentially("my order number is 12", delay=30)
        expect(console.locator("#chat-typing")).to_contain_text(
            "my order number is 12", timeout=TIMEOUT_MS
        )
        visitor_ctx.close()


def test_signed_identity_links_the_visitor_and_a_bad_signature_is_ignored(
    server: Server, browser: Any
) -> None:
    api = server.api()
    secret = api.call("GET", "/settings/identity-secret")["identity_secret"]
    good = hmac.new(secret.encode(), b"customer-42", hashlib.sha256).hexdigest()
    agent = make_agent(server, name="Identity Agent")
    with agent_console(browser, server, agent) as console:
        # A forged signature: the widget drops it and chats anonymously.
        forged_ctx = browser.new_context()
        forged = forged_ctx.new_page()
        forged_log = SocketLog(forged)
        widget = open_widget(forged, server)
        forged.evaluate("window.LiveChat.identify('customer-99', 'deadbeef')")
        wait_until(
            forged,
            lambda: forged_log.welcomed_after(lambda f: _hello_as(f, "customer-99")),
            "a hello accepted after the forged identity was refused",
        )
        expect(widget.locator("#lc-conn")).to_be_hidden(timeout=TIMEOUT_MS)
        forged_ctx.close()

        visitor_ctx = browser.new_context()
        page = visitor_ctx.new_page()
        log = SocketLog(page)
        widget = open_widget(page, server)
        page.evaluate("s => window.LiveChat.identify('customer-42', s)", good)
        wait_until(
            page,
            lambda: log.welcomed_after(lambda f: _hello_as(f, "customer-42")),
            "the hello with the signed identity to be accepted",
        )
        visitor_send(widget, "I am customer 42")
        expect(console.locator("#mine-list li")).to_have_count(1, timeout=TIMEOUT_MS)
        console.locator("#mine-list li button").first.click()
        expect(console.locator("#sidebar")).to_contain_text(
            "customer-42 (verified)", timeout=TIMEOUT_MS
        )
        visitor_ctx.close()


def _hello_as(frame: dict[str, Any], user_id: str) -> bool:
    identity = frame.get("identity") or {}
    return frame.get("type") == "hello" and identity.get("user_id") == user_id
