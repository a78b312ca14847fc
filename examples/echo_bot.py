"""A small chat bot for livechat: it answers new chats first and hands them to a human.

It speaks the agent protocol (docs/protocol.md) over ``/ws/v1/agent`` with a bot's API token
(docs/bots.md): it accepts chats, greets the visitor, echoes what they write, and when the
visitor asks for a human (a word from ``HANDOVER_WORDS``) it transfers the chat to a group with
a reason. Replace ``answer`` with your assistant.

Run it::

    python examples/echo_bot.py --url wss://chat.example.com/ws/v1/agent \\
        --token lct_... --handover-group GROUP_ID

Only ``trio`` and ``trio-websocket`` are needed. Every message it sends carries a
``client_msg_id`` derived from the visitor's message, so after a reconnect a repeated answer is
stored once (the server answers the original with ``duplicate: true``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
from typing import Any

import trio
from trio_websocket import WebSocketConnection, open_websocket_url

log = logging.getLogger("echo_bot")

HANDOVER_WORDS = ("human", "agent", "person")
REQUEST_TIMEOUT_S = 10.0
GREETING = "Hi, I am EchoBot. Ask me anything, or type 'human' to talk to a person."


def answer(text: str) -> str | None:
    """The bot's reply to a visitor's message, or None to hand the chat to a human."""
    if any(word in text.lower() for word in HANDOVER_WORDS):
        return None
    return f"You said: {text}"


class BotClient:
    """Requests with ids (their results come back on ``results``), pushes on ``pushes``."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self._waiting: dict[str, trio.MemorySendChannel[dict[str, Any]]] = {}
        self.pushes_send, self.pushes = trio.open_memory_channel[dict[str, Any]](256)

    async def read(self) -> None:
        """Route every frame: results to their request, pings answered, pushes queued."""
        async with self.pushes_send:
            while True:
                frame: dict[str, Any] = json.loads(await self.ws.get_message())
                kind = frame.get("type")
                if kind == "ping":
                    await self.ws.send_message(json.dumps({"type": "pong"}))
                elif kind in ("result", "error") and str(frame.get("id")) in self._waiting:
                    self._waiting.pop(str(frame["id"])).send_nowait(frame)
                else:
                    await self.pushes_send.send(frame)

    async def request(self, kind: str, **fields: Any) -> dict[str, Any]:
        rid = str(next(self._ids))
        send, receive = trio.open_memory_channel[dict[str, Any]](1)
        self._waiting[rid] = send
        await self.ws.send_message(json.dumps({"type": kind, "id": rid, **fields}))
        with trio.fail_after(REQUEST_TIMEOUT_S):
            frame = await receive.receive()
        if frame["type"] == "error":
            raise RuntimeError(f"{kind} failed: {frame.get('code')}: {frame.get('message')}")
        return dict(frame["result"])


async def run_bot(
    url: str,
    token: str,
    *,
    handover_group_id: str,
    task_status: trio.TaskStatus[dict[str, Any]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve chats until cancelled; ``task_status.started`` gets the ``auth`` result."""
    async with open_websocket_url(url) as ws, trio.open_nursery() as nursery:
        client = BotClient(ws)
        nursery.start_soon(client.read)
        me = await client.request("auth", token=token, resume={})
        await client.request("set_status", status="accepting")
        task_status.started(me)
        mine: set[str] = set()
        async for push in client.pushes:
            kind = push.get("type")
            if kind == "chat_assigned":
                conversation_id = push["conversation"]["conversation_id"]
                mine.add(conversation_id)
                await _greet(client, conversation_id, handover_group_id, me["agent_id"])
            elif kind == "chat_unassigned":
                mine.discard(push["conversation_id"])
            elif kind == "event":
                event = push["event"]
                if (
                    event["conversation_id"] in mine
                    and event["kind"] == "message"
                    and event["author_type"] == "visitor"
                ):
                    handed = await _reply(client, event, handover_group_id)
                    if handed:
                        mine.discard(event["conversation_id"])


async def _greet(client: BotClient, conversation_id: str, group_id: str, my_id: str) -> None:
    """Greet, then answer the visitor's messages sent before we got the chat."""
    history = await client.request("get_history", conversation_id=conversation_id, limit=50)
    await client.request(
        "send_message",
        conversation_id=conversation_id,
        client_msg_id=f"greet-{conversation_id}",
        text=GREETING,
    )
    for event in history.get("events", []):
        visitor_said = event["kind"] == "message" and event["author_type"] == "visitor"
        if visitor_said and await _reply(client, event, group_id):
            return


async def _reply(client: BotClient, event: dict[str, Any], group_id: str) -> bool:
    """Answer one visitor message; True when the chat was handed over."""
    conversation_id = event["conversation_id"]
    text = answer(event["body"] or "")
    if text is None:
        await client.request(
            "send_message",
            conversation_id=conversation_id,
            client_msg_id=f"handover-{conversation_id}-{event['seq']}",
            text="Let me get you a colleague, one moment.",
        )
        await client.request(
            "transfer",
            conversation_id=conversation_id,
            to_group_id=group_id,
            reason="the visitor asked for a human",
        )
        return True
    await client.request(
        "send_message",
        conversation_id=conversation_id,
        client_msg_id=f"echo-{conversation_id}-{event['seq']}",
        text=text,
    )
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the agent WebSocket URL (/ws/v1/agent)")
    parser.add_argument("--token", required=True, help="the bot's API token (scope agent)")
    parser.add_argument("--handover-group", required=True, help="group id for the handover")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    trio.run(lambda: run_bot(args.url, args.token, handover_group_id=args.handover_group))


if __name__ == "__main__":
    main()
