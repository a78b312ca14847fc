"""Support-team workflow in the widget (issue 16): a visitor picks a department in the
pre-chat form and their chat goes to that group; business hours; queued-chat triggers; a
page-view greeting and a page-view invitation that the visitor answers into a chat the agent
sees with the trigger's firing."""

from __future__ import annotations

import time
from typing import Any

from playwright.sync_api import expect

from tests.browser.conftest import Server, make_agent
from tests.browser.helpers import TIMEOUT_MS, agent_console, console_login, open_widget


def test_visitor_picks_a_department_and_the_chat_goes_to_that_group(
    server: Server, browser: Any
) -> None:
    api = server.api()
    sales = api.call("POST", "/groups", {"name": "Sales", "public": True})
    internal = api.call("POST", "/groups", {"name": "Back office"})
    agent = make_agent(server, name="Sales Agent")
    api.call("PATCH", f"/agents/{agent['id']}", {"group_ids": [sales["id"]]})
    try:
        with agent_console(browser, server, agent):
            visitor_ctx = browser.new_context()
            visitor_page = visitor_ctx.new_page()
            widget = open_widget(visitor_page, server)
            form = widget.locator("#lc-prechat")
            expect(form).to_be_visible(timeout=TIMEOUT_MS)
            select = widget.locator("#lc-dept")
            # Only public groups are offered.
            expect(select.locator("option")).to_have_text(["Choose…", "Sales"])
            select.select_option(label="Sales")
            widget.locator("#lc-prechat-msg").fill("A quote for 40 seats, please")
            form.locator("button[type=submit]").click()
            expect(widget.locator("#lc-log .lc-msg.mine").first).to_have_attribute(
                "data-state", "sent", timeout=TIMEOUT_MS
            )
            deadline = time.monotonic() + TIMEOUT_MS / 1000
            found: list[Any] = []
            while not found and time.monotonic() < deadline:
                page = api.call("GET", f"/conversations?group_id={sales['id']}")
                found = [
                    c
                    for c in page["conversations"]
                    if c["state"] != "closed" and c["group_id"] == sales["id"]
                ]
                if not found:
                    visitor_page.wait_for_timeout(100)  # poll interval; bounded by deadline
            assert found, "no open chat in the Sales group"
            visitor_ctx.close()
    finally:
        api.call("DELETE", f"/groups/{sales['id']}")
        api.call("DELETE", f"/groups/{internal['id']}")


def test_admin_closes_the_hours_and_the_widget_offers_the_offline_form(
    server: Server, browser: Any
) -> None:
    api = server.api()
    agent = make_agent(server, name="Hours Agent")
    try:
        with agent_console(browser, server, agent):
            admin_ctx = browser.new_context(viewport={"width": 1400, "height": 950})
            page = admin_ctx.new_page()
            console_login(page, server, server.owner_username, server.owner_password)
            page.goto(server.base_url + "/console#/admin/hours")
            expect(page.locator("#hours-now")).to_have_text(
                "No business hours: always open.", timeout=TIMEOUT_MS
            )
            page.check("#hours-enabled")
            page.fill("#hours-tz", "Europe/Paris")  # every day left empty: closed
            page.click("#hours-form button[type=submit]")
            expect(page.locator("#hours-now")).to_have_text(
                "Closed now: visitors see the offline form.", timeout=TIMEOUT_MS
            )
            admin_ctx.close()
            visitor_ctx = browser.new_context()
            widget = open_widget(visitor_ctx.new_page(), server)
            # An agent is online and accepting, but the workspace is closed.
            expect(widget.locator("#lc-offline")).to_be_visible(timeout=TIMEOUT_MS)
            expect(widget.locator("#lc-composer")).to_be_hidden()
            visitor_ctx.close()
    finally:
        api.call("PUT", "/settings/hours", {"enabled": False})


