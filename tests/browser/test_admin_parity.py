"""Admin parity in Chromium: every admin API change has a console screen (edit an agent,
group members, the tag catalogue, API tokens), and reports and the audit log read right."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from playwright.sync_api import expect

from tests.browser.conftest import Server, make_agent
from tests.browser.helpers import TIMEOUT_MS, console_login


def test_admin_edits_agent_groups_tags_and_tokens_in_the_console(
    server: Server, browser: Any, artifacts: Path
) -> None:
    api = server.api()
    agent = make_agent(server, name="Parity Agent")
    groups = {g["name"]: g["id"] for g in api.call("GET", "/groups")["groups"]}
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    console_login(page, server, server.owner_username, server.owner_password)

    # Edit an agent: name, email, chat limit, groups.
    page.goto(server.base_url + "/console#/admin/agents")
    row = page.locator(f"#agents-table tr[data-username='{agent['username']}']")
    row.get_by_role("button", name="Edit").click()
    form = page.locator(f"form.agent-edit[data-agent='{agent['username']}']")
    form.get_by_label("Display name").fill("Renamed Agent")
    form.get_by_label("Email").fill("renamed@example.com")
    form.get_by_label("Max concurrent chats").fill("3")
    form.get_by_label("Member of Sales").check()
    form.get_by_role("button", name="Save agent").click()
    expect(page.locator("#agents-table")).to_contain_text("Renamed Agent", timeout=TIMEOUT_MS)
    saved = api.call("GET", f"/agents/{agent['id']}")
    assert saved["display_name"] == "Renamed Agent"
    assert saved["email"] == "renamed@example.com"
    assert saved["max_chats"] == 3
    assert saved["group_ids"] == [groups["Sales"]]
    page.screenshot(path=str(artifacts / "console-agent-edit.png"))

    # Group members: the agent shows under Sales; add them to Support, remove from Sales.
    page.goto(server.base_url + "/console#/admin/groups")
    sales = page.get_by_role("list", name="Members of Sales")
    expect(sales).to_contain_text("Renamed Agent", timeout=TIMEOUT_MS)
    support = page.locator("#group-members .group-block[data-group='Support']")
    support.get_by_label("Add to Support").select_option(
        label=f"Renamed Agent ({agent['username']})"
    )
    expect(page.get_by_role("list", name="Members of Support")).to_contain_text(
        "Renamed Agent", timeout=TIMEOUT_MS
    )
    page.get_by_role("button", name="Remove Renamed Agent from Sales").click()
    expect(page.get_by_role("list", name="Members of Sales")).not_to_contain_text(
        "Renamed Agent", timeout=TIMEOUT_MS
    )
    assert api.call("GET", f"/agents/{agent['id']}")["group_ids"] == [groups["Support"]]

    # Canned responses: rename a shortcut; a duplicate (ignoring case) is refused with a toast.
    api.call("POST", "/canned-responses", {"shortcut": "parity1", "text": "Parity text"})
    page.goto(server.base_url + "/console#/admin/canned")
    shortcut = page.get_by_label("Shortcut of /parity1")
    shortcut.fill("parity2")
    page.locator("tr", has=shortcut).get_by_role("button", name="Save").click()
    expect(page.locator("#toasts")).to_contain_text("Saved", timeout=TIMEOUT_MS)
    shortcuts = {c["shortcut"] for c in api.call("GET", "/canned-responses")["canned_responses"]}
    assert "parity2" in shortcuts and "parity1" not in shortcuts
    shortcut.fill("HELLO")  # the demo has /hello
    page.locator("tr", has=shortcut).get_by_role("button", name="Save").click()
    expect(page.locator("#toasts")).to_contain_text("this shortcut exists", timeout=TIMEOUT_MS)

    # Tag catalogue: add and remove a tag.
    page.goto(server.base_url + "/console#/admin/tags")
    expect(page.locator("#tag-list")).to_contain_text("billing", timeout=TIMEOUT_MS)
    page.fill("#tag-new", "urgent")
    page.click("#tag-form button[type=submit]")
    expect(page.locator("#tag-list li[data-tag='urgent']")).to_be_visible(timeout=TIMEOUT_MS)
    assert "urgent" in api.call("GET", "/tags")["tags"]
    page.get_by_role("button", name="Remove tag urgent").click()
    expect(page.locator("#tag-list li[data-tag='urgent']")).to_have_count(0, timeout=TIMEOUT_MS)
    assert "urgent" not in api.call("GET", "/tags")["tags"]

    # API tokens: create (secret shown once), then revoke.
    page.goto(server.base_url + "/console#/admin/tokens")
    page.fill("#token-name", "ci-export")
    page.get_by_label("Scope admin").uncheck()
    page.get_by_label("Scope export").check()
    page.click("#token-form button[type=submit]")
    expect(page.locator("#token-secret code")).to_have_text(
        re.compile(r"\S{20,}"), timeout=TIMEOUT_MS
    )
    token = next(t for t in api.call("GET", "/tokens")["tokens"] if t["name"] == "ci-export")
    assert token["scopes"] == ["export"] and token["revoked_at"] is None
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Revoke ci-export").click()
    expect(page.locator("#tokens-table tr[data-token='ci-export']")).to_contain_text(
        "revoked", timeout=TIMEOUT_MS
    )
    token = next(t for t in api.call("GET", "/tokens")["tokens"] if t["name"] == "ci-export")
    assert token["revoked_at"] is not None
    page.screenshot(path=str(artifacts / "console-tokens.png"))

    # The audit log names people, not ids, and details are words, not JSON.
    page.goto(server.base_url + "/console#/admin/audit")
    first = page.locator("#audit-table tbody tr").first
    expect(first).to_be_visible(timeout=TIMEOUT_MS)
    table_text = page.locator("#audit-table tbody").inner_text()
    assert "agent:" not in table_text and "{" not in table_text
    assert "Renamed Agent" in table_text
    context.close()


def test_reports_show_csat_csv_whole_names_and_distinct_ticks(server: Server, browser: Any) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    console_login(page, server, server.owner_username, server.owner_password)
    page.goto(server.base_url + "/console#/admin/reports")
    expect(page.locator("#report-stats [data-stat='csat']")).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.locator("#report-stats [data-stat='duration']")).to_be_visible()
    ticks = page.locator(".chart svg text.tick").all_text_contents()
    assert ticks and len(ticks) == len(set(ticks)), ticks
    # The axis of small counts (where rounding used to repeat 0 0 1 1 2) and of large ones.
    axes = page.evaluate(
        "import('/console/reports.js').then(m => [1, 2, 3, 7, 13, 250].map(m.yTicks))"
    )
    for top, axis in zip([1, 2, 3, 7, 13, 250], axes, strict=True):
        assert len(axis) == len(set(axis)) and axis[0] == 0 and axis[-1] >= top, axis
    label = page.evaluate("import('/console/reports.js').then(m => m.shortLabel('Alexandra Q'))")
    assert label == "Alexandra Q"  # whole (it used to be cut to its last 5 characters)
    with page.expect_download(timeout=TIMEOUT_MS) as info:
        page.click("#report-csv")
    first_line = Path(info.value.path()).read_text().splitlines()[0]
    assert first_line.startswith("scope,id,name,chats,missed")
    context.close()
