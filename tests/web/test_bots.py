"""Bots end to end: the example bot (examples/echo_bot.py) takes a queued chat before a human,
answers, and hands the chat over to a human who sees the whole history; the visitor sees one
continuous conversation."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import trio

from examples.echo_bot import GREETING, run_bot
from tests.web.client import Http, Peer, bearer, open_peer, visitor
from tests.web.server import TestServer, run_test_server

WAIT_S = 15.0


async def make_bot(srv: TestServer, group_id: str) -> tuple[dict[str, Any], str]:
    """A bot account in ``group_id`` and its agent-scope API token."""
    owner = bearer(srv.base_url, srv.acme.owner.token)
    created = await owner.post(
        "/api/v1/agents",
        {
            "username": "echobot",
            "display_name": "EchoBot",
            "role": "bot",
            "group_ids": [group_id],
            "max_chats": 20,
        },
    )
    assert created.status == 201, created.body
    assert created.json()["password"] is None  # a bot never logs in
    bot = created.json()["agent"]
    token = await owner.post(
        "/api/v1/tokens", {"name": "echo bot", "scopes": ["agent"], "agent_id": bot["id"]}
    )
    assert token.status == 201, token.body
    return bot, token.json()["token"]


async def visitor_message(vis: Peer, text: str, client_msg_id: str) -> dict[str, Any]:
    sent = await vis.request("send_message", client_msg_id=client_msg_id, text=text)
    assert sent["type"] == "result", sent
    return dict(sent["result"])


async def visitor_sees(vis: Peer, conversation_id: str, body: str) -> dict[str, Any]:
    """Wait for the message ``body`` in the visitor's conversation; return the event."""
    with trio.fail_after(WAIT_S):
        while True:
            push = await vis.push("event")
            event = push["event"]
            assert event["conversation_id"] == conversation_id  # one conversation throughout
            if event["kind"] == "message" and event["body"] == body:
                return dict(event)


async def test_bot_takes_a_chat_first_and_hands_it_to_a_human_who_sees_everything(
    tmp_path: Path,
) -> None:
    async with run_test_server(tmp_path) as srv:
        owner = bearer(srv.base_url, srv.acme.owner.token)
        group = await owner.post("/api/v1/groups", {"name": "Support"})
        assert group.status == 201, group.body
        group_id = group.json()["id"]
        alice = srv.acme.agents[0]
        moved = await owner.request(
            "PATCH", f"/api/v1/agents/{alice.id}", {"group_ids": [group_id]}
        )
        assert moved.status == 200, moved.body
        bot, bot_token = await make_bot(srv, group_id)

        http = Http(srv.base_url)
        assert (await http.login(alice.username, alice.password)).status == 200
        async with (
            open_peer(srv.agent_ws_url, cookie=http.cookie) as human,
            trio.open_nursery() as nursery,
        ):
            auth = await human.request("auth", token=None)
            assert auth["type"] == "result", auth
            assert (await human.request("set_status", status="accepting"))["type"] == "result"
            me = await nursery.start(
                partial(run_bot, srv.agent_ws_url, bot_token, handover_group_id=group_id)
            )
            assert me["role"] == "bot" and me["agent_id"] == bot["id"]

            async with open_peer(
                srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin
            ) as vis:
                await visitor(srv, vis)
                ack = await visitor_message(vis, "Hello there", "v-1")
                conv_id = ack["conversation_id"]
                # The bot, not the human who is also free, takes the chat and answers.
                greeting = await visitor_sees(vis, conv_id, GREETING)
                assert greeting["author_id"] == bot["id"]
                await visitor_sees(vis, conv_id, "You said: Hello there")

                await visitor_message(vis, "I want a human please", "v-2")
                await visitor_sees(vis, conv_id, "Let me get you a colleague, one moment.")
                assigned = await human.push("chat_assigned", timeout=WAIT_S)
                assert assigned["conversation"]["conversation_id"] == conv_id
                assert assigned["conversation"]["assignee_id"] == alice.id

                # The human sees the whole conversation, the bot's part and the handover too.
                history = await human.request("get_history", conversation_id=conv_id, limit=50)
                assert history["type"] == "result", history
                events = history["result"]["events"]
                said = [(e["author_type"], e["body"]) for e in events if e["kind"] == "message"]
                assert said == [
                    ("visitor", "Hello there"),
                    ("agent", GREETING),
                    ("agent", "You said: Hello there"),
                    ("visitor", "I want a human please"),
                    ("agent", "Let me get you a colleague, one moment."),
                ]
                transfer = next(e for e in events if e["kind"] == "transferred")
                assert transfer["data"]["reason"] == "the visitor asked for a human"
                assert transfer["data"]["from_agent_id"] == bot["id"]

                # The human answers in the same conversation; the bot stays quiet.
                reply = await human.request(
                    "send_message", conversation_id=conv_id, client_msg_id="h-1", text="Hi, Alice"
                )
                assert reply["type"] == "result", reply
                event = await visitor_sees(vis, conv_id, "Hi, Alice")
                assert event["author_id"] == alice.id
                await visitor_message(vis, "Thanks Alice", "v-3")
                await visitor_sees(vis, conv_id, "Thanks Alice")
                final = await human.request("get_history", conversation_id=conv_id, limit=50)
                bodies = [e["body"] for e in final["result"]["events"] if e["kind"] == "message"]
                assert bodies[-2:] == ["Hi, Alice", "Thanks Alice"]  # no echo after handover
            nursery.cancel_scope.cancel()


async def test_a_bot_cannot_log_in_or_use_the_admin_api(tmp_path: Path) -> None:
    async with run_test_server(tmp_path) as srv:
        owner = bearer(srv.base_url, srv.acme.owner.token)
        group = await owner.post("/api/v1/groups", {"name": "Bots"})
        bot, token = await make_bot(srv, group.json()["id"])
        reset = await owner.post(f"/api/v1/agents/{bot['id']}/reset-password")
        if reset.status == 200:  # even with a password set, a bot never gets a session
            password = reset.json()["password"]
            login = await Http(srv.base_url).login("echobot", password)
            assert login.status == 401, login.body
        as_bot = bearer(srv.base_url, token)
        assert (await as_bot.get("/api/v1/agents")).status == 403
        with_password = await owner.post(
            "/api/v1/agents",
            {
                "username": "bot2",
                "display_name": "Bot 2",
                "role": "bot",
                "password": "a-long-password-1",
            },
        )
        assert with_password.status == 400

        # A human made a bot loses the session they had: bots speak only with tokens.
        bob = srv.acme.agents[1]
        http = Http(srv.base_url)
        assert (await http.login(bob.username, bob.password)).status == 200
        assert (await http.get("/api/v1/me")).status == 200
        demoted = await owner.request("PATCH", f"/api/v1/agents/{bob.id}", {"role": "bot"})
        assert demoted.status == 200, demoted.body
        assert (await http.get("/api/v1/me")).status == 401
