"""The widget on a 390x844 phone: the open panel lies inside the viewport, on the demo pages
and on a host page wider than the screen (the layout viewport then grows past the visual one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.sync_api import expect

from tests.browser.conftest import Server
from tests.browser.helpers import TIMEOUT_MS, wait_until

PHONE = {"width": 390, "height": 844}


def _inside(box: dict[str, float] | None, view: dict[str, float]) -> bool:
    return (
        box is not None
        and box["x"] >= -0.5
        and box["y"] >= -0.5
        and box["x"] + box["width"] <= view["width"] + 0.5
        and box["y"] + box["height"] <= view["height"] + 0.5
        and box["width"] >= view["width"] - 1
    )


def test_open_panel_lies_inside_a_phone_viewport(
    server: Server, browser: Any, artifacts: Path
) -> None:
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    page = context.new_page()
    for path, widen in (("/demo", False), ("/demo/pricing", False), ("/demo/docs", True)):
        page.goto(server.base_url + path)
        if widen:  # a host page whose content is wider than the phone
            page.evaluate(
                "() => { const d = document.createElement('div');"
                " d.style.width = '620px'; d.style.height = '10px';"
                " document.body.appendChild(d); }"
            )
        # The demo site itself fits the phone: no sideways scrolling.
        if not widen:
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= PHONE["width"], (path, width)
        frame = page.frame_locator("#livechat-widget-frame")
        expect(frame.locator("html[data-ready='1']")).to_have_count(1, timeout=TIMEOUT_MS)
        panel = frame.locator("#lc-panel")
        if panel.is_hidden():
            frame.locator("#lc-launcher").click()
        expect(panel).to_be_visible(timeout=TIMEOUT_MS)
        # Bounding boxes are in the page's (visual viewport) coordinates.
        wait_until(
            page,
            lambda panel=panel: _inside(panel.bounding_box(), PHONE),
            f"the open panel on {path} to lie inside the 390x844 viewport",
        )
        # The header's right-hand button (the first thing cut off before) is on screen.
        assert _inside_x(frame.locator("#lc-min").bounding_box())
        shot = artifacts / f"widget-phone{path.replace('/', '-')}.png"
        page.screenshot(path=str(shot))
    context.close()


def _inside_x(box: dict[str, float] | None) -> bool:
    return box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
