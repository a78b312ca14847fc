"""Transfers move a chat between consoles live; supervisors whisper without the visitor seeing."""

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
)


def test_transfer_moves_chat_live_and_whisper_never_reaches_widget(
    server: Server, browser: Any, artifacts: Path
) -> None:
    first = make_agent(server, name="First Agent")
    second = make_agent(server, name="Second Agent")
    boss = make_agent(server, role="supervisor", name="Sue Supervisor")
    with agent_console(browser, server, first) as one:
        visitor_ctx = browser.new_context()
        visitor = visitor_ctx.new_page()
        widget = open_widget(visitor, server)
        visitor_send(widget, "Please transfer me to billing")
        expect(one.locator("#mine-list li")).to_have_count(1, timeout=TIMEOUT_MS)
        one.locator("#mine-list li button").first.click()
        conv_id = one.locator("#mine-list li button").first.get_attribute("data-conv")
        assert conv_id

        with agent_console(browser, server, second) as two:
            expect(two.locator("#mine-list li")).to_have_count(0)
            one.click("#act-transfer")
            one.select_option("#transfer-target", f"agent:{second['id']}")
            one.fill("#transfer-reason", "billing question")
            one.click("#panel-transfer button[type=submit]")
            # Live, no reload: it appears in the second console and leaves the first.
            expect(two.locator(f"#mine-list button[data-conv='{conv_id}']")).to_have_count(
                1, timeout=TIMEOUT_MS
            )
            expect(one.locator(f"#mine-list button[data-conv='{conv_id}']")).to_have_count(
                0, timeout=TIMEOUT_MS
            )
            two.locator(f"#mine-list button[data-conv='{conv_id}']").click()
            expect(two.locator("#chat-log")).to_contain_text("Please transfer me to billing")
            agent_send(two, "Billing here, how can I help?")
            expect(widget.locator("#lc-log")).to_contain_text("Billing here", timeout=TIMEOUT_MS)

            # A supervisor opens the chat, joins silently and whispers to the agent.
            with agent_console(browser, server, boss, accepting=False) as sup:
                sup.goto(server.base_url + f"/console#/chats/{conv_id}")
                expect(sup.locator("#chat-log")).to_contain_text(
                    "Please transfer me to billing", timeout=TIMEOUT_MS
                )
                # Whispering needs a participant: join silently, and wait until it took.
                join_silent = sup.locator("#act-join-silent")
                expect(join_silent).to_be_visible(timeout=TIMEOUT_MS)
                join_silent.click()
                expect(sup.locator("#toasts")).to_contain_text(
                    "Joined silently", timeout=TIMEOUT_MS
                )
                agent_send(sup, "Psst: offer the 10% coupon", mode="whisper")
                whisper = sup.locator("#chat-log .msg.whisper")
                expect(whisper.last).to_have_attribute("data-state", "sent", timeout=TIMEOUT_MS)
                expect(two.locator("#chat-log .msg.whisper")).to_contain_text(
                    "offer the 10% coupon", timeout=TIMEOUT_MS
                )
                sup.screenshot(path=str(artifacts / "console-supervisor.png"))
                # Something sent after the whisper reaches the visitor; the whisper never does.
                agent_send(two, "I can offer you a discount.")
                expect(widget.locator("#lc-log")).to_contain_text(
                    "offer you a discount", timeout=TIMEOUT_MS
                )
                assert "coupon" not in widget.locator("body").inner_text()
                assert "coupon" not in widget.locator("html").evaluate(
                    "el => el.ownerDocument.documentElement.outerHTML"
                )
        visitor_ctx.close()
