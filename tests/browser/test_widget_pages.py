"""The widget's weight, the pages' security headers, and a phone-sized widget."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Server, gzipped_widget_size, record_summary
from tests.browser.helpers import TIMEOUT_MS, open_widget, wait_until

WIDGET_BUDGET_GZ_BYTES = 30 * 1024


def test_widget_gzipped_size_is_within_budget(
    server: Server, record_property: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    raw, gz = gzipped_widget_size(server)
    record_property("widget_bytes", raw)
    record_property("widget_gzip_bytes", gz)
    line = f"widget size: {raw} bytes raw, {gz} bytes gzipped ({gz / 1024:.1f} KiB; budget 30 KiB)"
    record_summary("widget", line)
    with capsys.disabled():
        print("\n" + line)
    assert gz <= WIDGET_BUDGET_GZ_BYTES


def _headers(server: Server, path: str) -> Any:
    with urllib.request.urlopen(server.base_url + path, timeout=10) as resp:
        return resp.headers


def test_pages_send_strict_security_headers(server: Server) -> None:
    console = _headers(server, "/console")
    csp = console["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert console["X-Content-Type-Options"] == "nosniff"
    frame = _headers(server, f"/widget/frame.html?key={server.widget_key}")
    assert "frame-ancestors" in frame["Content-Security-Policy"]
    assert "unsafe-inline" not in frame["Content-Security-Policy"]
    loader = _headers(server, "/widget.js")
    assert loader["Content-Type"].startswith("text/javascript")
    demo = _headers(server, "/demo")
    assert "script-src 'self'" in demo["Content-Security-Policy"]


def test_widget_on_a_phone_fills_the_screen_and_works_by_keyboard(
    server: Server, browser: Any, artifacts: Path
) -> None:
    context = browser.new_context(
        viewport={"width": 390, "height": 800}, is_mobile=True, has_touch=True
    )
    page = context.new_page()
    page.goto(server.base_url + "/demo/docs")
    frame = page.frame_locator("#livechat-widget-frame")
    expect(frame.locator("html[data-ready='1']")).to_have_count(1, timeout=TIMEOUT_MS)
    launcher = frame.locator("#lc-launcher")
    expect(launcher).to_have_attribute("aria-label", "Open chat")
    launcher.focus()
    page.keyboard.press("Enter")
    expect(frame.locator("#lc-panel")).to_be_visible(timeout=TIMEOUT_MS)
    # The host page resizes the iframe when the frame tells it (postMessage): wait for that.
    iframe = page.locator("#livechat-widget-frame")

    def fills_the_width() -> bool:
        box = iframe.bounding_box()
        return box is not None and box["width"] >= 380

    wait_until(page, fills_the_width, "the widget's iframe to fill the phone's width")
    page.screenshot(path=str(artifacts / "widget-mobile.png"))
    page.keyboard.press("Escape")
    expect(frame.locator("#lc-panel")).to_be_hidden()
    context.close()


def test_host_page_api_opens_widget_and_reports_events(server: Server, browser: Any) -> None:
    context = browser.new_context()
    page = context.new_page()
    open_widget(page, server)
    page.evaluate("window.LiveChat.close()")
    expect(page.frame_locator("#livechat-widget-frame").locator("#lc-panel")).to_be_hidden()
    page.evaluate(
        "window.__events = []; window.LiveChat.on('open', () => window.__events.push('open'))"
    )
    page.evaluate("window.LiveChat.open()")
    # Polled from Python: wait_for_function evaluates its predicate with eval, which the demo
    # page's CSP (no 'unsafe-eval') refuses once polling starts.
    wait_until(
        page, lambda: bool(page.evaluate("window.__events.includes('open')")), "the open event"
    )
    context.close()
