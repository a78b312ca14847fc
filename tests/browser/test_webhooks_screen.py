"""The console's webhook screen: add a subscription, see its deliveries, redeliver, disable."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from playwright.sync_api import expect

from tests.browser.conftest import Server, make_agent
from tests.browser.helpers import (
    TIMEOUT_MS,
    agent_console,
    console_login,
    open_widget,
    visitor_send,
    wait_until,
)
from tests.web.test_webhooks import documented_verifier


class _Receiver:
    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        self.url = ""

    def received(self, needle: bytes) -> list[tuple[dict[str, str], bytes]]:
        with self.lock:
            return [r for r in self.requests if needle in r[1]]


@contextmanager
def http_receiver() -> Iterator[_Receiver]:
    """A real HTTP receiver on 127.0.0.1 (a thread), answering 200 to every POST."""
    receiver = _Receiver()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            with receiver.lock:
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_admin_adds_a_webhook_sees_the_signed_delivery_redelivers_and_disables_it(
    server: Server, browser: Any, artifacts: Path
) -> None:
    verify = documented_verifier()
    with http_receiver() as receiver:
        context = browser.new_context(viewport={"width": 1400, "height": 950})
        page = context.new_page()
        page.on("dialog", lambda d: d.accept())
        console_login(page, server, server.owner_username, server.owner_password)
        page.goto(server.base_url + "/console#/admin/webhooks")
        page.fill("#webhook-url", receiver.url)
        page.fill("#webhook-description", "CRM sync")
        expect(page.locator("input[name=webhook-event][value='message.created']")).to_be_checked()
        page.click("#webhook-create button[type=submit]")
        secret_box = page.locator("#webhook-secret")
        expect(secret_box).to_contain_text("whsec_", timeout=TIMEOUT_MS)
        secret = secret_box.text_content() or ""
        row = page.locator("#webhooks-table tbody tr", has_text=receiver.url)
        expect(row).to_contain_text("enabled")
        expect(row).to_contain_text("message.created")

        # A visitor writes; a human is online so the widget offers the chat.
        agent = make_agent(server)
        with agent_console(browser, server, agent):
            visitor_ctx = browser.new_context()
            widget = open_widget(visitor_ctx.new_page(), server)
            visitor_send(widget, "Hello webhook screen")
            wait_until(
                page,
                lambda: bool(receiver.received(b"Hello webhook screen")),
                "the delivery at the receiver",
            )
            visitor_ctx.close()
        headers, body = receiver.received(b"Hello webhook screen")[0]
        assert verify([secret], headers["x-livechat-signature"], body)

        row.get_by_role("button", name="Deliveries").click()
        delivered = page.locator("#webhook-deliveries-table tbody tr[data-state='delivered']")

        def shows_delivered() -> bool:
            if delivered.count() == 0:
                page.click("#webhook-deliveries-refresh")
                return False
            return True

        wait_until(page, shows_delivered, "the delivery shown as delivered")
        delivered.first.get_by_role("button", name="Attempts").click()
        attempts = page.locator("#webhook-attempts-table tbody tr")
        expect(attempts).to_have_count(1)
        expect(attempts.first).to_contain_text("200")
        expect(page.locator("#webhook-attempts pre.payload")).to_contain_text(
            "Hello webhook screen"
        )
        page.screenshot(path=str(artifacts / "console-admin-webhooks.png"))

        delivered.first.get_by_role("button", name="Redeliver").click()
        expect(page.locator("#toasts")).to_contain_text("queued again", timeout=TIMEOUT_MS)
        wait_until(
            page,
            lambda: len(receiver.received(b"Hello webhook screen")) >= 2,
            "the redelivery at the receiver",
        )
        again_headers, again_body = receiver.received(b"Hello webhook screen")[1]
        assert again_headers["x-livechat-event-id"] == headers["x-livechat-event-id"]
        assert again_body == body

        row.get_by_role("button", name="Disable").click()
        row = page.locator("#webhooks-table tbody tr", has_text=receiver.url)
        expect(row).to_contain_text("disabled", timeout=TIMEOUT_MS)
        row.get_by_role("button", name="Delete").click()
        expect(page.locator("#webhooks-table tbody tr", has_text=receiver.url)).to_have_count(
            0, timeout=TIMEOUT_MS
        )
        context.close()
