"""Two-factor and single sign-on logins in the console, in Chromium.

The tests read the TOTP key from the page and compute codes with pyotp, as an authenticator app
would. A code is never accepted twice: enrollment is confirmed with the current step's code and
the next login uses the next step's (the server accepts one step either side).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pyotp
import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Api, Server, make_agent
from tests.browser.helpers import TIMEOUT_MS, console_login
from tests.oidc_provider import CLIENT_ID, CLIENT_SECRET, TestProvider, running_provider


def code_at(secret: str, steps_ahead: int = 0) -> str:
    return str(pyotp.TOTP(secret).at(time.time() + 30 * steps_ahead))


def password_step(page: Page, server: Server, username: str, password: str) -> None:
    if not page.url.startswith(server.base_url + "/console"):
        page.goto(server.base_url + "/console")
    expect(page.locator("#login-view")).to_be_visible(timeout=TIMEOUT_MS)
    page.fill("#login-username", username)
    page.fill("#login-password", password)
    page.click("#login-form button[type=submit]")


def expect_logged_in(page: Page, text: str) -> None:
    expect(page.locator("#app-view")).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.locator("#me-name")).to_contain_text(text)


def test_agent_enrolls_two_factor_in_the_console_then_logs_in_with_a_code(
    server: Server, browser: Any
) -> None:
    agent = make_agent(server, name="Tess Totp")
    context = browser.new_context()
    page = context.new_page()
    console_login(page, server, agent["username"], agent["password"])
    page.click("#nav-security")
    page.click("#twofa-start")
    expect(page.locator("#totp-qr")).to_be_visible(timeout=TIMEOUT_MS)
    secret = page.locator("#totp-secret").inner_text().strip()
    assert len(secret) == 32
    page.fill("#twofa-code", code_at(secret))
    page.click("#twofa-confirm button[type=submit]")
    codes = page.locator("#recovery-codes li")
    expect(codes).to_have_count(10, timeout=TIMEOUT_MS)
    expect(page.locator("#twofa-card")).to_contain_text("Two-factor login is on")
    page.click("#logout-btn")
    expect(page.locator("#login-view")).to_be_visible(timeout=TIMEOUT_MS)

    password_step(page, server, agent["username"], agent["password"])
    expect(page.locator("#login-2fa")).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.locator("#app-view")).to_be_hidden()
    page.fill("#login-code", "000000")
    page.click("#login-2fa button[type=submit]")
    expect(page.locator("#login-2fa-error")).to_contain_text("wrong", timeout=TIMEOUT_MS)
    page.fill("#login-code", code_at(secret, 1))
    page.click("#login-2fa button[type=submit]")
    expect_logged_in(page, "Tess Totp")
    context.close()


def _enroll_through_the_api(server: Server, agent: dict[str, str]) -> list[str]:
    api = Api(server.base_url)
    api.login(agent["username"], agent["password"])
    secret = api.call("POST", "/me/2fa/enroll", {})["secret"]
    codes: list[str] = api.call("POST", "/me/2fa/confirm", {"code": code_at(secret)})[
        "recovery_codes"
    ]
    return codes


def test_recovery_code_logs_in_from_the_console_once(server: Server, browser: Any) -> None:
    agent = make_agent(server, name="Rex Recovery")
    codes = _enroll_through_the_api(server, agent)
    context = browser.new_context()
    page = context.new_page()
    password_step(page, server, agent["username"], agent["password"])
    page.fill("#login-code", codes[0])
    page.click("#login-2fa button[type=submit]")
    expect_logged_in(page, "Rex Recovery")
    page.goto(server.base_url + "/console#/security")
    expect(page.locator("#recovery-left")).to_have_text("9 recovery codes left.")
    page.click("#logout-btn")
    expect(page.locator("#login-view")).to_be_visible(timeout=TIMEOUT_MS)
    password_step(page, server, agent["username"], agent["password"])
    page.fill("#login-code", codes[0])
    page.click("#login-2fa button[type=submit]")
    expect(page.locator("#login-2fa-error")).to_contain_text("already used", timeout=TIMEOUT_MS)
    context.close()


def test_workspace_policy_makes_an_agent_enroll_before_the_console_opens(
    server: Server, browser: Any
) -> None:
    agent = make_agent(server, name="Pat Policy")
    owner = server.api()
    owner.call("PUT", "/settings/security", {"require_2fa": "all"})
    try:
        context = browser.new_context()
        page = context.new_page()
        password_step(page, server, agent["username"], agent["password"])
        expect(page.locator("#totp-secret")).to_be_visible(timeout=TIMEOUT_MS)
        secret = page.locator("#totp-secret").inner_text().strip()
        page.fill("#login-code", code_at(secret))
        page.click("#login-2fa button[type=submit]")
        expect(page.locator("#recovery-codes li")).to_have_count(10, timeout=TIMEOUT_MS)
        page.click("#recovery-continue")
        expect_logged_in(page, "Pat Policy")
        context.close()
    finally:
        owner.call("PUT", "/settings/security", {"require_2fa": "none"})


@pytest.fixture
def provider() -> Iterator[TestProvider]:
    with running_provider() as p:
        yield p


def test_sso_login_from_the_console_creates_an_agent_with_the_mapped_role(
    server: Server, browser: Any, provider: TestProvider
) -> None:
    owner = server.api()
    provider.user = {
        "sub": "browser-user-7",
        "preferred_username": "sasha",
        "name": "Sasha Sso",
        "email": "sasha@example.test",
        "roles": ["support-leads"],
    }
    owner.call(
        "PUT",
        "/settings/sso",
        {
            "slug": "demo-sso",
            "issuer": provider.issuer,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "role_claim": "roles",
            "role_map": {"support-leads": "supervisor"},
            "default_role": None,
        },
    )
    try:
        context = browser.new_context()
        page = context.new_page()
        page.goto(server.base_url + "/console")
        page.fill("#sso-slug", "demo-sso")
        page.click("#sso-button")
        expect_logged_in(page, "Sasha Sso · supervisor")
        expect(page.locator("#all-section")).to_be_visible()  # supervisors see every chat
        agents = owner.call("GET", "/agents")["agents"]
        made = [a for a in agents if a["display_name"] == "Sasha Sso"]
        assert len(made) == 1 and made[0]["role"] == "supervisor"
        assert made[0]["username"] == "demo-sso.sasha"
        # A user the mapping does not cover is sent back with a readable error.
        page.click("#logout-btn")
        expect(page.locator("#login-view")).to_be_visible(timeout=TIMEOUT_MS)
        provider.user = {"sub": "browser-user-8", "name": "Nobody", "roles": ["marketing"]}
        page.fill("#sso-slug", "demo-sso")
        page.click("#sso-button")
        expect(page.locator("#login-error")).to_contain_text("no role", timeout=TIMEOUT_MS)
        assert "sso_error" not in page.url
        context.close()
    finally:
        owner.call("DELETE", "/settings/sso")


def test_admin_resets_an_agents_two_factor_from_the_console(server: Server, browser: Any) -> None:
    agent = make_agent(server, name="Lou Lostphone")
    _enroll_through_the_api(server, agent)
    context = browser.new_context(viewport={"width": 1400, "height": 950})
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    console_login(page, server, server.owner_username, server.owner_password)
    page.goto(server.base_url + "/console#/admin/security")
    reset = page.get_by_role("button", name="Reset 2FA of " + agent["username"])
    expect(reset).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.locator("#sso-form")).to_be_visible()
    reset.click()
    expect(reset).to_be_hidden(timeout=TIMEOUT_MS)
    row = page.locator("#twofa-agents tr", has_text=agent["username"])
    expect(row).to_contain_text("off")
    audit = server.api().call("GET", "/audit")["entries"]
    assert any(
        e["action"] == "agent.2fa_reset" and e["target"] == f"agent:{agent['id']}" for e in audit
    )
    # The password alone logs the agent in again.
    page2 = context.new_page()
    page2.context.clear_cookies()
    console_login(page2, server, agent["username"], agent["password"])
    context.close()
