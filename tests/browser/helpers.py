"""Page helpers shared by the browser tests: log in to the console, drive the widget."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from playwright.sync_api import FrameLocator, Page, expect

from tests.browser.conftest import Server

WIDGET_FRAME = "#livechat-widget-frame"
TIMEOUT_MS = 15_000  # also the default of every ``expect`` (set in conftest's browser fixture)
POLL_MS = 50


def wait_until(
    page: Page, check: Callable[[], bool], what: str, timeout_ms: int = TIMEOUT_MS
) -> None:
    """Poll ``check`` until it holds, letting Playwright deliver events in between; fail with
    ``what`` after ``timeout_ms``. For conditions ``expect`` cannot see (frames, host events)."""
    deadline = time.monotonic() + timeout_ms / 1000
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_ms} ms waiting for {what}")
        page.wait_for_timeout(POLL_MS)


class SocketLog:
    """Every WebSocket frame a page sends and receives, decoded, in order (all sockets)."""

    def __init__(self, page: Page) -> None:
        self.frames: list[tuple[str, dict[str, Any]]] = []  # ("sent" | "received", frame)
        page.on("websocket", self._attach)

    def _attach(self, ws: Any) -> None:
        ws.on("framesent", lambda payload: self._record("sent", payload))
        ws.on("framereceived", lambda payload: self._record("received", payload))

    def _record(self, direction: str, payload: str | bytes) -> None:
        with contextlib.suppress(ValueError):
            frame = json.loads(payload)
            if isinstance(frame, dict):
                self.frames.append((direction, frame))

    def welcomed_after(self, sent: Callable[[dict[str, Any]], bool]) -> bool:
        """The server accepted a hello sent at or after the first frame matching ``sent``."""
        for i, (direction, frame) in enumerate(self.frames):
            if direction == "sent" and sent(frame):
                later = self.frames[i:]
                hellos = {f.get("id") for d, f in later if d == "sent" and f.get("type") == "hello"}
                return any(
                    d == "received" and f.get("type") == "result" and f.get("id") in hellos
                    for d, f in later
                )
        return False


class SocketCutter:
    """Relays a page's sockets to the server; can swallow the server's frames, then cut."""

    def __init__(self) -> None:
        self.routes: list[tuple[Any, Any]] = []
        self.swallow = False
        self.sent: list[dict[str, Any]] = []  # frames the page sent, in order
        self.swallowed: list[dict[str, Any]] = []

    def handle(self, ws: Any) -> None:
        server = ws.connect_to_server()
        self.routes.append((ws, server))

        def up(message: str | bytes) -> None:
            if isinstance(message, str):
                self.sent.append(json.loads(message))
            server.send(message)

        def down(message: str | bytes) -> None:
            if self.swallow:
                if isinstance(message, str):
                    self.swallowed.append(json.loads(message))
                return
            ws.send(message)

        ws.on_message(up)
        server.on_message(down)

    def cut(self) -> None:
        """Close the live socket both ways: the page sees 1013, as from a slow-consumer cut."""
        ws, server = self.routes[-1]
        ws.close(code=1013, reason="slow consumer, resume")
        server.close(code=1000)
        self.swallow = False

    def sends_of(self, text: str) -> list[str]:
        """The client_msg_id of every send of ``text`` (resends carry the same one)."""
        return [
            str(f.get("client_msg_id"))
            for f in self.sent
            if f.get("type") in ("send_message", "add_note") and f.get("text") == text
        ]

    def acked(self, text: str) -> bool:
        """The server acknowledged a send of ``text`` (the ack may have been swallowed)."""
        ids = {f.get("id") for f in self.sent if f.get("text") == text}
        return any(f.get("type") == "result" and f.get("id") in ids for f in self.swallowed)


def watch_dialogs(page: Page, seen: list[str]) -> None:
    """Any alert/confirm/prompt means script ran where it must not: record and dismiss it."""
    page.on("dialog", lambda d: (seen.append(f"{d.type}: {d.message}"), d.dismiss()))


def console_login(page: Page, server: Server, username: str, password: str) -> None:
    page.goto(server.base_url + "/console")
    page.fill("#login-username", username)
    page.fill("#login-password", password)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#app-view")).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.locator("body")).to_have_attribute("data-conn", "online", timeout=TIMEOUT_MS)


def set_accepting(page: Page, accepting: bool = True) -> None:
    toggle = page.locator("#status-toggle")
    want = "true" if accepting else "false"
    if toggle.get_attribute("aria-pressed") != want:
        toggle.click()
    expect(toggle).to_have_attribute("aria-pressed", want, timeout=TIMEOUT_MS)


@contextmanager
def agent_console(
    browser: Any,
    server: Server,
    agent: dict[str, str],
    *,
    accepting: bool = True,
    dialogs: list[str] | None = None,
) -> Iterator[Page]:
    """A logged-in console in its own browser context; stops accepting chats on exit, so a
    closed console never keeps receiving chats routed to it during later tests."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    if dialogs is not None:
        watch_dialogs(page, dialogs)
    try:
        console_login(page, server, agent["username"], agent["password"])
        if accepting:
            set_accepting(page, True)
        yield page
    finally:
        # Best effort: the context closes anyway.
        with contextlib.suppress(Exception):
            set_accepting(page, False)
        context.close()


def open_widget(page: Page, server: Server, path: str = "/demo") -> FrameLocator:
    page.goto(server.base_url + path)
    frame = page.frame_locator(WIDGET_FRAME)
    expect(frame.locator("html[data-ready='1']")).to_have_count(1, timeout=TIMEOUT_MS)
    if frame.locator("#lc-panel").is_hidden():
        frame.locator("#lc-launcher").click()
    expect(frame.locator("#lc-panel")).to_be_visible(timeout=TIMEOUT_MS)
    return frame


def visitor_send(frame: FrameLocator, text: str) -> None:
    box = frame.locator("#lc-input")
    box.fill(text)
    box.press("Enter")


def agent_send(page: Page, text: str, mode: str = "reply") -> None:
    page.check(f"input[name=mode][value={mode}]")
    box = page.locator("#composer-input")
    box.fill(text)
    box.press("Enter")
