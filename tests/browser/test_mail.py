"""Mail in the browser: the offline form promises email only when the server sends it; an
offline message reaches the notification address and the console's inbox, and a reply typed
there arrives at the visitor's address; "forgot password" mails a link that sets a password.
A real SMTP server (aiosmtpd, tests/web/smtpd.py) receives the mail."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Server, make_agent
from tests.browser.helpers import (
    TIMEOUT_MS,
    agent_console,
    agent_send,
    console_login,
    open_widget,
    visitor_send,
)
from tests.web.smtpd import SmtpServer, smtp_server

NOTIFY = "team@demo.test"


@pytest.fixture(scope="module")
def mail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, SmtpServer]]:
    """A second server whose settings deliver to an SMTP server of ours (STARTTLS + AUTH)."""
    tmp = tmp_path_factory.mktemp("mail-server")
    with smtp_server(tmp, "starttls") as smtp:
        env = {f"LIVECHAT_{k.upper()}": str(v) for k, v in smtp.settings(auth=True).items()}
        env["LIVECHAT_MAIL_POLL_INTERVAL_S"] = "0.2"
        srv = Server(tmp, env=env)
        srv.start()
        try:
            srv.api().call("PUT", "/settings/notifications", {"email": NOTIFY})
            yield srv, smtp
        finally:
            srv.stop()


def _leave_offline_message(browser: Any, server: Server, text: str) -> Any:
    context = browser.new_context()
    page = context.new_page()
    widget = open_widget(page, server)
    form = widget.locator("#lc-offline")
    expect(form).to_be_visible(timeout=TIMEOUT_MS)
    title = widget.locator("#lc-offline-title").inner_text()
    widget.locator("#lc-off-name").fill("Olga Offline")
    widget.locator("#lc-off-email").fill("olga@example.com")
    widget.locator("#lc-off-msg").fill(text)
    form.locator("button[type=submit]").click()
    done = widget.locator("#lc-off-done")
    expect(done).to_be_visible(timeout=TIMEOUT_MS)
    return context, title, done.inner_text()


def test_without_smtp_the_offline_form_promises_no_email(server: Server, browser: Any) -> None:
    context, title, done = _leave_offline_message(browser, server, "No mail server here")
    assert "email" not in title.lower(), title
    assert "email" not in done.lower(), done
    context.close()


def test_offline_message_reaches_mail_and_inbox_and_the_reply_is_mailed(
    mail: tuple[Server, SmtpServer], browser: Any
) -> None:
    server, smtp = mail
    context, title, done = _leave_offline_message(browser, server, "Please call me tomorrow")
    assert "email" in title.lower(), title
    assert "by email" in done, done
    context.close()
    [notice] = smtp.sink.wait_sync(1)
    assert notice.rcpt_tos == (NOTIFY,)
    assert "Please call me tomorrow" in notice.part("plain")

    agent = make_agent(server, name="Inbox Agent")
    console = browser.new_context(viewport={"width": 1400, "height": 900})
    page = console.new_page()
    console_login(page, server, agent["username"], agent["password"])
    expect(page.locator("#inbox-count")).to_have_text("1", timeout=TIMEOUT_MS)
    page.click("a[data-view=inbox]")
    item = page.locator("#inbox-list li[data-conversation]")
    expect(item).to_have_count(1, timeout=TIMEOUT_MS)
    expect(item).to_contain_text("Please call me tomorrow")
    item.locator("button").click()
    page.fill("#inbox-reply-text", "We will call you at 10.")
    page.click("#inbox-reply button[type=submit]")
    replies = smtp.sink.wait_sync(2)
    reply = replies[1]
    assert reply.rcpt_tos == ("olga@example.com",)
    assert "We will call you at 10." in reply.part("plain")
    page.click("#inbox-done")
    expect(page.locator("#inbox-count")).to_have_text("", timeout=TIMEOUT_MS)
    console.close()


def test_forgot_password_mails_a_link_that_sets_the_password(
    mail: tuple[Server, SmtpServer], browser: Any
) -> None:
    server, smtp = mail
    agent = make_agent(server, name="Forgetful Agent")
    server.api().call("PATCH", f"/agents/{agent['id']}", {"email": "forgetful@demo.test"})
    before = len(smtp.sink.messages)
    context = browser.new_context()
    page = context.new_page()
    page.goto(server.base_url + "/console")
    page.click("#forgot-link")
    page.fill("#forgot-username", agent["username"])
    page.click("#forgot-form button[type=submit]")
    expect(page.locator("#forgot-done")).to_be_visible(timeout=TIMEOUT_MS)
    mails = smtp.sink.wait_sync(before + 1)
    reset = mails[-1]
    assert reset.rcpt_tos == ("forgetful@demo.test",)
    link = re.search(r"(http\S+#password-reset=[A-Za-z0-9_-]+)", reset.part("plain"))
    assert link, reset.part("plain")
    page.goto(link.group(1))
    expect(page.locator("#reset-form")).to_be_visible(timeout=TIMEOUT_MS)
    new = "my new console password"
    page.fill("#reset-password", new)
    page.fill("#reset-password2", new)
    page.click("#reset-form button[type=submit]")
    expect(page.locator("#login-form")).to_be_visible(timeout=TIMEOUT_MS)
    console_login(page, server, agent["username"], new)
    context.close()


def test_a_visitor_emails_themselves_the_transcript_of_a_closed_chat(
    mail: tuple[Server, SmtpServer], browser: Any
) -> None:
    server, smtp = mail
    agent = make_agent(server, name="Transcript Agent")
    with agent_console(browser, server, agent) as console:
        context = browser.new_context()
        page = context.new_page()
        widget = open_widget(page, server)
        visitor_send(widget, "Please send me this chat")
        expect(console.locator("#mine-list li")).to_have_count(1, timeout=TIMEOUT_MS)
        console.locator("#mine-list li button").first.click()
        agent_send(console, "Here is the answer you wanted.")
        expect(widget.locator("#lc-log")).to_contain_text("Here is the answer", timeout=TIMEOUT_MS)
        console.click("#act-close")
        console.click("#panel-close button[type=submit]")
        form = widget.locator("#lc-transcript")
        expect(form).to_be_visible(timeout=TIMEOUT_MS)
        before = len(smtp.sink.messages)
        widget.locator("#lc-tr-email").fill("reader@example.com")
        form.locator("button[type=submit]").click()
        expect(widget.locator("#lc-tr-done")).to_be_visible(timeout=TIMEOUT_MS)
        mails = smtp.sink.wait_sync(before + 1)
        transcript = next(m for m in mails[before:] if m.rcpt_tos == ("reader@example.com",))
        text = transcript.part("plain")
        assert "Please send me this chat" in text
        assert "Transcript Agent: Here is the answer you wanted." in text
        context.close()


def test_an_admin_sets_the_notification_address_in_the_console(
    server: Server, browser: Any
) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    console_login(page, server, server.owner_username, server.owner_password)
    page.goto(server.base_url + "/console#/admin/mail")
    form = page.locator("#mail-settings")
    expect(form).to_contain_text("no SMTP configured", timeout=TIMEOUT_MS)
    page.fill("#notify-email", "alerts@demo.test")
    page.uncheck("#notify-missed")
    form.locator("button[type=submit]").click()
    expect(page.locator(".toast")).to_contain_text("Saved", timeout=TIMEOUT_MS)
    saved = server.api().call("GET", "/settings/notifications")
    assert saved == {"email": "alerts@demo.test", "missed_chats": False, "mail_enabled": False}
    expect(page.locator("#mail-log")).to_be_visible()
    context.close()
