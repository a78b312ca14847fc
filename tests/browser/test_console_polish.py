"""Console polish: the Visitors count is readable (WCAG AA contrast), and history search
highlights matches instead of showing the raw brackets."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import expect

from tests.browser.conftest import Server, make_agent
from tests.browser.helpers import TIMEOUT_MS, agent_console, open_widget, visitor_send

CONTRAST = """el => {
  const rgb = s => s.match(/[\\d.]+/g).slice(0, 3).map(Number);
  const lum = c => { const [r, g, b] = c.map(v => { v /= 255;
    return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const st = getComputedStyle(el);
  const a = lum(rgb(st.color)), b = lum(rgb(st.backgroundColor));
  return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
}"""


def test_visitor_count_is_readable_and_search_highlights_matches(
    server: Server, browser: Any
) -> None:
    agent = make_agent(server, name="Polish Agent")
    with agent_console(browser, server, agent) as page:
        visitor_ctx = browser.new_context()
        widget = open_widget(visitor_ctx.new_page(), server)
        visitor_send(widget, "my [order] zebracorn arrived broken")
        expect(widget.locator("#lc-log .lc-msg.mine").first).to_have_attribute(
            "data-state", "sent", timeout=TIMEOUT_MS
        )
        count = page.locator("#visitor-count")
        expect(count).not_to_be_empty(timeout=TIMEOUT_MS)
        ratio = count.evaluate(CONTRAST)
        assert ratio >= 4.5, ratio

        page.goto(server.base_url + "/console#/history")
        page.fill("#history-q", "zebracorn")
        page.click("#history-form button[type=submit]")
        mark = page.locator("#history-results mark").first
        expect(mark).to_have_text("zebracorn", timeout=TIMEOUT_MS)
        expect(page.locator("#history-results")).to_contain_text("my [order] zebracorn")
        visitor_ctx.close()
