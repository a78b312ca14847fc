"""Outgoing mail end to end: a real server, a real SMTP server (aiosmtpd) started by the test,
and what arrives there. Offline messages and missed chats reach the notification address; the
outbox survives a restart while SMTP is down; resets, invitations, inbox replies and
transcripts arrive; without SMTP nothing is promised."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import trio

from storage import InboxStatus
from tests.web.client import Http, bearer, open_peer, visitor
from tests.web.server import TestServer, free_port, run_test_server
from tests.web.smtpd import PASSWORD, MailSink, Received, smtp_server
from web.errors import ConfigError
from web.settings import load_settings

NOTIFY = "team@acme.test"
FAST = {"mail_poll_interval_s": 0.2, "mail_retry_base_s": 0.2, "mail_retry_max_s": 1.0}


def _mailer(srv: TestServer) -> Any:
    assert srv.services is not None
    return srv.services.mailer


async def _set_notifications(srv: TestServer, email: str | None = NOTIFY) -> Http:
    owner = bearer(srv.base_url, srv.acme.owner.token)
    resp = await owner.request("PUT", "/api/v1/settings/notifications", {"email": email})
    assert resp.status == 200, resp.body
    return owner


async def _offline(srv: TestServer, **fields: Any) -> dict[str, Any]:
    body = {"email": "dana@example.com", "text": "Please call me back", "client_msg_id": "off-1"}
    body.update(fields)
    url = srv.visitor_ws_url(srv.acme.widget_key)
    async with open_peer(url, origin=srv.acme.site_origin) as peer:
        hello = await visitor(srv, peer)
        reply = await peer.request("offline_message", name="Dana", **body)
    assert reply["type"] == "result", reply
    return {"hello": hello, **reply["result"]}


async def _no_more_mail(srv: TestServer, sink: MailSink, count: int) -> None:
    """Two whole mailer rounds after the last delivery: nothing else was sent."""
    await _mailer(srv).next_round()
    assert len(sink.messages) == count, [m.subject for m in sink.messages]


@pytest.mark.parametrize("mode", ["plain", "starttls", "tls"])
async def test_offline_message_is_mailed_once_to_the_notification_address(
    tmp_path: Path, mode: str
) -> None:
    with smtp_server(tmp_path, mode) as smtp:
        settings = {**smtp.settings(auth=mode != "plain"), **FAST}
        async with run_test_server(tmp_path, **settings) as srv:
            owner = await _set_notifications(srv)
            sent = await _offline(srv)
            # the widget retries (lost ack): the same message, noticed once
            url = srv.visitor_ws_url(srv.acme.widget_key)
            async with open_peer(url, origin=srv.acme.site_origin) as peer:
                await visitor(srv, peer, token=sent["hello"]["visitor_token"])
                again = await peer.request(
                    "offline_message",
                    email="dana@example.com",
                    text="Please call me back",
                    client_msg_id="off-1",
                )
            assert again["result"]["duplicate"] is True
            [mail] = await smtp.sink.wait(1)
            await _no_more_mail(srv, smtp.sink, 1)
            assert mail.rcpt_tos == (NOTIFY,)
            assert mail.authenticated_as == ("mailer" if mode != "plain" else None)
            assert mail.subject == "[Acme] Offline message from Dana <dana@example.com>"
            assert "Please call me back" in mail.part("plain")
            assert f"/console/#inbox/{sent['conversation_id']}" in mail.part("plain")
            html = mail.part("html")
            assert "Acme" in html and "#2f6fed" in html and "Please call me back" in html
            assert "Acme" in str(mail.message["From"])
            log = (await owner.get("/api/v1/mail/log")).json()
            [entry] = log["entries"]
            assert (entry["status"], entry["attempts"], entry["kind"]) == (
                "sent",
                1,
                "offline_message",
            )
            inbox = (await owner.get("/api/v1/inbox")).json()
            assert [i["conversation_id"] for i in inbox["items"]] == [sent["conversation_id"]]
            assert inbox["open_count"] == 1
            assert inbox["items"][0]["preview"] == "Please call me back"


async def test_mail_queued_while_smtp_is_down_arrives_once_after_a_restart(
    tmp_path: Path,
) -> None:
    port = free_port()  # nothing listens here yet: SMTP is down
    settings = {
        "smtp_url": f"smtp://127.0.0.1:{port}",
        "mail_from": "support@livechat.test",
        **FAST,
    }
    async with run_test_server(tmp_path, **settings) as srv:
        owner = await _set_notifications(srv)
        await _offline(srv)
        with trio.fail_after(20):
            while True:
                entries = (await owner.get("/api/v1/mail/log")).json()["entries"]
                if entries and entries[0]["attempts"] >= 2:
                    break
                await _mailer(srv).next_round()
        [entry] = entries
        assert entry["status"] == "queued"
        assert entry["last_error"] == "ConnectionRefusedError"
        seeded = (srv.acme, srv.globex)

    sink = MailSink()
    with smtp_server(tmp_path, "plain", port=port, sink=sink):
        async with run_test_server(tmp_path, seeded=seeded, **settings) as srv:
            [mail] = await sink.wait(1)
            assert "Please call me back" in mail.part("plain")
            await _no_more_mail(srv, sink, 1)
            owner = bearer(srv.base_url, srv.acme.owner.token)
            [entry] = (await owner.get("/api/v1/mail/log")).json()["entries"]
            assert entry["status"] == "sent" and entry["last_error"] is None


async def test_a_permanent_refusal_fails_at_once_and_the_log_says_why(tmp_path: Path) -> None:
    with smtp_server(tmp_path, "starttls") as smtp:
        smtp.sink.refuse_with = "554 5.7.1 rejected"
        async with run_test_server(tmp_path, **smtp.settings(auth=True), **FAST) as srv:
            owner = await _set_notifications(srv)
            await _offline(srv)
            with trio.fail_after(20):
                while True:
                    log = (await owner.get("/api/v1/mail/log?status=failed")).json()
                    if log["entries"]:
                        break
                    await _mailer(srv).next_round()
            [entry] = log["entries"]
            assert (entry["attempts"], entry["last_error"]) == (1, "SMTPDataError 554")
            assert PASSWORD not in (await owner.get("/api/v1/mail/log")).body.decode()


async def test_a_chat_nobody_answered_sends_a_missed_chat_notice(tmp_path: Path) -> None:
    with smtp_server(tmp_path) as smtp:
        async with run_test_server(tmp_path, **smtp.settings(), **FAST) as srv:
            owner = await _set_notifications(srv)
            routing = await owner.request(
                "PUT", "/api/v1/settings/routing", {"abandon_queued_after_s": 0.5}
            )
            assert routing.status == 200, routing.body
            url = srv.visitor_ws_url(srv.acme.widget_key)
            async with open_peer(url, origin=srv.acme.site_origin) as peer:
                await visitor(srv, peer)
                await peer.request("update_profile", name="Eve", email="eve@example.com")
                sent = await peer.request("send_message", text="Anyone there?", client_msg_id="m1")
                assert sent["type"] == "result", sent
                # nobody accepts chats: the router closes it as missed after 0.5 s
                [mail] = await smtp.sink.wait(1)
            assert mail.subject == "[Acme] Missed chat with Eve <eve@example.com>"
            assert "Anyone there?" in mail.part("plain")
            inbox = (await owner.get("/api/v1/inbox")).json()
            assert [(i["kind"], i["preview"]) for i in inbox["items"]] == [
                ("missed", "Anyone there?")
            ]
            # with missed_chats off, the next one is in the inbox but not mailed
            await owner.request(
                "PUT", "/api/v1/settings/notifications", {"email": NOTIFY, "missed_chats": False}
            )
            async with open_peer(url, origin=srv.acme.site_origin) as peer:
                await visitor(srv, peer)
                await peer.request("send_message", text="Hello again?", client_msg_id="m2")
                with trio.fail_after(20):
                    while (await owner.get("/api/v1/inbox/count")).json()["open"] < 2:
                        await _mailer(srv).next_round()
            await _no_more_mail(srv, smtp.sink, 1)


def _link_token(mail: Received, fragment: str) -> str:
    found = re.search(rf"#{fragment}=([A-Za-z0-9_-]+)", mail.part("plain"))
    assert found, mail.part("plain")
    return found.group(1)


async def test_forgot_password_mails_a_single_use_link(tmp_path: Path) -> None:
    with smtp_server(tmp_path) as smtp:
        async with run_test_server(tmp_path, **smtp.settings(), **FAST) as srv:
            assert srv.services is not None
            alice = srv.acme.agents[0]
            await srv.services.storage.update_agent(
                srv.acme.id, alice.id, email="alice@acme.test"
            )
            anon = Http(srv.base_url)
            # Unknown accounts get the same answer, and no mail.
            unknown = await anon.post("/api/v1/auth/forgot-password", {"username": "nobody"})
            assert unknown.status == 202
            asked = await anon.post("/api/v1/auth/forgot-password", {"username": "ALICE"})
            assert (asked.status, asked.body) == (unknown.status, unknown.body)
            # by email too; the same window's mail is not sent twice
            again = await anon.post(
                "/api/v1/auth/forgot-password", {"username": "alice@acme.test"}
            )
            assert again.status == 202
            [mail] = await smtp.sink.wait(1)
            await _no_more_mail(srv, smtp.sink, 1)
            assert mail.rcpt_tos == ("alice@acme.test",)
            token = _link_token(mail, "password-reset")
            new = "a brand new password"
            done = await anon.post(
                "/api/v1/auth/reset-password", {"token": token, "new_password": new}
            )
            assert done.status == 200, done.body
            assert (await Http(srv.base_url).login("alice", alice.password)).status == 401
            assert (await Http(srv.base_url).login("alice", new)).status == 200
            reused = await anon.post(
                "/api/v1/auth/reset-password", {"token": token, "new_password": "another one!"}
            )
            assert (reused.status, reused.error_code) == (400, "invalid_token")
            audit = (
                await bearer(srv.base_url, srv.acme.owner.token).get("/api/v1/audit?limit=50")
            ).json()
            actions = [e["action"] for e in audit["entries"]]
            assert "password.reset" in actions
            assert actions.count("password.reset_requested") == 2
            assert token not in str(audit)


async def test_a_new_agent_is_invited_by_mail_and_chooses_a_password(tmp_path: Path) -> None:
    with smtp_server(tmp_path, "tls") as smtp:
        async with run_test_server(tmp_path, **smtp.settings(auth=True), **FAST) as srv:
            owner = bearer(srv.base_url, srv.acme.owner.token)
            created = await owner.post(
                "/api/v1/agents",
                {"username": "carol", "display_name": "Carol", "email": "carol@acme.test"},
            )
            assert created.status == 201, created.body
            assert created.json()["invited"] is True
            [mail] = await smtp.sink.wait(1)
            assert mail.subject == "You are invited to Acme's live chat"
            token = _link_token(mail, "invitation")
            anon = Http(srv.base_url)
            chosen = "carol's own password"
            resp = await anon.post(
                "/api/v1/auth/reset-password", {"token": token, "new_password": chosen}
            )
            assert resp.status == 200, resp.body
            assert (await Http(srv.base_url).login("carol", chosen)).status == 200


async def test_inbox_assign_reply_by_email_and_done(tmp_path: Path) -> None:
    with smtp_server(tmp_path) as smtp:
        async with run_test_server(tmp_path, **smtp.settings(), **FAST) as srv:
            sent = await _offline(srv)
            conv_id = sent["conversation_id"]
            alice = Http(srv.base_url)
            assert (await alice.login("alice", srv.acme.agents[0].password)).status == 200
            with trio.fail_after(20):
                while (await alice.get("/api/v1/inbox/count")).json()["open"] == 0:
                    await _mailer(srv).next_round()
            assigned = await alice.post(
                f"/api/v1/inbox/{conv_id}/assign", {"agent_id": srv.acme.agents[0].id}
            )
            assert assigned.json()["assignee_id"] == srv.acme.agents[0].id
            await _set_notifications(srv)  # after the scan: no notice, but the Reply-To
            replied = await alice.post(
                f"/api/v1/inbox/{conv_id}/reply", {"text": "We will call you at 3 pm."}
            )
            assert replied.status == 200, replied.body
            assert replied.json()["replies"] == 1
            [mail] = await smtp.sink.wait(1)  # no notice: no notification address at the scan
            assert mail.rcpt_tos == ("dana@example.com",)
            assert mail.message["Reply-To"] == NOTIFY
            assert mail.subject == "Re: your message to Acme"
            assert "We will call you at 3 pm." in mail.part("plain")
            assert "Please call me back" in mail.part("plain")
            done = await alice.post(f"/api/v1/inbox/{conv_id}/done")
            assert done.json()["status"] == "done"
            assert (await alice.get("/api/v1/inbox/count")).json() == {"open": 0}
            # another workspace cannot see or touch it
            gina = bearer(srv.base_url, srv.globex.owner.token)
            assert (await gina.post(f"/api/v1/inbox/{conv_id}/done")).status == 404


async def test_a_visitor_gets_the_transcript_by_email(tmp_path: Path) -> None:
    with smtp_server(tmp_path) as smtp:
        async with run_test_server(tmp_path, **smtp.settings(), **FAST) as srv:
            sent = await _offline(srv, text="My order 1234 is late")
            token = sent["hello"]["visitor_token"]
            anon = Http(srv.base_url)
            body = {
                "key": srv.acme.widget_key,
                "visitor_token": token,
                "conversation_id": sent["conversation_id"],
                "email": "dana@example.com",
            }
            resp = await anon.post("/api/v1/widget/transcript", body)
            assert resp.status == 202, resp.body
            [mail] = await smtp.sink.wait(1)
            assert mail.subject == "Your chat with Acme"
            assert "My order 1234 is late" in mail.part("plain")
            wrong = await anon.post("/api/v1/widget/transcript", {**body, "visitor_token": "x"})
            assert (wrong.status, wrong.error_code) == (404, "not_found")


async def test_without_smtp_nothing_is_promised_and_the_inbox_still_fills(
    tmp_path: Path,
) -> None:
    async with run_test_server(tmp_path, **FAST) as srv:
        anon = Http(srv.base_url)
        config = (await anon.get(f"/api/v1/widget/config?key={srv.acme.widget_key}")).json()
        assert config["mail_enabled"] is False
        assert "email" not in config["offline_message"]
        owner = await _set_notifications(srv)
        notify = (await owner.get("/api/v1/settings/notifications")).json()
        assert notify == {"email": NOTIFY, "missed_chats": True, "mail_enabled": False}
        sent = await _offline(srv)
        with trio.fail_after(20):
            while (await owner.get("/api/v1/inbox/count")).json()["open"] == 0:
                await _mailer(srv).next_round()
        reply = await owner.post(
            f"/api/v1/inbox/{sent['conversation_id']}/reply", {"text": "hello"}
        )
        assert (reply.status, reply.error_code) == (409, "mail_disabled")
        assert (await owner.get("/api/v1/mail/log")).json() == {
            "mail_enabled": False,
            "entries": [],
        }
        assert srv.services is not None
        items = await srv.services.storage.list_inbox(srv.acme.id, status=InboxStatus.OPEN)
        assert len(items) == 1


async def test_with_smtp_the_widget_promises_email(tmp_path: Path) -> None:
    with smtp_server(tmp_path) as smtp:
        async with run_test_server(tmp_path, **smtp.settings()) as srv:
            anon = Http(srv.base_url)
            config = (await anon.get(f"/api/v1/widget/config?key={srv.acme.widget_key}")).json()
            assert config["mail_enabled"] is True
            assert "email" in config["offline_message"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"smtp_url": "http://mail.test"}, "smtp_url"),
        ({"smtp_url": "smtp://u:hunter2hunter2@mail.test:25"}, "mail.from_address"),
        ({"smtp_url": "smtps://mail.test", "mail_from": "x@y.z", "smtp_ca_file": "/nope"}, "ca"),
    ],
)
def test_mail_settings_are_checked_at_start_up(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(values, environ={})
    assert message in str(err.value)
    assert "hunter2" not in str(err.value)


async def test_bad_notification_address_is_refused(srv: TestServer) -> None:
    owner = bearer(srv.base_url, srv.acme.owner.token)
    resp = await owner.request("PUT", "/api/v1/settings/notifications", {"email": "not-mail"})
    assert (resp.status, resp.error_code) == (400, "invalid_value")
    agent = Http(srv.base_url)
    assert (await agent.login("alice", srv.acme.agents[0].password)).status == 200
    resp = await agent.request("PUT", "/api/v1/settings/notifications", {"email": None})
    assert resp.status == 403


@pytest.mark.parametrize(
    ("mode", "url_scheme", "trust", "error"),
    [
        # a server that does not offer STARTTLS: no silent fallback to plain text
        ("plain", "smtp+starttls", True, "SMTPNotSupportedError"),
        # a certificate from a CA we were not told to trust
        ("tls", "smtps", False, "SSLCertVerificationError"),
    ],
)
async def test_mail_is_never_sent_over_a_downgraded_or_untrusted_connection(
    tmp_path: Path, mode: str, url_scheme: str, trust: bool, error: str
) -> None:
    with smtp_server(tmp_path, mode) as smtp:
        settings = {
            **smtp.settings(),
            "smtp_url": f"{url_scheme}://127.0.0.1:{smtp.port}",
            **FAST,
        }
        if not trust:
            settings.pop("smtp_ca_file")
        async with run_test_server(tmp_path, **settings) as srv:
            owner = await _set_notifications(srv)
            await _offline(srv)
            with trio.fail_after(20):
                while True:
                    entries = (await owner.get("/api/v1/mail/log")).json()["entries"]
                    if entries and entries[0]["attempts"] >= 1 and entries[0]["last_error"]:
                        break
                    await _mailer(srv).next_round()
            assert entries[0]["last_error"].startswith(error), entries[0]
            assert entries[0]["status"] == "queued"  # retried later, with backoff
            assert smtp.sink.messages == []
