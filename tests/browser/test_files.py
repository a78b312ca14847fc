"""A visitor attaches a screenshot in the widget; the agent sees it inline in the console and
opens it; a stranger (another visitor, no credential) gets 404."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

from playwright.sync_api import expect

from tests.browser.conftest import Server, make_agent
from tests.browser.helpers import TIMEOUT_MS, WIDGET_FRAME, agent_console, open_widget


def _png(width: int, height: int) -> bytes:
    """A real PNG (a colour gradient), small enough to build here."""
    rows = b"".join(
        b"\x00" + b"".join(bytes((x * 255 // width, y * 255 // height, 160)) for x in range(width))
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


PNG = _png(160, 100)

_FETCH = """async ([url, token]) => {
  const headers = token ? {Authorization: "Bearer " + token} : {};
  const res = await fetch(url, {headers, credentials: token === null ? "omit" : "same-origin"});
  return [res.status, res.headers.get("content-disposition"), res.headers.get("content-type")];
}"""


def _widget_token(page: Any, server: Server) -> str:
    frame = page.frame_locator(WIDGET_FRAME)
    expect(frame.locator("html[data-ready='1']")).to_have_count(1, timeout=TIMEOUT_MS)
    for f in page.frames:
        if "/widget/frame.html" in f.url:
            token = f.evaluate(
                "(ns) => JSON.parse(localStorage.getItem(ns + 'token') || 'null')",
                f"lc:{server.widget_key}:",
            )
            if token:
                return str(token)
    raise AssertionError("no visitor token in the widget's storage")


def test_file_sent_in_widget_opens_in_console_and_strangers_get_404(
    server: Server, browser: Any, artifacts: Path
) -> None:
    agent = make_agent(server, name="Fay Files")
    with agent_console(browser, server, agent) as console:
        visitor_ctx = browser.new_context(viewport={"width": 1200, "height": 850})
        stranger_ctx = browser.new_context(viewport={"width": 1200, "height": 850})
        try:
            visitor = visitor_ctx.new_page()
            widget = open_widget(visitor, server)
            widget.locator("#lc-input").fill("Here is a screenshot")
            widget.locator("#lc-input").press("Enter")
            expect(widget.locator("#lc-log .lc-msg.mine").first).to_have_attribute(
                "data-state", "sent", timeout=TIMEOUT_MS
            )
            # Attach with the button's file input (what a click on "Attach" opens).
            widget.locator("#lc-file").set_input_files(
                {"name": "screenshot.png", "mimeType": "image/png", "buffer": PNG}
            )
            thumb = widget.locator("#lc-log .lc-msg.mine img.lc-thumb")
            expect(thumb).to_have_count(1, timeout=TIMEOUT_MS)
            expect(widget.locator("#lc-log .lc-msg.mine").last).to_have_attribute(
                "data-state", "sent", timeout=TIMEOUT_MS
            )

            # The agent sees it inline, loaded (not a broken image), and can open it.
            expect(console.locator("#mine-list li")).to_have_count(1, timeout=TIMEOUT_MS)
            console.locator("#mine-list li button").first.click()
            img = console.locator("#chat-log .msg[data-author=visitor] img.thumb")
            expect(img).to_have_count(1, timeout=TIMEOUT_MS)
            expect(img).to_have_js_property("complete", True, timeout=TIMEOUT_MS)
            assert img.evaluate("(el) => el.naturalWidth") == 160
            href = console.locator("#chat-log .msg[data-author=visitor] a.file").get_attribute(
                "href"
            )
            assert href and href.startswith("/api/v1/files/")
            status, disposition, ctype = console.evaluate(_FETCH, [href, ""])
            assert status == 200 and ctype == "image/png"
            assert disposition.startswith("attachment;") and "screenshot.png" in disposition
            visitor.screenshot(path=str(artifacts / "widget-file.png"))
            console.screenshot(path=str(artifacts / "console-file.png"))

            # Strangers: another visitor of the same site, and nobody at all, get 404.
            file_id = href.rsplit("/", 1)[1]
            widget_url = f"/api/v1/widget/files/{file_id}?key={server.widget_key}"
            stranger = stranger_ctx.new_page()
            open_widget(stranger, server)
            other_token = _widget_token(stranger, server)
            assert other_token != _widget_token(visitor, server)
            assert stranger.evaluate(_FETCH, [widget_url, other_token])[0] == 404
            assert stranger.evaluate(_FETCH, [widget_url, None])[0] == 404
            # ...while the sender reads it back with its own token.
            mine = visitor.evaluate(_FETCH, [widget_url, _widget_token(visitor, server)])
            assert mine[0] == 200
        finally:
            stranger_ctx.close()
            visitor_ctx.close()