def test_admin_adds_an_auto_reply_and_a_queued_visitor_sees_it(
    server: Server, browser: Any
) -> None:
    api = server.api()
    routing = api.call("GET", "/settings/routing")
    api.call("PUT", "/settings/routing", {**routing, "mode": "manual"})  # the chat stays queued
    agent = make_agent(server, name="Trigger Agent")
    try:
        with agent_console(browser, server, agent):
            admin_ctx = browser.new_context(viewport={"width": 1400, "height": 950})
            page = admin_ctx.new_page()
            console_login(page, server, server.owner_username, server.owner_password)
            page.goto(server.base_url + "/console#/admin/triggers")
            page.click("#triggers-add")
            card = page.locator("#triggers-list fieldset").last
            card.get_by_label("Trigger name").fill("Queued reply")
            card.get_by_label("Message text").fill("You are in the queue, hang on!")
            page.click("#triggers-form button[type=submit]")
            expect(page.locator("#triggers-list fieldset")).to_have_count(1, timeout=TIMEOUT_MS)
            expect(
                page.locator("#triggers-list fieldset").first.get_by_label("Trigger name")
            ).to_have_value("Queued reply")
            admin_ctx.close()
            visitor_ctx = browser.new_context()
            widget = open_widget(visitor_ctx.new_page(), server)
            box = widget.locator("#lc-input")
            box.fill("Is anyone there?")
            box.press("Enter")
            expect(widget.locator("#lc-log")).to_contain_text(
                "You are in the queue, hang on!", timeout=TIMEOUT_MS
            )
            visitor_ctx.close()
    finally:
        api.call("PUT", "/triggers", {"triggers": []})
        api.call("PUT", "/settings/routing", routing)


def test_a_greeting_after_time_on_the_page_becomes_the_chat_the_agent_sees(
    server: Server, browser: Any
) -> None:
    api = server.api()
    agent = make_agent(server, name="Greeted Agent")
    try:
        with agent_console(browser, server, agent) as console:
            # The admin adds the greeting on the triggers screen.
            admin_ctx = browser.new_context(viewport={"width": 1400, "height": 950})
            page = admin_ctx.new_page()
            console_login(page, server, server.owner_username, server.owner_password)
            page.goto(server.base_url + "/console#/admin/triggers")
            page.click("#triggers-add-greeting")
            card = page.locator("#triggers-list fieldset").last
            card.get_by_label("Trigger name").fill("Demo greeting")
            expect(card.get_by_label("After waiting (s)")).to_be_hidden()
            card.get_by_label("Time on page (s)").fill("2")
            card.get_by_label("Page URL contains").fill("/demo")
            card.get_by_label("Greeting from").fill("Acme Bot")
            expect(card.get_by_label("Only when an agent is available")).to_be_checked()
            card.get_by_label("Message text").fill("Hi! Anything we can help with?")
            page.click("#triggers-form button[type=submit]")
            expect(
                page.locator("#triggers-list fieldset").first.get_by_label("Time on page (s)")
            ).to_have_value("2", timeout=TIMEOUT_MS)
            admin_ctx.close()
            [stored] = api.call("GET", "/triggers")["triggers"]
            assert (stored["event"], stored["action"], stored["time_on_page_s"]) == (
                "page_view",
                "greeting",
                2,
            )
            assert stored["only_when_available"] is True

            # The visitor stays on the page past 2 s: the greeting card, from the bot's name.
            visitor_ctx = browser.new_context()
            widget = open_widget(visitor_ctx.new_page(), server)
            greeting = widget.locator("#lc-trigger-greeting")
            expect(greeting).to_be_visible(timeout=TIMEOUT_MS)
            expect(greeting).to_contain_text("Acme Bot")
            expect(greeting).to_contain_text("Hi! Anything we can help with?")
            expect(widget.locator("#lc-log .lc-msg")).to_have_count(0)  # not a chat yet

            # Agents see the firing on the live visitor list before any chat exists.
            console.goto(server.base_url + "/console#/visitors")
            expect(console.locator("#visitors-body")).to_contain_text(
                "Trigger \u201cDemo greeting\u201d fired: greeting", timeout=TIMEOUT_MS
            )

            # The visitor answers: the chat opens with the greeting, then their message.
            box = widget.locator("#lc-input")
            box.fill("Yes, do you ship abroad?")
            box.press("Enter")
            expect(greeting).to_be_hidden(timeout=TIMEOUT_MS)
            messages = widget.locator("#lc-log .lc-msg")
            expect(messages).to_have_count(2, timeout=TIMEOUT_MS)
            expect(messages.first).to_contain_text("Hi! Anything we can help with?")
            expect(messages.first).to_contain_text("Acme Bot")
            expect(messages.last).to_contain_text("Yes, do you ship abroad?")

            # The agent's console shows the chat with the greeting and the firing.
            console.goto(server.base_url + "/console#/")
            expect(console.locator("#mine-list li")).to_have_count(1, timeout=TIMEOUT_MS)
            console.locator("#mine-list li button").first.click()
            log = console.locator("#chat-log")
            expect(log.locator(".msg[data-author=system]").first).to_contain_text(
                "Hi! Anything we can help with?", timeout=TIMEOUT_MS
            )
            expect(log).to_contain_text("Trigger \u201cDemo greeting\u201d fired: greeting")
            expect(log.locator(".msg[data-author=visitor]")).to_contain_text(
                "Yes, do you ship abroad?"
            )
            visitor_ctx.close()
    finally:
        api.call("PUT", "/triggers", {"triggers": []})


def test_a_page_view_invitation_shows_the_invitation_card_and_answering_starts_the_chat(
    server: Server, browser: Any
) -> None:
    api = server.api()
    agent = make_agent(server, name="Invited Agent")
    invitation = {
        "name": "Demo invitation",
        "event": "page_view",
        "action": "invitation",
        "text": "Looking around? We are happy to help.",
        "sender_name": "Acme Bot",
        "url_contains": "/demo",
        "time_on_page_s": 1,
    }
    api.call("PUT", "/triggers", {"triggers": [invitation]})
    try:
        with agent_console(browser, server, agent) as console:
            # A second on the page: the widget's invitation card, not the greeting card.
            visitor_ctx = browser.new_context()
            widget = open_widget(visitor_ctx.new_page(), server)
            card = widget.locator("#lc-invite")
            expect(card).to_be_visible(timeout=TIMEOUT_MS)
            expect(card).to_contain_text("Acme Bot invites you to chat")
            expect(card).to_contain_text("Looking around? We are happy to help.")
            expect(widget.locator("#lc-trigger-greeting")).to_have_count(0)
            expect(widget.locator("#lc-log .lc-msg")).to_have_count(0)  # not a chat yet

            # The visitor accepts by answering: the chat opens with the invitation's text.
            box = widget.locator("#lc-input")
            box.fill("Yes please, which plan fits a team of five?")
            box.press("Enter")
            expect(card).to_be_hidden(timeout=TIMEOUT_MS)
            messages = widget.locator("#lc-log .lc-msg")
            expect(messages).to_have_count(2, timeout=TIMEOUT_MS)
            expect(messages.first).to_contain_text("Looking around? We are happy to help.")
            expect(messages.first).to_contain_text("Acme Bot")
            expect(messages.last).to_contain_text("which plan fits a team of five?")

            # The agent gets the chat, with the invitation and a note naming the trigger.
            expect(console.locator("#mine-list li")).to_have_count(1, timeout=TIMEOUT_MS)
            console.locator("#mine-list li button").first.click()
            log = console.locator("#chat-log")
            expect(log.locator(".msg[data-author=system]").first).to_contain_text(
                "Looking around? We are happy to help.", timeout=TIMEOUT_MS
            )
            expect(log).to_contain_text("Trigger \u201cDemo invitation\u201d fired: invitation")
            expect(log.locator(".msg[data-author=visitor]")).to_contain_text(
                "which plan fits a team of five?"
            )
            visitor_ctx.close()
    finally:
        api.call("PUT", "/triggers", {"triggers": []})


def test_with_no_agent_available_only_a_greeting_meant_for_that_shows_above_the_offline_form(
    server: Server, browser: Any
) -> None:
    api = server.api()
    page_view = {"event": "page_view", "action": "greeting", "url_contains": "/demo"}
    chat_now = {
        **page_view,
        "name": "Chat now",
        "text": "An agent is here for you.",
        "time_on_page_s": 1,
    }
    away = {
        **page_view,
        "name": "Leave a message",
        "text": "We are all busy: leave us a message below.",
        "time_on_page_s": 2,
        "only_when_available": False,
    }
    api.call("PUT", "/triggers", {"triggers": [chat_now, away]})
    visitor_ctx = browser.new_context()
    try:
        # Nobody accepts chats: the first greeting (due first) waits, the second shows.
        widget = open_widget(visitor_ctx.new_page(), server)
        greeting = widget.locator("#lc-trigger-greeting")
        expect(greeting).to_contain_text("leave us a message below", timeout=TIMEOUT_MS)
        expect(greeting).not_to_contain_text("An agent is here for you.")
        expect(widget.locator("#lc-offline")).to_be_visible()
    finally:
        visitor_ctx.close()
        api.call("PUT", "/triggers", {"triggers": []})
